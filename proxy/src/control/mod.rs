//! The control plane of one instance: its shared state ([`instance`]), hot reload
//! ([`reload`]), the mesh of instances ([`mesh`]), overload ([`overload`]), DNS discovery of backends ([`discovery`]), readiness ([`readiness`]),
//! process signals and graceful upgrades ([`upgrade`]) and systemd ([`systemd`]).

pub mod discovery;
pub mod geodns;
pub mod instance;
pub mod mesh;
pub mod overload;
pub mod readiness;
pub mod reload;
pub mod systemd;
pub mod upgrade;
