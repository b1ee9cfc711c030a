//! The request path: the pingora `ProxyHttp` service hook by hook ([`service`]), whether a
//! request may go on at all ([`admission`]), who the client is ([`client`]), the
//! per-request state ([`ctx`]), the upstream peer and its protocol ([`upstream`]) and TLS
//! ([`upstream_tls`]), gRPC calls ([`grpc`]), upgraded connections ([`tunnel`]), the
//! forwarding headers ([`forwarding`]), relaying through another region's instances
//! ([`relay`]), sticky sessions ([`sticky`]), failures and retries ([`failure`]) and the
//! end-of-request accounting ([`log`]).

pub mod admission;
pub mod client;
pub mod ctx;
pub mod failure;
pub mod forwarding;
pub mod grpc;
pub mod log;
pub mod metrics;
pub mod relay;
pub mod service;
pub mod sticky;
pub mod tunnel;
pub mod upstream;
pub mod upstream_tls;
