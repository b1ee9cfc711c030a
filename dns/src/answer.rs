//! The answering core: a query packet and the client's address in, a response packet out.
//! Geo-steered names go through the routing core's plan ([`Snapshot::plan_anywhere`]) and
//! the shared health view; everything else is an authoritative server's plain duties.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use meridian_config::Instance;
use meridian_geoip::Location;
use meridian_routing::plan::Plan;
use meridian_routing::snapshot::Snapshot;
use prometheus::IntCounter;

use crate::ecs::{self, Subnet};
use crate::health::{Health, InstanceState};
use crate::metrics::{DnsMetrics, Drop, EcsUse};
use crate::zones::{Owner, ZoneData, Zones};
use crate::DnsError;

/// The most records a query may carry in its additional section (an OPT, and perhaps a
/// cookie-bearing or TSIG record): more is refused before the message is decoded.
const MAX_QUERY_ADDITIONALS: u16 = 3;

/// The classic UDP limit for clients without EDNS.
const PLAIN_UDP: usize = 512;

/// How a query arrived: UDP answers must fit the client's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (answers up to 64 KiB).
    Tcp,
}

/// The routing snapshot, held by whatever owns it (the proxy's active state).
pub type Routing = Arc<dyn AsRef<Snapshot> + Send + Sync>;

/// What answers are made from; swapped whole by [`Answerer::update`].
pub struct State {
    /// The routing snapshot's owner (plan, locator, config).
    pub routing: Routing,
    /// The compiled zones of `snapshot.config.geodns`.
    pub zones: Arc<Zones>,
    /// Who may be answered.
    pub health: Health,
    /// Answer counters by region index.
    answered: Vec<IntCounter>,
    /// The SOA serial.
    pub serial: u32,
}

/// The region a geo-steered answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The best region with an instance up (its index).
    Region(usize),
    /// No region in the plan has an instance up: every address of the plan's regions.
    FailOpen,
}

/// The GeoDNS answerer of one instance. `respond` takes no lock.
pub struct Answerer {
    state: ArcSwap<State>,
    metrics: DnsMetrics,
    /// Rotates the order of a region's addresses between answers.
    rotation: AtomicUsize,
    /// The serial's inputs as of the last change (none before the first ready view), and
    /// the serial.
    serial: Mutex<(Option<u64>, u32)>,
    /// Whether the instance is ready, asked per query (until then: SERVFAIL, so resolvers
    /// ask another server).
    ready: Box<dyn Fn() -> bool + Send + Sync>,
}

/// The zones of `snapshot`'s config, each geo-steered name following the service its host
/// name routes to (path `/`), or the first service when no route takes it.
fn compile_zones(snapshot: &Snapshot) -> Result<Zones, DnsError> {
    let service_of = |host: &str| {
        snapshot
            .route(Some(host), "/")
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(0)
    };
    Zones::compile(&snapshot.config.geodns, &service_of)
}

fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl State {
    /// The routing snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        (*self.routing).as_ref()
    }
}

