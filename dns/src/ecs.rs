//! EDNS Client Subnet (RFC 7871): which client a query speaks for, checked as the RFC
//! asks (address bits beyond the source prefix must be zero), and the option echoed back
//! with an honest scope.

use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};

/// The client subnet a query carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// SOURCE PREFIX-LENGTH: how many leading bits the resolver disclosed.
    pub source: u8,
}

impl Subnet {
    /// Whether the subnet locates the client (a zero-length source says nothing: the
    /// resolver's address decides, and the answer's scope is 0).
    pub fn locates(self) -> bool {
        self.source > 0
    }

    /// The option for the response, with `scope` (SCOPE PREFIX-LENGTH).
    pub fn echo(self, scope: u8) -> EdnsOption {
        EdnsOption::Subnet(ClientSubnet::new(self.addr, self.source, scope))
    }
}

/// Why a client subnet option is refused (answered FORMERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    /// The source prefix is longer than the address family allows.
    #[error("source prefix /{0} is longer than the address")]
    PrefixTooLong(u8),
    /// Address bits beyond the source prefix are set (RFC 7871 §6).
    #[error("address bits beyond the source prefix are set")]
    HostBits,
}

/// The client subnet of a query's EDNS, if it has one.
///
/// # Errors
///
/// [`EcsError`] when the option breaks RFC 7871's rules.
pub fn client_subnet(edns: Option<&Edns>) -> Result<Option<Subnet>, EcsError> {
    let Some(EdnsOption::Subnet(cs)) = edns.and_then(|e| e.option(EdnsCode::Subnet)) else {
        return Ok(None);
    };
    let (addr, source) = (cs.addr(), cs.source_prefix());
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    if source > bits {
        return Err(EcsError::PrefixTooLong(source));
    }
    let value = match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
        IpAddr::V6(v6) => u128::from(v6),
    };
    let kept = if source == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(source))
    };
    if value & !kept != 0 {
        return Err(EcsError::HostBits);
    }
    Ok(Some(Subnet { addr, source }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn edns_with(addr: &str, source: u8) -> Edns {
        let mut e = Edns::new();
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            addr.parse().unwrap(),
            source,
            0,
        )));
        e
    }

    #[test]
    fn subnets_are_checked_as_rfc_7871_asks() {
        assert_eq!(client_subnet(None), Ok(None));
        assert_eq!(client_subnet(Some(&Edns::new())), Ok(None));
        let ok = client_subnet(Some(&edns_with("81.2.69.0", 24)))
            .unwrap()
            .unwrap();
        assert_eq!((ok.addr.to_string(), ok.source), ("81.2.69.0".into(), 24));
        assert!(ok.locates());
        assert_eq!(
            client_subnet(Some(&edns_with("81.2.69.1", 24))),
            Err(EcsError::HostBits)
        );
        assert_eq!(
            client_subnet(Some(&edns_with("2001:db8::", 32)))
                .unwrap()
                .unwrap()
                .source,
            32
        );
        let zero = client_subnet(Some(&edns_with("0.0.0.0", 0)))
            .unwrap()
            .unwrap();
        assert!(!zero.locates());
        assert_eq!(
            client_subnet(Some(&edns_with("1.2.3.4", 40))),
            Err(EcsError::PrefixTooLong(40))
        );
    }
}
