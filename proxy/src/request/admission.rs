//! Whether a request may go on at all, decided before it is routed: the instance is not
//! overloaded, the request has not looped back through this node, and its declared body is
//! within `limits.max_body_size`.

use http::header::{CONTENT_LENGTH, VIA};
use pingora::proxy::Session;

use super::ctx::{Ctx, Refusal};
use super::forwarding::loops_through;
use crate::control::overload::Overload;

impl Refusal {
    /// The status the client is answered with.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Shed(_) | Refusal::LocalResources => 503,
            Refusal::BodyTooLarge => 413,
            Refusal::Loop => 508,
            Refusal::ClientStalled => 408,
            Refusal::DeadlineExceeded => 504,
            Refusal::NoRoute => 404,
        }
    }
}

/// Why the request must be refused, if it must.
pub fn check(session: &Session, ctx: &Ctx, overload: &Overload) -> Option<Refusal> {
    let config = &ctx.snap().config;
    if let Some(reason) = overload.shed(&config.limits) {
        return Some(Refusal::Shed(reason));
    }
    let req = session.req_header();
    if loops_through(req.headers.get_all(VIA), &config.node.name) {
        return Some(Refusal::Loop);
    }
    let declared = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match (declared, config.limits.max_body_size) {
        (Some(len), Some(max)) if len > max => Some(Refusal::BodyTooLarge),
        _ => None,
    }
}
