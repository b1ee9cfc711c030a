//! Meridian: a geo-distributed HTTP load balancer and reverse proxy built on Pingora.
//!
//! A request's path, module by module (see `docs/architecture.md`):
//! [`service`] (the pingora hooks) → [`client`] (who is the client) → GeoIP
//! (`meridian-geoip`) → [`route`] (steering and ranking of regions) → [`pick`] (a backend in
//! a region) → upstream. [`probe`] and [`health`] keep backend state, [`latency`] measures,
//! [`snapshot`] holds the routing state behind one `ArcSwap` in [`instance`], [`reload`]
//! swaps it, [`admin`] and [`metrics`] expose it, [`readiness`] says when to serve.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod budget;
pub mod cli;
pub mod client;
pub mod demo;
pub mod discovery;
pub mod forwarding;
pub mod health;
pub mod instance;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod pick;
pub mod probe;
pub mod proxy_protocol;
pub mod readiness;
pub mod redirect;
pub mod reload;
pub mod route;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod systemd;
pub mod tls;
pub mod upgrade;
