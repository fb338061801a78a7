//! Command implementations behind the `kvreplay` binary's flags.

pub mod run;
pub mod sim_args;
