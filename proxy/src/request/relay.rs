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
    has_relay_mark(&session.req_header().headers)
        && session
            .client_addr()
            .and_then(|a| a.as_inet())
            .is_some_and(|a| active.identity.is_peer(a.ip()))
}

/// Whether `headers` has the relay mark. A request's few names are compared one by one
/// (a map lookup hashes the 21-byte name first); a long list is looked up.
fn has_relay_mark(headers: &http::HeaderMap) -> bool {
    if headers.len() <= 8 {
        headers.keys().any(|name| *name == RELAYED_BY)
    } else {
        headers.contains_key(&RELAYED_BY)
    }
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
    if has_relay_mark(&upstream.headers) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_mark_is_found_in_short_and_long_header_lists() {
        for others in [0, 3, 8, 20] {
            let mut headers = http::HeaderMap::new();
            for i in 0..others {
                headers.insert(
                    HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap(),
                    http::HeaderValue::from_static("v"),
                );
            }
            headers.insert(http::header::HOST, http::HeaderValue::from_static("h"));
            assert!(!has_relay_mark(&headers), "{others} other headers");
            headers.insert(
                HeaderName::from_static("x-meridian-relayed-by"),
                http::HeaderValue::from_static("eu-1"),
            );
            assert!(has_relay_mark(&headers), "{others} other headers");
        }
    }
}
