//! What operators see: the admin API ([`admin`]), the metric registry ([`metrics`]) and
//! logging ([`logging`]).

pub mod admin;
pub mod logging;
pub mod metrics;
