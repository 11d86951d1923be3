//! NAT, forwarding, isolation and port publishing with nftables, in Berth's own `table ip berth`.
//!
//! The whole table is rendered from state and replaced in one atomic `nft -f -` transaction
//! (`table ip berth; delete table ip berth; table ip berth {...}`), so a change never leaves a stale or
//! duplicate rule behind, and [`crate::NetworkManager::reconcile`] is simply "render from what exists".
//! Rules still carry `comment "net <id>"` / `comment "ctr <id>"` so `nft list ruleset` says whose they are.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNetwork {
    /// Short network ID (for comments).
    pub id: String,
    /// Linux bridge name.
    pub bridge: String,
    /// Subnet.
    pub subnet: Ipv4Net,
    /// `--internal`: no way in or out, no masquerade.
    pub internal: bool,
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// Parses `tcp`/`udp`/`sctp` (empty = tcp).
    pub fn parse(s: &str) -> Result<Proto> {
        match s {
            "" | "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            _ => Err(NetworkError::InvalidArgument(format!("invalid proto: {s}"))),
        }
    }

    /// `tcp`, `udp`, `sctp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One published port: host `[ip:]port/proto` → container `ip:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Protocol.
    pub proto: Proto,
    /// Host address to match (`None` = every local address, 127.0.0.1 included).
    pub host_ip: Option<Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Container address.
    pub container_ip: Ipv4Addr,
    /// Container port.
    pub container_port: u16,
    /// Owner container ID.
    pub container_id: String,
}

/// Everything the table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Bridge networks.
    pub networks: Vec<FwNetwork>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Renders the script that replaces `table ip <table>` with `rs`.
