//! Helpers shared by the integration tests: small MaxMind DB files written with
//! `mmdb-writer`, and address parsing.

#![allow(dead_code)]

pub mod handmade;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use meridian_geoip::{CountryCode, Override};
use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{IpVersion, Ipv4Aliasing, Value, Writer};

/// A database file in the temp directory, removed on drop.
pub struct TempDb(PathBuf);

impl TempDb {
    /// Writes `bytes` to a file named after `name` and this process.
    pub fn new(name: &str, bytes: &[u8]) -> TempDb {
        let path =
            std::env::temp_dir().join(format!("meridian-geoip-{}-{name}.mmdb", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp database");
        TempDb(path)
    }

    /// Builds a database of `database_type` from `(network, record)` pairs and writes it.
    pub fn build(
        name: &str,
        database_type: &str,
        v4_only: bool,
        records: Vec<(&str, Value)>,
    ) -> TempDb {
        let mut writer = Writer::builder(database_type)
            .ip_version(if v4_only {
                IpVersion::V4
            } else {
                IpVersion::V6
            })
            // No ::ffff:0:0/96 alias: IPv4-mapped lookups must be mapped by the locator.
            .ipv4_aliasing(Ipv4Aliasing::Disabled)
            .build();
        for (network, record) in records {
            let network: IpNet = network.parse().expect("network");
            writer.insert_value(network, record).expect("insert");
        }
        TempDb::new(name, &writer.to_bytes().expect("serialize database"))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A map value from `(key, value)` pairs.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::map(entries)
}

/// A string value.
pub fn s(v: &str) -> Value {
    Value::from(v)
}

/// An address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

/// A country code.
pub fn cc(s: &str) -> CountryCode {
    CountryCode::parse(s).expect("country code")
}

/// An override without coordinates.
pub fn rule(network: &str, country: &str) -> Override {
    Override {
        network: network.parse().expect("network"),
        country: cc(country),
        coordinates: None,
    }
}