impl Answerer {
    /// An answerer for `routing`'s config with no instance up yet, answering once `ready`
    /// says so.
    ///
    /// # Errors
    ///
    /// [`DnsError`] if the zones do not compile.
    pub fn new(
        metrics: DnsMetrics,
        routing: Routing,
        ready: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Result<Answerer, DnsError> {
        let snapshot = (*routing).as_ref();
        let zones = Arc::new(compile_zones(snapshot)?);
        let health = Health::build(snapshot, |_| InstanceState {
            up: false,
            usable_backends: 0,
        });
        let answered = counters(&metrics, &health);
        let serial = snapshot.config.geodns.serial.unwrap_or_else(unix_now);
        Ok(Answerer {
            state: ArcSwap::from_pointee(State {
                routing,
                zones,
                health,
                answered,
                serial,
            }),
            metrics,
            rotation: AtomicUsize::new(0),
            serial: Mutex::new((None, serial)),
            ready: Box::new(ready),
        })
    }

    /// Takes in a new snapshot (reload) and the health view now; the serial moves on when
    /// what may be answered changed. `instance` says how each configured instance is; for
    /// this instance itself, leave readiness out (it is asked per query).
    ///
    /// # Errors
    ///
    /// [`DnsError`] if a new config's zones do not compile (the old state stays).
    pub fn update(
        &self,
        routing: Routing,
        instance: impl Fn(&Instance) -> InstanceState,
    ) -> Result<(), DnsError> {
        let old = self.state.load();
        let snapshot = (*routing).as_ref();
        let same_config = Arc::ptr_eq(&old.snapshot().config, &snapshot.config);
        let zones = if same_config {
            old.zones.clone()
        } else {
            Arc::new(compile_zones(snapshot)?)
        };
        let health = Health::build(snapshot, instance);
        let answered = if same_config {
            old.answered.clone()
        } else {
            counters(&self.metrics, &health)
        };
        let inputs = health.fingerprint ^ zones_fingerprint(snapshot);
        let counting = snapshot.config.geodns.serial.is_some();
        let serial = {
            let mut s = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            match s.0 {
                // Before the first answers (not ready: SERVFAIL), nothing has been seen.
                _ if !self.is_ready() => {}
                // The first view answered from keeps the starting serial.
                None => s.0 = Some(inputs),
                Some(seen) if seen != inputs => {
                    s.1 = if counting {
                        s.1.wrapping_add(1).max(1)
                    } else {
                        unix_now().max(s.1.wrapping_add(1))
                    };
                    s.0 = Some(inputs);
                }
                Some(_) => {}
            }
            s.1
        };
        self.state.store(Arc::new(State {
            routing,
            zones,
            health,
            answered,
            serial,
        }));
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    /// Whether the instance is ready (answers are given).
    pub fn is_ready(&self) -> bool {
        (self.ready)()
    }

    /// The metrics.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    /// Where a client at `loc` asking for a name of service `service` is sent (the same
    /// decision as a geo-steered answer).
    pub fn choose(state: &State, service: usize, loc: Option<&Location>) -> Choice {
        Answerer::choice_in(state, &state.snapshot().plan_anywhere(service, loc))
    }

    /// The first region of `plan` with an instance that may be answered.
    fn choice_in(state: &State, plan: &Plan) -> Choice {
        plan.regions
            .iter()
            .map(|&i| usize::from(i))
            .find(|&i| state.health.regions.get(i).is_some_and(|r| r.answerable()))
            .map_or(Choice::FailOpen, Choice::Region)
    }

    /// Answers `packet` from `peer` into `out`; `false` when nothing is to be sent (the
    /// packet is not a query, or too short to answer).
    pub fn respond(
        &self,
        packet: &[u8],
        peer: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        let state = self.state.load();
        let mut decoder = BinDecoder::new(packet);
        let Ok(header) = Header::read(&mut decoder) else {
            self.metrics.dropped(Drop::Short);
            return false;
        };
        if header.message_type() == MessageType::Response {
            self.metrics.dropped(Drop::Response);
            return false;
        }
        // Counts a query never carries: refused before decoding (no allocation sized by
        // what a hostile header claims).
        if header.query_count() != 1
            || header.answer_count() != 0
            || header.name_server_count() != 0
            || header.additional_count() > MAX_QUERY_ADDITIONALS
        {
            return self.send(&header, None, None, ResponseCode::FormErr, transport, out);
        }
        let Ok(message) = Message::from_vec(packet) else {
            return self.send(&header, None, None, ResponseCode::FormErr, transport, out);
        };
        let Some(query) = message.queries().first().cloned() else {
            return self.send(&header, None, None, ResponseCode::FormErr, transport, out);
        };
        let edns = message.extensions().as_ref();
        let udp_payload = state.snapshot().config.geodns.udp_payload;
        let mut reply_edns = edns.map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(udp_payload.max(512));
            e
        });
        if edns.is_some_and(|e| e.version() > 0) {
            return self.send(
                &header,
                Some(query),
                reply_edns,
                ResponseCode::BADVERS,
                transport,
                out,
            );
        }
        let subnet = match ecs::client_subnet(edns) {
            Ok(s) => s,
            Err(_) => {
                self.metrics.ecs(EcsUse::Invalid);
                return self.send(
                    &header,
                    Some(query),
                    reply_edns,
                    ResponseCode::FormErr,
                    transport,
                    out,
                );
            }
        };
        self.metrics.ecs(match subnet {
            Some(s) if s.locates() => EcsUse::Used,
            Some(_) => EcsUse::Zero,
            None => EcsUse::Absent,
        });
        let limit = match transport {
            Transport::Udp => edns.map_or(PLAIN_UDP, |e| {
                usize::from(e.max_payload().clamp(512, udp_payload.max(512)))
            }),
            Transport::Tcp => usize::from(u16::MAX),
        };
        let refuse = |rcode| (rcode, Sections::default(), 0u8, false);
        let (rcode, sections, scope, aa) = if header.op_code() != OpCode::Query {
            refuse(ResponseCode::NotImp)
        } else if query.query_class() != DNSClass::IN
            || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        {
            refuse(ResponseCode::Refused)
        } else if !self.is_ready() {
            refuse(ResponseCode::ServFail)
        } else {
            let key = crate::zones::key(query.name());
            match state.zones.find(&key) {
                None => refuse(ResponseCode::Refused),
                Some(zone) => {
                    let (rcode, sections, scope) =
                        self.lookup(&state, zone, &key, &query, peer, subnet);
                    (rcode, sections, scope, true)
                }
            }
        };
        if let (Some(e), Some(s)) = (reply_edns.as_mut(), subnet) {
            e.options_mut()
                .insert(s.echo(if s.locates() { scope } else { 0 }));
        }
        let mut reply = base(&header, Some(query.clone()), rcode, aa, reply_edns.clone());
        reply.add_answers(sections.answers);
        reply.add_name_servers(sections.authority);
        reply.add_additionals(sections.additional);
        self.metrics.query(Some(query.query_type()), rcode);
        if encode(&reply, out) && out.len() <= limit {
            return true;
        }
        // Too large for the client's buffer: the header, the question and the OPT with
        // TC set; the client asks again over TCP (RFC 2181 §9, RFC 6891 §7).
        self.metrics.truncated.inc();
        let mut cut = base(&header, Some(query), rcode, aa, reply_edns);
        cut.set_truncated(true);
        encode(&cut, out)
    }

