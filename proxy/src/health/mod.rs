//! Active health checking: the [`prober`] service, one [`probe`] per backend on its own
//! slot of the interval ([`schedule`]), feeding the routing core's rise/fall state.

pub mod probe;
pub mod prober;
pub mod schedule;
