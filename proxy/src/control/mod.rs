//! The control plane of one instance: its shared state ([`instance`]), hot reload
//! ([`reload`]), runtime backend states set by operators ([`runtime`]), the mesh of instances ([`mesh`]), overload ([`overload`]), DNS discovery of backends ([`discovery`]), readiness ([`readiness`]),
//! process signals and graceful upgrades ([`upgrade`]) and systemd ([`systemd`]).

pub mod discovery;
pub mod geodns;
pub mod instance;
pub mod mesh;
pub mod overload;
pub mod readiness;
pub mod reload;
pub mod runtime;
pub mod state_file;
pub mod systemd;
pub mod upgrade;
