//! GeoDNS metrics: queries by type and response code, answers by region, client subnet
//! use, drops, truncation and TCP connections. Label values are fixed sets (and region
//! names from the config), resolved once, so counting a query looks nothing up.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Query types with a label of their own; the rest count as `other`.
const QTYPES: [&str; 10] = [
    "A", "AAAA", "ANY", "SOA", "NS", "CNAME", "TXT", "MX", "HTTPS", "other",
];

/// Response codes with a label.
const RCODES: [&str; 7] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL", "BADVERS",
];

/// How a query's client subnet was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsUse {
    /// It located the client.
    Used,
    /// It had a zero source prefix: the resolver's address decided.
    Zero,
    /// The query had none: the resolver's address decided.
    Absent,
    /// It broke RFC 7871 (answered FORMERR).
    Invalid,
}

/// Why a packet got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Shorter than a DNS header.
    Short,
    /// A response, not a query (never answered: no reflection loops).
    Response,
    /// A TCP connection over `max_tcp_connections`.
    TcpLimit,
}

/// Pre-resolved GeoDNS counters.
#[derive(Clone)]
pub struct DnsMetrics {
    queries: Vec<IntCounter>,
    answered: IntCounterVec,
    /// Answers that had no healthy region and gave every address.
    pub fail_open: IntCounter,
    ecs: [IntCounter; 4],
    dropped: [IntCounter; 3],
    /// UDP answers cut to the header (TC set) because they did not fit.
    pub truncated: IntCounter,
    /// TCP connections open now.
    pub tcp_connections: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    if let Err(e) = r.register(Box::new(m.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    m
}

impl DnsMetrics {
    /// Registers the GeoDNS metrics in `r`.
    #[allow(clippy::expect_used)] // metric definitions are constants, checked by the tests
    pub fn register(r: &Registry) -> Self {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"),
            )
        };
        let queries_vec = vec(
            "meridian_geodns_queries_total",
            "DNS queries answered, by query type and response code",
            &["qtype", "rcode"],
        );
        let mut queries = Vec::with_capacity(QTYPES.len() * RCODES.len());
        for q in QTYPES {
            for c in RCODES {
                queries.push(queries_vec.with_label_values(&[q, c]));
            }
        }
        let answered = vec(
            "meridian_geodns_answers_total",
            "Geo-steered answers by the region answered (fail_open: no healthy region, every address given)",
            &["region"],
        );
        let fail_open = answered.with_label_values(&["fail_open"]);
        let ecs_vec = vec(
            "meridian_geodns_client_subnet_total",
            "Queries by how their EDNS Client Subnet was used (used, zero: a /0 source, absent, invalid)",
            &["use"],
        );
        let dropped_vec = vec(
            "meridian_geodns_dropped_total",
            "Packets and connections not answered, by reason",
            &["reason"],
        );
        let truncated = register(
            r,
            IntCounter::new(
                "meridian_geodns_truncated_total",
                "UDP answers too large for the client's buffer, sent with TC set (the client retries over TCP)",
            )
            .expect("valid metric definition"),
        );
        let tcp_connections = register(
            r,
            IntGauge::new(
                "meridian_geodns_tcp_connections",
                "GeoDNS TCP connections open",
            )
            .expect("valid metric definition"),
        );
        DnsMetrics {
            queries,
            answered,
            fail_open,
            ecs: ["used", "zero", "absent", "invalid"].map(|u| ecs_vec.with_label_values(&[u])),
            dropped: ["short", "response", "tcp_limit"]
                .map(|d| dropped_vec.with_label_values(&[d])),
            truncated,
            tcp_connections,
        }
    }

    /// Counts an answered query.
    pub fn query(&self, qtype: Option<RecordType>, rcode: ResponseCode) {
        let q = match qtype {
            Some(RecordType::A) => 0,
            Some(RecordType::AAAA) => 1,
            Some(RecordType::ANY) => 2,
            Some(RecordType::SOA) => 3,
            Some(RecordType::NS) => 4,
            Some(RecordType::CNAME) => 5,
            Some(RecordType::TXT) => 6,
            Some(RecordType::MX) => 7,
            Some(RecordType::HTTPS) => 8,
            _ => 9,
        };
        let c = match rcode {
            ResponseCode::NoError => 0,
            ResponseCode::NXDomain => 1,
            ResponseCode::Refused => 2,
            ResponseCode::FormErr => 3,
            ResponseCode::NotImp => 4,
            ResponseCode::BADVERS => 6,
            _ => 5,
        };
        if let Some(counter) = self.queries.get(q * RCODES.len() + c) {
            counter.inc();
        }
    }

    /// The counter of answers from `region`.
    pub fn answered(&self, region: &str) -> IntCounter {
        self.answered.with_label_values(&[region])
    }

    /// Counts a query's client subnet use.
    pub fn ecs(&self, how: EcsUse) {
        self.ecs[how as usize].inc();
    }

    /// Counts an unanswered packet or connection.
    pub fn dropped(&self, why: Drop) {
        self.dropped[why as usize].inc();
    }
}
