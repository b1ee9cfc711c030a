//! Validation of `[regions.*]`: places, instances, and the pool settings (balancer,
//! backends, health check, TLS, upstream protocol, slow start) that make the implicit service's pools and
//! the defaults of every service's pool in the region.

use std::collections::HashMap;
use std::ops::Range;

use crate::checks::{self, Problem};
use crate::context::Cx;
use crate::file::{FileConfig, RegionFile, S};
use crate::model::{BackendAddress, Region};
use crate::pools::{Layer, PoolKeys, PoolSettings};
use crate::upstream::{PoolName, UpLayer};

/// The most regions a file may define: the proxy keeps region indices in `u16` lists,
/// and routing scores every region per request.
pub(crate) const MAX_REGIONS: usize = 1024;

/// What validating the regions yields besides the model: each region's pool settings
/// (what every service's pool there inherits) and the backends seen so far.
pub(crate) struct Regions {
    /// The regions, in file order.
    pub regions: Vec<Region>,
    /// Each region's pool settings, by region index.
    pub settings: Vec<PoolSettings>,
    /// Every backend address so far, with where it was listed (unique in the file).
    pub seen: HashMap<BackendAddress, String>,
}

/// Validates every region (and the global `[health_check]` and `[upstream]` merged into
/// each). With
/// `services`, a region's `backends` may be left out.
pub(crate) fn regions(cx: &mut Cx<'_>, file: &FileConfig, services: bool) -> Regions {
    let global = Layer::parse(cx, &file.health_check, "health_check");
    global.over(&Layer::unset()).check_timeout(cx, &global);
    let upstream = UpLayer::parse(cx, Some(&file.upstream), "upstream");
    let base = PoolSettings::base(&global, &upstream);
    let mut out = Regions {
        regions: Vec::new(),
        settings: Vec::new(),
        seen: HashMap::new(),
    };

    let entries = match &file.regions {
        Some(entries) if !entries.0.is_empty() => &entries.0,
        _ => {
            let span = cx.top_key("regions");
            cx.report(
                span.as_ref(),
                "regions",
                None,
                Problem::hinted(
                    "at least one region is required",
                    "add a [regions.NAME] table with latitude, longitude and backends",
                ),
            );
            return out;
        }
    };
    if let Some((name, _)) = entries.get(MAX_REGIONS) {
        let key = cx.keys.regions.get(MAX_REGIONS).cloned();
        let message = format!(
            "too many regions: {} are defined, at most {MAX_REGIONS} are supported",
            entries.len()
        );
        cx.report(key.as_ref(), &format!("regions.{name}"), None, message);
    }
    for (i, (name, region)) in entries.iter().enumerate() {
        let key = cx.keys.regions.get(i).cloned();
        let (region, settings) = one_region(cx, name, region, key, &base, services, &mut out.seen);
        out.regions.push(region);
        out.settings.push(settings);
    }
    out
}

/// Whether a region is reached through its instances (then it may list no backends).
pub(crate) fn relayed(file: &RegionFile) -> bool {
    file.instances
        .as_ref()
        .is_some_and(|i| !i.get_ref().is_empty())
        && file
            .reach
            .as_ref()
            .is_some_and(|r| r.get_ref() == "instances")
}

fn one_region(
    cx: &mut Cx<'_>,
    name: &str,
    file: &RegionFile,
    key: Option<Range<usize>>,
    base: &PoolSettings,
    services: bool,
    seen: &mut HashMap<BackendAddress, String>,
) -> (Region, PoolSettings) {
    let prefix = format!("regions.{name}");
    if let Err(problem) = checks::name(name, "region") {
        cx.report(key.as_ref(), &prefix, None, problem);
    }
    let latitude = coordinate(cx, &file.latitude, &key, &prefix, "latitude", 90.0);
    let longitude = coordinate(cx, &file.longitude, &key, &prefix, "longitude", 180.0);
    let keys = PoolKeys {
        balance: file.balance.as_ref(),
        hash_key: file.hash_key.as_ref(),
        health_check: file.health_check.as_ref(),
        tls: file.tls.as_ref(),
        upstream: file.upstream.as_ref(),
        slow_start: file.slow_start.as_ref(),
    };
    let settings = base.layer(cx, keys, key.clone(), &prefix);
    let optional = services || relayed(file);
    if !services || file.backends.is_some() || relayed(file) {
        // The region's own pool (the implicit service's); otherwise its settings are only
        // defaults, checked in the pools that inherit them.
        let pool = PoolName {
            service: None,
            region: name,
        };
        settings.check_protocol(cx, &pool);
    }
    let backends =
        crate::pools::backends(cx, file.backends.as_ref(), &key, &prefix, seen, optional);
    let (instances, reach) = crate::mesh::instances(cx, file, &prefix);
    let region = Region {
        name: name.to_owned(),
        latitude,
        longitude,
        backends,
        balance: settings.balance.clone(),
        health: settings.health.build(),
        tls: settings.tls.clone(),
        upstream: settings.upstream.build(),
        slow_start: settings.slow_start,
        instances,
        reach,
    };
    (region, settings)
}

fn coordinate(
    cx: &mut Cx<'_>,
    value: &Option<S<f64>>,
    key: &Option<Range<usize>>,
    prefix: &str,
    name: &str,
    limit: f64,
) -> f64 {
    let field = format!("{prefix}.{name}");
    match value {
        Some(v) => cx
            .check(v, &field, |d| checks::degrees(*d, -limit..=limit, name))
            .unwrap_or(0.0),
        None => {
            cx.missing(key.clone(), &field, None);
            0.0
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::context::last_segment;

    #[test]
    fn last_segment_strips_index() {
        assert_eq!(last_segment("regions.a.backends[1]"), "backends");
        assert_eq!(last_segment("threads"), "threads");
    }
}