    /// Sends a response without records (errors).
    fn send(
        &self,
        header: &Header,
        query: Option<Query>,
        edns: Option<Edns>,
        rcode: ResponseCode,
        _transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        self.metrics
            .query(query.as_ref().map(Query::query_type), rcode);
        encode(&base(header, query, rcode, false, edns), out)
    }

    /// A name in a zone: its records, following one in-zone CNAME.
    fn lookup(
        &self,
        state: &State,
        zone: &ZoneData,
        key: &[u8],
        query: &Query,
        peer: IpAddr,
        subnet: Option<Subnet>,
    ) -> (ResponseCode, Sections, u8) {
        let name = query.name();
        let qtype = query.query_type();
        let mut s = Sections::default();
        let mut scope = 0;
        let Some(owner) = zone.owners.get(key) else {
            s.authority.push(zone.soa(state.serial, true));
            let rcode = if zone.empty_non_terminals.contains(key) {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return (rcode, s, 0);
        };
        match owner.cname() {
            Some(cname) if qtype != RecordType::CNAME && qtype != RecordType::ANY => {
                s.answers.push(cname.clone());
                let target = match cname.data() {
                    RData::CNAME(c) => Some(c.0.clone()),
                    _ => None,
                };
                if let Some((t, next)) = target.and_then(|t| {
                    let next = zone.owners.get(&crate::zones::key(&t)[..])?;
                    Some((t, next))
                }) {
                    scope = self.records(state, zone, next, &t, qtype, peer, subnet, &mut s);
                }
            }
            _ => scope = self.records(state, zone, owner, name, qtype, peer, subnet, &mut s),
        }
        if s.answers.is_empty() {
            s.authority.push(zone.soa(state.serial, true));
        }
        (ResponseCode::NoError, s, scope)
    }

    /// The records of `owner` of type `qtype`; returns the client subnet scope they need.
    #[allow(clippy::too_many_arguments)]
    fn records(
        &self,
        state: &State,
        zone: &ZoneData,
        owner: &Owner,
        name: &Name,
        qtype: RecordType,
        peer: IpAddr,
        subnet: Option<Subnet>,
        s: &mut Sections,
    ) -> u8 {
        let any = qtype == RecordType::ANY;
        let mut scope = 0;
        if owner.geo && matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
            scope = self.geo(
                state,
                (name, owner.service),
                qtype,
                peer,
                subnet,
                &mut s.answers,
            );
        }
        s.answers.extend(
            owner
                .records
                .iter()
                .filter(|r| any || r.record_type() == qtype)
                .cloned(),
        );
        if owner.apex {
            if any || qtype == RecordType::SOA {
                s.answers.push(zone.soa(state.serial, false));
            }
            if any || qtype == RecordType::NS {
                s.answers.extend(zone.ns.iter().cloned());
                s.additional.extend(zone.glue.iter().cloned());
            }
        }
        scope
    }

