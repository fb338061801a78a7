//! Cost model: how long engine steps and KV transfers take.
//!
//! [`hardware`] holds GPU profiles, [`transfer`] the transfer paths' costs, [`step`] the step
//! time from a batch's shape, [`shared_link`] the time of transfers through a path several
//! users share. Spec-sheet numbers ship in `models/gpus/`; `calibrate` replaces
//! them with measurements.

pub mod hardware;
pub mod shared_link;
pub mod step;
pub mod transfer;

pub use hardware::GpuProfile;
pub use step::{BatchShape, Fitted, StepModel};
pub use transfer::TransferProfile;