pub fn render(table: &str, rs: &Ruleset) -> String {
    let mut s = format!("table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n");
    s.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    \
         fib daddr type local jump ports\n  }\n",
    );
    s.push_str(
        "  chain output {\n    type nat hook output priority -100; policy accept;\n    \
         fib daddr type local jump ports\n  }\n",
    );
    s.push_str("  chain ports {\n");
    for p in &rs.ports {
        let daddr = p
            .host_ip
            .map(|ip| format!("ip daddr {ip} "))
            .unwrap_or_default();
        s.push_str(&format!(
            "    {daddr}{proto} dport {hp} dnat to {cip}:{cp} comment \"ctr {id}\"\n",
            proto = p.proto.as_str(),
            hp = p.host_port,
            cip = p.container_ip,
            cp = p.container_port,
            id = short(&p.container_id),
        ));
    }
    s.push_str("  }\n");
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for n in &rs.networks {
        let (b, sub, id) = (&n.bridge, n.subnet.trunc(), short(&n.id));
        s.push_str(&format!(
            "    oifname \"{b}\" ip saddr 127.0.0.0/8 masquerade comment \"net {id} localhost hairpin\"\n"
        ));
        s.push_str(&format!(
            "    oifname \"{b}\" ip saddr {sub} ct status dnat masquerade comment \"net {id} hairpin\"\n"
        ));
        if !n.internal {
            s.push_str(&format!(
                "    ip saddr {sub} oifname != \"{b}\" masquerade comment \"net {id} masquerade\"\n"
            ));
        }
    }
    s.push_str("  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    let bridges: Vec<&str> = rs.networks.iter().map(|n| n.bridge.as_str()).collect();
    // 1. internal networks: nothing in or out, before anything is accepted
    for n in rs.networks.iter().filter(|n| n.internal) {
        let (b, id) = (&n.bridge, short(&n.id));
        s.push_str(&format!(
            "    iifname \"{b}\" oifname != \"{b}\" drop comment \"net {id} internal\"\n"
        ));
        s.push_str(&format!(
            "    oifname \"{b}\" iifname != \"{b}\" drop comment \"net {id} internal\"\n"
        ));
    }
    // 2. replies, and published ports (reachable from anywhere, other Berth networks included)
    for n in rs.networks.iter().filter(|n| !n.internal) {
        let (b, id) = (&n.bridge, short(&n.id));
        s.push_str(&format!(
            "    oifname \"{b}\" ct state established,related accept comment \"net {id} return\"\n"
        ));
        s.push_str(&format!(
            "    oifname \"{b}\" ct status dnat accept comment \"net {id} published\"\n"
        ));
    }
    // 3. isolation between networks, then traffic within a network and out of it
    for n in &rs.networks {
        let (b, id) = (&n.bridge, short(&n.id));
        let others: Vec<String> = bridges
            .iter()
            .filter(|o| **o != b)
            .map(|o| format!("\"{o}\""))
            .collect();
        if !n.internal && !others.is_empty() {
            s.push_str(&format!(
                "    iifname \"{b}\" oifname {{ {} }} drop comment \"net {id} isolation\"\n",
                others.join(", ")
            ));
        }
        s.push_str(&format!(
            "    iifname \"{b}\" oifname \"{b}\" accept comment \"net {id} intra\"\n"
        ));
        if !n.internal {
            s.push_str(&format!(
                "    iifname \"{b}\" accept comment \"net {id} egress\"\n"
            ));
            s.push_str(&format!(
                "    oifname \"{b}\" drop comment \"net {id} ingress\"\n"
            ));
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// Whether the `nft` binary is usable.
pub fn available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs one `nft -f -` transaction.
pub fn run_script(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::io("run nft", e))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| NetworkError::io("write nft script", e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::io("wait for nft", e))?;
    if !out.status.success() {
        return Err(NetworkError::Internal(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Replaces the table with `rs` atomically.
pub fn apply(table: &str, rs: &Ruleset) -> Result<()> {
    run_script(&render(table, rs))
}

/// Deletes the table (absent is fine).
pub fn delete_table(table: &str) -> Result<()> {
    run_script(&format!("table ip {table}\ndelete table ip {table}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs() -> Ruleset {
        Ruleset {
            networks: vec![
                FwNetwork {
                    id: "aaaaaaaaaaaaffff".into(),
                    bridge: "berth0".into(),
                    subnet: "172.29.0.0/16".parse().unwrap(),
                    internal: false,
                },
                FwNetwork {
                    id: "bbbbbbbbbbbb".into(),
                    bridge: "br-bbbbbbbbbbbb".into(),
                    subnet: "10.5.0.0/24".parse().unwrap(),
                    internal: true,
                },
            ],
            ports: vec![
                PortMapping {
                    proto: Proto::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_ip: "172.29.0.2".parse().unwrap(),
                    container_port: 80,
                    container_id: "c1c1c1c1c1c1c1c1".into(),
                },
                PortMapping {
                    proto: Proto::Udp,
                    host_ip: Some(Ipv4Addr::LOCALHOST),
                    host_port: 5353,
                    container_ip: "172.29.0.2".parse().unwrap(),
                    container_port: 53,
                    container_id: "c1c1c1c1c1c1c1c1".into(),
                },
            ],
        }
    }

    #[test]
    fn renders_nat_isolation_and_ports() {
        let s = render("berth", &rs());
        assert!(s.starts_with("table ip berth\ndelete table ip berth\ntable ip berth {\n"));
        assert!(
            s.contains("    tcp dport 8080 dnat to 172.29.0.2:80 comment \"ctr c1c1c1c1c1c1\"\n")
        );
        assert!(s.contains("    ip daddr 127.0.0.1 udp dport 5353 dnat to 172.29.0.2:53 comment \"ctr c1c1c1c1c1c1\"\n"));
        assert!(s.contains("ip saddr 172.29.0.0/16 oifname != \"berth0\" masquerade comment \"net aaaaaaaaaaaa masquerade\""));
        assert!(!s.contains("ip saddr 10.5.0.0/24 oifname != \"br-bbbbbbbbbbbb\" masquerade"));
        assert!(s.contains("iifname \"berth0\" oifname { \"br-bbbbbbbbbbbb\" } drop"));
        assert!(s.contains("iifname \"br-bbbbbbbbbbbb\" oifname != \"br-bbbbbbbbbbbb\" drop"));
        assert!(s.contains("oifname \"berth0\" ip saddr 127.0.0.0/8 masquerade"));
        assert!(s.contains("fib daddr type local jump ports"));
        assert_eq!(s.matches('{').count(), s.matches('}').count());
        // internal drops come before any accept, published ports before isolation
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
        assert!(pos("internal\"") < pos("accept comment"));
        assert!(pos("ct status dnat accept") < pos("isolation"));
    }

    #[test]
    fn empty_ruleset_is_valid_shape() {
        let s = render("t", &Ruleset::default());
        assert!(s.contains("chain ports {\n  }"));
        assert_eq!(Proto::parse("").unwrap(), Proto::Tcp);
        assert!(Proto::parse("icmp").is_err());
    }
}
