//! Meridian: a geo-distributed HTTP load balancer and reverse proxy built on Pingora.
//!
//! The routing core (`meridian-routing`) knows nothing of pingora; this crate wires it to
//! pingora, in folders that follow a request and the instance around it (see
//! `docs/architecture.md`): [`edge`] (listeners, TLS, PROXY protocol) → [`request`] (the
//! `ProxyHttp` service, client address, upstream peer, retries) → the routing core;
//! [`health`] probes backends, [`control`] holds the instance and reloads it, [`observe`]
//! exposes it; [`server`] assembles the whole and [`cli`] runs it ([`ctl`] drives a running
//! one).

#![forbid(unsafe_code)]

pub mod cli;
pub(crate) mod control;
pub(crate) mod ctl;
pub(crate) mod demo;
pub(crate) mod edge;
pub(crate) mod generate;
pub(crate) mod health;
pub(crate) mod observe;
pub(crate) mod request;
pub(crate) mod server;

pub use control::instance::{Active, Instance};
pub use request::client;
pub use request::service::route;
pub use server::{build, ProcessOptions};