    /// A geo-steered name's addresses for the client; returns the scope (the prefix
    /// length of the client network the answer holds for).
    fn geo(
        &self,
        state: &State,
        (name, service): (&Name, u16),
        qtype: RecordType,
        peer: IpAddr,
        subnet: Option<Subnet>,
        answers: &mut Vec<Record>,
    ) -> u8 {
        let service = usize::from(service);
        let client = match subnet {
            Some(s) if s.locates() => s.addr,
            _ => peer,
        };
        let located = state.snapshot().locator.locate(client);
        let ttl = u32::try_from(state.snapshot().config.geodns.ttl.as_secs()).unwrap_or(u32::MAX);
        let max = state.snapshot().config.geodns.max_addresses;
        let (v4, v6) = (
            matches!(qtype, RecordType::A | RecordType::ANY),
            matches!(qtype, RecordType::AAAA | RecordType::ANY),
        );
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let mut add = |rdata: RData| answers.push(Record::from_rdata(name.clone(), ttl, rdata));
        let plan = state
            .snapshot()
            .plan_anywhere(service, located.location.as_ref());
        match Answerer::choice_in(state, &plan) {
            Choice::Region(i) => {
                if let Some(c) = state.answered.get(i) {
                    c.inc();
                }
                let r = &state.health.regions[i];
                if v4 {
                    for ip in rotated(&r.v4.up, start, max) {
                        add(RData::A(A(*ip)));
                    }
                }
                if v6 {
                    for ip in rotated(&r.v6.up, start, max) {
                        add(RData::AAAA(AAAA(*ip)));
                    }
                }
            }
            Choice::FailOpen => {
                self.metrics.fail_open.inc();
                for r in plan
                    .regions
                    .iter()
                    .filter_map(|&i| state.health.regions.get(usize::from(i)))
                {
                    if v4 {
                        r.v4.all.iter().for_each(|ip| add(RData::A(A(*ip))));
                    }
                    if v6 {
                        r.v6.all.iter().for_each(|ip| add(RData::AAAA(AAAA(*ip))));
                    }
                }
            }
        }
        located.prefix_len
    }
}

/// A response's record sections.
#[derive(Default)]
struct Sections {
    answers: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
}

/// Up to `max` items of `list`, starting at `start` (mod its length).
fn rotated<T>(list: &[T], start: usize, max: usize) -> impl Iterator<Item = &T> {
    let n = list.len();
    (0..n.min(max)).map(move |k| &list[(start + k) % n])
}

/// A response to `header` without records.
fn base(
    header: &Header,
    query: Option<Query>,
    rcode: ResponseCode,
    aa: bool,
    edns: Option<Edns>,
) -> Message {
    let mut m = Message::new();
    m.set_id(header.id())
        .set_message_type(MessageType::Response)
        .set_op_code(header.op_code())
        .set_authoritative(aa)
        .set_recursion_desired(header.recursion_desired())
        .set_recursion_available(false)
        .set_checking_disabled(header.checking_disabled())
        .set_response_code(rcode);
    if let Some(q) = query {
        m.add_query(q);
    }
    if let Some(e) = edns {
        m.set_edns(e);
    }
    m
}

/// Encodes `m` into `out` (cleared first); `false` if it cannot be encoded.
fn encode(m: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    m.emit(&mut encoder).is_ok()
}

fn counters(metrics: &DnsMetrics, health: &Health) -> Vec<IntCounter> {
    health
        .regions
        .iter()
        .map(|r| metrics.answered(&r.name))
        .collect()
}

/// A fingerprint of what the zones hold (a reload that changes records moves the serial).
fn zones_fingerprint(snap: &Snapshot) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{:?}", snap.config.geodns.zones).hash(&mut h);
    h.finish()
}
