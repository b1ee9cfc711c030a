//! The edge: where connections arrive. Listeners and their socket settings
//! ([`listeners`]), TLS with certificates chosen by SNI ([`tls`]), connection caps ([`limits`]),
//! the PROXY protocol ([`proxy_protocol`]) and the HTTP→HTTPS redirect ([`redirect`]).

pub mod limits;
pub mod listeners;
pub mod proxy_protocol;
pub mod redirect;
pub mod tls;
