//! Validation of `[geoip]`, `[client]`, `[steering]` and `[residency]`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::{ClientFile, Entries, GeoIpFile, RegionList, ResidencyFile, SteeringFile};
use crate::model::{ClientIdentity, GeoIp, GeoOverride, Steering, SteeringPolicy};

/// The steering policies.
const POLICIES: [&str; 4] = ["default", "geo", "proximity", "failover"];

/// Validates `[geoip]`; `base_dir` resolves a relative database path.
pub(crate) fn geoip(cx: &mut Cx<'_>, file: &GeoIpFile, base_dir: Option<&Path>) -> GeoIp {
    let database = file.database.as_ref().and_then(|db| {
        let written = Path::new(db.get_ref());
        let path = match base_dir {
            Some(base) if written.is_relative() => base.join(written),
            _ => written.to_path_buf(),
        };
        cx.check(db, "geoip.database", |_| database_file(&path))
    });
    let mut overrides: Vec<GeoOverride> = Vec::new();
    for (i, spanned) in file.overrides.iter().enumerate() {
        let o = spanned.get_ref();
        let table = Some(spanned.span());
        let at = format!("geoip.overrides[{i}]");
        let network = match &o.cidr {
            Some(cidr) => cx.check(cidr, &format!("{at}.cidr"), |c| checks::network(c)),
            None => {
                cx.missing(table.clone(), &format!("{at}.cidr"), None);
                None
            }
        };
        let country = match &o.country {
            Some(c) => cx.check(c, &format!("{at}.country"), |c| checks::country(c)),
            None => {
                cx.missing(table.clone(), &format!("{at}.country"), None);
                None
            }
        };
        let coordinates = match (&o.latitude, &o.longitude) {
            (Some(lat), Some(lon)) => {
                let lat = cx.check(lat, &format!("{at}.latitude"), |v| {
                    checks::degrees(*v, -90.0..=90.0, "latitude")
                });
                let lon = cx.check(lon, &format!("{at}.longitude"), |v| {
                    checks::degrees(*v, -180.0..=180.0, "longitude")
                });
                lat.zip(lon)
            }
            (Some(lat), None) => {
                let message = "latitude without longitude: give both or neither";
                cx.bad(lat, &format!("{at}.latitude"), message);
                None
            }
            (None, Some(lon)) => {
                let message = "longitude without latitude: give both or neither";
                cx.bad(lon, &format!("{at}.longitude"), message);
                None
            }
            (None, None) => None,
        };
        let (Some(network), Some(country)) = (network, country) else {
            continue;
        };
        if let Some(first) = overrides.iter().position(|o| o.network == network) {
            if let Some(cidr) = &o.cidr {
                let message = format!(
                    "duplicate override for {network}, already at geoip.overrides[{first}]"
                );
                cx.bad(cidr, &format!("{at}.cidr"), message);
            }
            continue;
        }
        overrides.push(GeoOverride {
            network,
            country,
            coordinates,
        });
    }
    GeoIp {
        database,
        overrides,
    }
}

fn database_file(path: &Path) -> Result<PathBuf, Problem> {
    match std::fs::metadata(path) {
        Err(e) => Err(Problem::hinted(
            format!("cannot open GeoIP database {}: {e}", path.display()),
            "relative paths are resolved against the config file's directory; omit `database` to use the built-in database",
        )),
        Ok(meta) if !meta.is_file() => Err(format!(
            "GeoIP database {} is not a regular file",
            path.display()
        )
        .into()),
        Ok(_) => Ok(path.to_path_buf()),
    }
}

/// Validates `[client]`.
pub(crate) fn client(cx: &mut Cx<'_>, file: &ClientFile) -> ClientIdentity {
    let mut trusted_proxies: Vec<IpNet> = Vec::new();
    for (i, entry) in file.trusted_proxies.iter().enumerate() {
        let field = format!("client.trusted_proxies[{i}]");
        if let Some(net) = cx.check(entry, &field, |c| checks::network(c)) {
            if trusted_proxies.contains(&net) {
                cx.bad(entry, &field, format!("duplicate trusted proxy {net}"));
            } else {
                trusted_proxies.push(net);
            }
        }
    }
    ClientIdentity { trusted_proxies }
}

