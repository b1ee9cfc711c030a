//! Relaying through a region's instances. A request failing over to a region configured
//! with `reach = "instances"` goes to one of its instances' proxy listeners, marked with the
//! sending instance's name; the receiving instance serves it from its own region only
//! (it never relays again), and when its region cannot serve it says so, so that the
//! sender retries elsewhere as if the connection had failed (the relay acted on nothing).
//! A request that comes back to an instance it already passed is refused by the `Via`
//! check (`508`).

use http::HeaderName;
use meridian_routing::{Plan, Snapshot};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::ErrorType;

use crate::control::instance::Active;

/// The request header naming the instance that relayed the request.
pub static RELAYED_BY: HeaderName = HeaderName::from_static("x-meridian-relayed-by");
/// The response header of a relay whose region has no usable backend.
pub static RELAY_FAILED: HeaderName = HeaderName::from_static("x-meridian-relay-failed");
/// The error a relay's refusal becomes on the sending instance.
pub const RELAY_UNAVAILABLE: ErrorType = ErrorType::Custom("RelayUnavailable");

/// Whether the request was relayed by another instance (the header, from a peer's address).
pub fn relayed(session: &Session, active: &Active) -> bool {
    session.req_header().headers.contains_key(&RELAYED_BY)
        && session
            .client_addr()
            .and_then(|a| a.as_inet())
            .is_some_and(|a| active.identity.is_peer(a.ip()))
}

/// The plan of a relayed request: this instance's own region only (none when the service
/// has no pool here).
pub fn local_only(snap: &Snapshot, service: usize) -> Plan {
    let mut plan = Plan {
        service: service as u16,
        ..Plan::default()
    };
    if snap.pool(service, snap.local).is_some() {
        plan.regions.push(snap.local as u16);
    }
    plan.restricted = true;
    plan.preferred = Some(snap.local as u16);
    plan
}

/// Marks (or unmarks) the upstream request as relayed by `node`.
pub fn mark(upstream: &mut RequestHeader, relay: bool, node: &str) -> pingora::Result<()> {
    // Looked up first: a removal parses the name and touches both of pingora's header maps.
    if upstream.headers.contains_key(&RELAYED_BY) {
        upstream.remove_header(&RELAYED_BY);
    }
    if relay {
        upstream.insert_header(&RELAYED_BY, node)?;
    }
    Ok(())
}

/// Whether a relay's answer says its region could not serve the request.
pub fn refused(resp: &ResponseHeader) -> bool {
    resp.headers.contains_key(&RELAY_FAILED)
}
