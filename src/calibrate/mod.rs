//! `kvreplay calibrate`: measure the transfer paths a prediction depends on and write them into
//! a transfer profile ([`profile`]): a real Redis ([`redis`]), local disk ([`disk`]), host memory
//! ([`host`]), with least-squares fits ([`fit`]).

pub mod disk;
pub mod fit;
pub mod host;
pub mod mux;
pub mod profile;
#[cfg(feature = "redis")]
pub mod redis;
pub mod resp;
