//! Validation of the instance lists (`[regions.NAME] instances`, `reach`) and `[mesh]`:
//! unique instance names, this process among them, relay regions with instances, and a
//! secret (or mutual TLS) as soon as there are peers to talk to.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::checks::{self, Problem};
use crate::context::{Cx, Min};
use crate::file::{self, RegionFile, S};
use crate::model::{Instance, Mesh, MeshTls, Reach, Region, Secret};

/// The instances and `reach` of one region.
pub(crate) fn instances(
    cx: &mut Cx<'_>,
    file: &RegionFile,
    prefix: &str,
) -> (Vec<Instance>, Reach) {
    let mut out = Vec::new();
    for (i, entry) in file.instances.iter().flat_map(|l| l.get_ref()).enumerate() {
        let field = format!("{prefix}.instances[{i}]");
        let inst = entry.get_ref();
        let name = match &inst.name {
            Some(n) => cx.check(n, &format!("{field}.name"), |n| {
                checks::visible_token(n, "instance name")
            }),
            None => {
                cx.bad(
                    entry,
                    &format!("{field}.name"),
                    "missing required key `name`",
                );
                None
            }
        };
        let mut public = Vec::new();
        for (j, ip) in inst.public.iter().flat_map(|p| p.get_ref()).enumerate() {
            let f = format!("{field}.public[{j}]");
            if let Some(ip) = cx.check(ip, &f, |t| {
                t.trim().parse::<IpAddr>().map_err(|_| {
                    Problem::hinted(
                        format!("\"{t}\" is not an IP address"),
                        "public lists the addresses clients reach the instance at, e.g. \"203.0.113.10\"",
                    )
                })
            }) {
                public.push(ip);
            }
        }
        let addr = |cx: &mut Cx<'_>, value: &Option<S<String>>, key: &str| match value {
            Some(v) => cx.check(v, &format!("{field}.{key}"), |a| checks::socket_addr(a)),
            None => {
                cx.bad(
                    entry,
                    &format!("{field}.{key}"),
                    format!("missing required key `{key}`"),
                );
                None
            }
        };
        let proxy = addr(cx, &inst.proxy, "proxy");
        let mesh = addr(cx, &inst.mesh, "mesh");
        if let (Some(name), Some(proxy), Some(mesh)) = (name, proxy, mesh) {
            out.push(Instance {
                name,
                public,
                proxy,
                mesh,
            });
        }
    }
    let reach = match &file.reach {
        None => Reach::Backends,
        Some(r) => {
            let field = format!("{prefix}.reach");
            match cx.check(r, &field, |r| {
                checks::choice(r, &["backends", "instances"], "reach")
            }) {
                Some("instances")
                    if file
                        .instances
                        .as_ref()
                        .is_none_or(|i| i.get_ref().is_empty()) =>
                {
                    cx.bad(
                        r,
                        &field,
                        Problem::hinted(
                            "reach = \"instances\" needs the region's instances",
                            "list them: instances = [{ name = \"…\", proxy = \"…\", mesh = \"…\" }]",
                        ),
                    );
                    Reach::Backends
                }
                Some("instances") => Reach::Instances,
                _ => Reach::Backends,
            }
        }
    };
    (out, reach)
}

/// Instance names are unique across regions; returns name → region index.
pub(crate) fn unique_names(
    cx: &mut Cx<'_>,
    file: &file::FileConfig,
    regions: &[Region],
) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (ri, region) in regions.iter().enumerate() {
        for (i, inst) in region.instances.iter().enumerate() {
            if let Some(&other) = seen.get(&inst.name) {
                let written = file
                    .regions
                    .as_ref()
                    .and_then(|e| e.0.get(ri))
                    .and_then(|(_, r)| r.instances.as_ref())
                    .and_then(|l| l.get_ref().get(i))
                    .and_then(|e| e.get_ref().name.as_ref());
                let message = format!(
                    "instance name \"{}\" is used twice (also in region {})",
                    inst.name, regions[other].name
                );
                match written {
                    Some(w) => cx.bad(
                        w,
                        &format!("regions.{}.instances[{i}].name", region.name),
                        message,
                    ),
                    None => cx.report(None, "regions", None, message),
                }
            } else {
                seen.insert(inst.name.clone(), ri);
            }
        }
    }
    seen
}

