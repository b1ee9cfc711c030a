//! Active health checking: the [`prober`] service, one [`probe`] per backend on its own
//! slot of the interval ([`schedule`]) — over HTTP/2 and gRPC in [`probe_h2`] — feeding
//! the routing core's rise/fall state.

pub mod error;
pub mod probe;
pub mod probe_h2;
pub mod prober;
pub mod schedule;
