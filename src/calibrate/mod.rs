//! `kvreplay calibrate`: measure the transfer paths a prediction depends on and write them into
//! a transfer profile ([`profile`]): a real Redis ([`redis`]), local disk ([`disk`]), host memory
//! ([`host`]), with least-squares fits ([`fit`]); gets and lookups interleaved with puts at large
//! RTT against the connection model ([`interleave`]).

pub mod disk;
pub mod fit;
pub mod host;
#[cfg(feature = "redis")]
pub mod interleave;
pub mod mux;
pub mod profile;
#[cfg(feature = "redis")]
pub mod redis;
pub mod resp;
