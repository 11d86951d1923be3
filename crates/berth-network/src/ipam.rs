//! IPv4 address management: subnets, pools, per-network allocation, and Docker-style MACs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

/// An IPv4 prefix, `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    /// The address as written (for a subnet, the network address).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Builds a prefix (no check that host bits are zero).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Self {
            addr,
            prefix: prefix.min(32),
        }
    }

    /// The netmask as a u32.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` lies in this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The same prefix with host bits cleared.
    pub fn trunc(&self) -> Ipv4Net {
        Ipv4Net::new(self.network(), self.prefix)
    }

    /// The n-th address of the prefix (0 = network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix as u32);
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network()).wrapping_add(n)))
    }

    /// Parses a subnet that must have no host bits set (dockerd's check).
    pub fn parse_subnet(s: &str) -> Result<Ipv4Net> {
        let n: Ipv4Net = s.parse()?;
        if n.addr != n.network() {
            return Err(NetworkError::InvalidArgument(format!(
                "invalid subnet {s}: it should be {}",
                n.trunc()
            )));
        }
        Ok(n)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || NetworkError::InvalidArgument(format!("invalid CIDR address: {s}"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Ipv4Net { addr, prefix })
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A pool that user networks get their subnets from (`default-address-pools`: `{"base":..,"size":..}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    /// The range carved up, e.g. `172.30.0.0/15`.
    pub base: Ipv4Net,
    /// Prefix length of each subnet handed out, e.g. 16.
    pub size: u8,
}

impl AddressPool {
    /// The first subnet of this pool that overlaps none of `used`.
    pub fn next_free(&self, used: &[Ipv4Net]) -> Option<Ipv4Net> {
        if self.size < self.base.prefix || self.size > 30 {
            return None;
        }
        let count = 1u64 << (self.size - self.base.prefix);
        let step = 1u64 << (32 - self.size as u32);
        (0..count)
            .map(|i| {
                let a = u64::from(u32::from(self.base.network())) + i * step;
                Ipv4Net::new(Ipv4Addr::from(a as u32), self.size)
            })
            .find(|cand| used.iter().all(|u| !u.overlaps(cand)))
    }
}

/// The address state of one network's pool, persisted with the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The gateway (the bridge's address).
    pub gateway: Ipv4Addr,
    /// Sub-range dynamic addresses are taken from (the subnet when not given).
    pub ip_range: Option<Ipv4Net>,
    /// Addresses in use, by owner (container ID).
    #[serde(default)]
    pub allocated: BTreeMap<Ipv4Addr, String>,
    /// Last address handed out dynamically: allocation goes on after it (serially, like dockerd),
    /// so an address just released is not reused at once.
    #[serde(default)]
    pub last: Option<Ipv4Addr>,
}

impl Ipam {
    /// A new pool; `gateway` defaults to the first host address, and must lie in the subnet.
    pub fn new(
        subnet: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        ip_range: Option<Ipv4Net>,
    ) -> Result<Ipam> {
        if subnet.prefix > 30 {
            return Err(NetworkError::InvalidArgument(format!(
                "invalid subnet {subnet}: too small"
            )));
        }
        let gateway = gateway.unwrap_or_else(|| subnet.nth(1).expect("prefix <= 30"));
        if !subnet.contains(gateway) {
            return Err(NetworkError::InvalidArgument(format!(
                "no matching subnet for gateway {gateway}"
            )));
        }
        if let Some(r) = ip_range {
            if !(subnet.contains(r.network()) && r.prefix >= subnet.prefix) {
                return Err(NetworkError::InvalidArgument(format!(
                    "no matching subnet for range {r}"
                )));
            }
        }
        Ok(Ipam {
            subnet,
            gateway,
            ip_range,
            allocated: BTreeMap::new(),
            last: None,
        })
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip)
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
            && ip != self.gateway
    }

    /// Reserves `ip` (a static `--ip`) for `owner`.
    pub fn reserve(&mut self, ip: Ipv4Addr, owner: &str) -> Result<()> {
        if !self.usable(ip) {
            return Err(NetworkError::InvalidArgument(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
        match self.allocated.get(&ip) {
            Some(o) if o == owner => Ok(()),
            Some(_) => Err(NetworkError::Conflict(format!(
                "Address already in use: {ip}"
            ))),
            None => {
                self.allocated.insert(ip, owner.to_string());
                Ok(())
            }
        }
    }

    /// Hands out the next free address of the range for `owner`.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr> {
        let range = self.ip_range.unwrap_or(self.subnet).trunc();
        let size = 1u64 << (32 - range.prefix as u32);
        let start = match self.last {
            Some(l) if range.contains(l) => {
                u64::from(u32::from(l) - u32::from(range.network())) + 1
            }
            _ => 0,
        };
        for i in 0..size {
            let off = ((start + i) % size) as u32;
            let ip = range.nth(off).expect("in range");
            if self.usable(ip) && !self.allocated.contains_key(&ip) {
                self.allocated.insert(ip, owner.to_string());
                self.last = Some(ip);
                return Ok(ip);
            }
        }
        Err(NetworkError::Conflict(format!(
            "no available IPv4 addresses on this network's address pools: {}",
            self.subnet
        )))
    }

    /// Releases `ip` if `owner` holds it.
    pub fn release(&mut self, ip: Ipv4Addr, owner: &str) {
        if self.allocated.get(&ip).is_some_and(|o| o == owner) {
            self.allocated.remove(&ip);
        }
    }

    /// Releases every address `owner` holds.
    pub fn release_owner(&mut self, owner: &str) {
        self.allocated.retain(|_, o| o != owner);
    }
}

/// A MAC address like dockerd derives it from an IPv4 address: `02:42:` + the four address bytes.
pub fn mac_from_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Formats a MAC as `02:42:ac:11:00:02`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), as `--mac-address`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || NetworkError::InvalidArgument(format!("invalid MAC address: {s}"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_math() {
        let n = net("172.29.0.0/16");
        assert_eq!(n.broadcast(), Ipv4Addr::new(172, 29, 255, 255));
        assert!(n.contains(Ipv4Addr::new(172, 29, 3, 4)));
        assert!(!n.contains(Ipv4Addr::new(172, 30, 0, 1)));
        assert!(n.overlaps(&net("172.29.5.0/24")));
        assert!(net("172.29.5.0/24").overlaps(&n));
        assert!(!n.overlaps(&net("172.17.0.0/16")));
        assert!(
            Ipv4Net::parse_subnet("10.1.0.1/24")
                .unwrap_err()
                .to_string()
                .contains("10.1.0.0/24")
        );
        assert!("10.1.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("nonsense".parse::<Ipv4Net>().is_err());
        assert_eq!(net("0.0.0.0/0").mask(), 0);
    }

    #[test]
    fn pools_skip_used_subnets() {
        let p = AddressPool {
            base: net("172.30.0.0/15"),
            size: 16,
        };
        assert_eq!(p.next_free(&[]), Some(net("172.30.0.0/16")));
        assert_eq!(
            p.next_free(&[net("172.30.4.0/24")]),
            Some(net("172.31.0.0/16"))
        );
        assert_eq!(
            p.next_free(&[net("172.30.0.0/16"), net("172.31.0.0/16")]),
            None
        );
    }

    #[test]
    fn allocation_is_serial_and_skips_reserved() {
        let mut ipam = Ipam::new(net("10.0.0.0/29"), None, None).unwrap();
        assert_eq!(ipam.gateway, Ipv4Addr::new(10, 0, 0, 1));
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        ipam.reserve(Ipv4Addr::new(10, 0, 0, 3), "s").unwrap();
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 0, 0, 4));
        ipam.release(a, "a");
        // serial: the released .2 comes back only after the range wraps
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(ipam.allocate("e").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        let err = ipam.allocate("f").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Conflict);
        assert!(
            ipam.reserve(Ipv4Addr::new(10, 0, 0, 4), "x")
                .unwrap_err()
                .to_string()
                .contains("in use")
        );
        assert!(ipam.reserve(Ipv4Addr::new(10, 0, 0, 1), "x").is_err());
        assert!(ipam.reserve(Ipv4Addr::new(10, 0, 0, 7), "x").is_err());
        ipam.release_owner("b");
        assert!(!ipam.allocated.values().any(|o| o == "b"));
    }

    #[test]
    fn ip_range_and_gateway() {
        let mut ipam = Ipam::new(
            net("10.1.0.0/24"),
            Some(Ipv4Addr::new(10, 1, 0, 254)),
            Some(net("10.1.0.128/25")),
        )
        .unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 1, 0, 128));
        // static addresses may lie outside the range, inside the subnet
        ipam.reserve(Ipv4Addr::new(10, 1, 0, 5), "b").unwrap();
        assert!(Ipam::new(net("10.1.0.0/24"), Some(Ipv4Addr::new(10, 2, 0, 1)), None).is_err());
        assert!(Ipam::new(net("10.1.0.0/24"), None, Some(net("10.2.0.0/25"))).is_err());
        let json = serde_json::to_string(&ipam).unwrap();
        let back: Ipam = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ipam);
    }

    #[test]
    fn macs() {
        let m = mac_from_ip(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:02").unwrap(), m);
        assert!(parse_mac("01:00:00:00:00:00").is_err());
        assert!(parse_mac("02:42:ac:11:00").is_err());
    }
}