/// Validates `[steering]` and `[residency]`; `names` are the region names in file order.
pub(crate) fn steering(
    cx: &mut Cx<'_>,
    file: &SteeringFile,
    residency: &ResidencyFile,
    names: &[String],
) -> Steering {
    let policy = match &file.policy {
        None => Some(SteeringPolicy::Default),
        Some(p) => cx
            .check(p, "steering.policy", |p| {
                checks::choice(p, &POLICIES, "steering policy")
            })
            .map(|p| match p {
                "geo" => SteeringPolicy::Geo,
                "proximity" => SteeringPolicy::Proximity,
                "failover" => SteeringPolicy::Failover,
                _ => SteeringPolicy::Default,
            }),
    };
    let order = match &file.order {
        Some(list) => region_list(cx, names, list, "steering.order"),
        None => Vec::new(),
    };
    if policy == Some(SteeringPolicy::Failover) && order.is_empty() {
        let hint = "add order = [\"primary-region\", \"backup-region\", ...]";
        match (&file.order, &file.policy) {
            (Some(list), _) if list.get_ref().is_empty() => {
                cx.bad(
                    list,
                    "steering.order",
                    Problem::hinted("failover needs a non-empty order", hint),
                );
            }
            (None, Some(p)) => {
                cx.bad(
                    p,
                    "steering.policy",
                    Problem::hinted("policy \"failover\" needs a non-empty steering.order", hint),
                );
            }
            _ => {}
        }
    }
    let spans = &cx.keys;
    let (sc, sk, rc, rk) = (
        spans.steering.countries.0.clone(),
        spans.steering.continents.0.clone(),
        spans.residency.countries.0.clone(),
        spans.residency.continents.0.clone(),
    );
    let country = checks::country;
    let continent = checks::continent;
    let countries = code_map(
        cx,
        names,
        &file.countries,
        "steering.countries",
        &sc,
        country,
    );
    let continents = code_map(
        cx,
        names,
        &file.continents,
        "steering.continents",
        &sk,
        continent,
    );
    let residency_countries = code_map(
        cx,
        names,
        &residency.countries,
        "residency.countries",
        &rc,
        country,
    );
    let residency_continents = code_map(
        cx,
        names,
        &residency.continents,
        "residency.continents",
        &rk,
        continent,
    );
    Steering {
        policy: policy.unwrap_or(SteeringPolicy::Default),
        countries,
        continents,
        order,
        residency_countries,
        residency_continents,
        expose_headers: file.expose_headers.unwrap_or(false),
    }
}

/// Resolves a list of region names to indices, rejecting unknown names and repeats.
fn region_list(cx: &mut Cx<'_>, names: &[String], list: &RegionList, field: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, name) in list.get_ref().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(index) = cx.region_ref(names, name, &at) else {
            continue;
        };
        if out.contains(&index) {
            cx.bad(
                name,
                &at,
                format!("region \"{}\" is listed twice", name.get_ref()),
            );
        } else {
            out.push(index);
        }
    }
    out
}

/// Validates a `CODE = [regions]` table: codes via `code`, lists via [`region_list`].
fn code_map(
    cx: &mut Cx<'_>,
    names: &[String],
    entries: &Entries<RegionList>,
    field: &str,
    key_spans: &[Range<usize>],
    code: fn(&str) -> Result<String, Problem>,
) -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    for (i, (key, list)) in entries.0.iter().enumerate() {
        let at = format!("{field}.{key}");
        let span = key_spans.get(i).cloned().unwrap_or_else(|| list.span());
        let regions = region_list(cx, names, list, &at);
        if list.get_ref().is_empty() {
            cx.bad(list, &at, "the region list must not be empty");
        }
        match code(key) {
            Err(problem) => cx.report(Some(&span), &at, None, problem),
            Ok(code) if out.contains_key(&code) => {
                let message = format!("{code} is listed twice (codes are case-insensitive)");
                cx.report(Some(&span), &at, None, message);
            }
            Ok(code) => {
                out.insert(code, regions);
            }
        }
    }
    out
}
