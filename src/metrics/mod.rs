//! Metrics: records per request and the aggregates derived from them after the run.

pub mod histogram;
pub mod record;
pub mod summary;