/// Validates `[mesh]`: with any instance listed, a secret (inline or in a file) or mutual
/// TLS is required.
pub(crate) fn mesh(cx: &mut Cx<'_>, file: &file::MeshFile, instances: usize) -> Mesh {
    let mut secret = None;
    if let Some(inline) = &file.secret {
        secret = cx.check(inline, "mesh.secret", |t| checks::admin_token(t));
        if file.secret_file.is_some() {
            cx.bad(
                inline,
                "mesh.secret",
                "mesh.secret and mesh.secret_file are both set",
            );
        }
    } else if let Some(path) = &file.secret_file {
        let base = cx.base_dir.clone();
        secret = cx.check(path, "mesh.secret_file", |p| {
            let resolved = crate::tls::resolve(base.as_deref(), p);
            let text = std::fs::read_to_string(&resolved)
                .map_err(|e| Problem::from(format!("cannot read {}: {e}", resolved.display())))?;
            checks::admin_token(text.trim())
        });
    }
    let tls = file.tls.as_ref().and_then(|t| mesh_tls(cx, t));
    if instances > 1 && file.secret.is_none() && file.secret_file.is_none() && file.tls.is_none() {
        let span = cx.top_key("regions");
        cx.missing(
            span,
            "mesh.secret",
            Some(
                "instances are listed: the mesh between them needs mesh.secret (or mesh.secret_file, or [mesh.tls])"
                    .to_owned(),
            ),
        );
    }
    let interval = cx
        .duration_within(
            file.interval.as_ref(),
            "mesh.interval",
            Duration::from_secs(1),
            Min::AtLeast(Duration::from_millis(100)),
            Duration::from_secs(60),
        )
        .unwrap_or(Duration::from_secs(1));
    let timeout = cx
        .duration_within(
            file.timeout.as_ref(),
            "mesh.timeout",
            Duration::from_millis(800),
            Min::Positive,
            Duration::from_secs(60),
        )
        .unwrap_or(Duration::from_millis(800));
    let count = |cx: &mut Cx<'_>, v: &Option<S<i64>>, f: &str, d: i64| {
        cx.int(v.as_ref(), f, d, 1..=100)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d as u32)
    };
    Mesh {
        secret: secret.map(Secret::new),
        tls,
        interval,
        timeout,
        rise: count(cx, &file.rise, "mesh.rise", 2),
        fall: count(cx, &file.fall, "mesh.fall", 3),
    }
}

fn mesh_tls(cx: &mut Cx<'_>, file: &file::MeshTlsFile) -> Option<MeshTls> {
    let base = cx.base_dir.clone();
    let path = |cx: &mut Cx<'_>, v: &Option<S<String>>, key: &str| -> Option<std::path::PathBuf> {
        match v {
            Some(v) => Some(crate::tls::resolve(base.as_deref(), v.get_ref())),
            None => {
                let span = cx.top_key("mesh");
                cx.missing(span, &format!("mesh.tls.{key}"), None);
                None
            }
        }
    };
    let (cert_file, key_file, ca_file) = (
        path(cx, &file.cert, "cert")?,
        path(cx, &file.key, "key")?,
        path(cx, &file.ca, "ca")?,
    );
    let chain = file
        .cert
        .as_ref()
        .and_then(|v| cx.check(v, "mesh.tls.cert", |_| crate::tls::read_chain(&cert_file)))?;
    let key = file
        .key
        .as_ref()
        .and_then(|v| cx.check(v, "mesh.tls.key", |_| crate::tls::read_key(&key_file)))?;
    let ca = file
        .ca
        .as_ref()
        .and_then(|v| cx.check(v, "mesh.tls.ca", |_| crate::tls::read_chain(&ca_file)))?;
    Some(MeshTls {
        cert_file,
        key_file,
        ca_file,
        chain,
        key,
        ca,
    })
}
