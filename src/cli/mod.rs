//! Command implementations behind the `kvreplay` binary's flags.

pub mod calibrate;
pub mod run;
pub mod sim_args;
pub mod validate;
