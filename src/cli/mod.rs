//! Command implementations behind the `kvreplay` binary's flags.

pub mod calibrate;
pub mod live;
pub mod plan;
pub mod report;
pub mod run;
pub mod sim_args;
pub mod sweep;
pub mod validate;
