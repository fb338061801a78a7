//! Command implementations behind the `kvreplay` binary's flags.

pub mod calibrate;
#[cfg(feature = "live")]
pub mod live;
pub mod plan;
#[cfg(feature = "plots")]
pub mod report;
pub mod run;
pub mod sim_args;
pub mod sweep;
pub mod validate;

/// The error of a command that needs a Cargo feature this build left out (unused when every
/// feature is on).
#[allow(dead_code)]
pub fn without(feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "this kvreplay was built without the `{feature}` feature (rebuild with `cargo build --features {feature}`)"
    )
}
