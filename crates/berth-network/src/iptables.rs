//! The iptables fallback, used only when `nft` is not available: the same rules as [`crate::nft`], in
//! Berth's own chains (`<PREFIX>-PORTS`, `<PREFIX>-POST` in `nat`, `<PREFIX>-FWD` in `filter`), each rewritten
//! as a whole by one `iptables-restore --noflush` (declaring a chain flushes it), plus one jump per built-in
//! chain, added once.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{NetworkError, Result};
use crate::nft::Ruleset;

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The chain prefix for an nftables table name: `berth` → `BERTH`.
pub fn prefix(table: &str) -> String {
    let p: String = table
        .to_ascii_uppercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    p[..p.len().min(22)].to_string()
}

/// The jumps from built-in chains: `(table, chain, rule args)`.
fn jumps(p: &str) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (
            "nat",
            "PREROUTING",
            s(&[
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                &format!("{p}-PORTS"),
            ]),
        ),
        (
            "nat",
            "OUTPUT",
            s(&[
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                &format!("{p}-PORTS"),
            ]),
        ),
        ("nat", "POSTROUTING", s(&["-j", &format!("{p}-POST")])),
        ("filter", "FORWARD", s(&["-j", &format!("{p}-FWD")])),
    ]
}

/// Renders the `iptables-restore --noflush` input for `rs`.
pub fn render(table: &str, rs: &Ruleset) -> String {
    let p = prefix(table);
    let mut s = format!("*nat\n:{p}-PORTS - [0:0]\n:{p}-POST - [0:0]\n");
    for m in &rs.ports {
        let d = m
            .host_ip
            .map(|ip| format!("-d {ip}/32 "))
            .unwrap_or_default();
        let proto = m.proto.as_str();
        s.push_str(&format!(
            "-A {p}-PORTS {d}-p {proto} -m {proto} --dport {} -m comment --comment \"ctr {}\" -j DNAT --to-destination {}:{}\n",
            m.host_port,
            short(&m.container_id),
            m.container_ip,
            m.container_port
        ));
    }
    for n in &rs.networks {
        let (b, sub, id) = (&n.bridge, n.subnet.trunc(), short(&n.id));
        s.push_str(&format!(
            "-A {p}-POST -s 127.0.0.0/8 -o {b} -m comment --comment \"net {id}\" -j MASQUERADE\n"
        ));
        s.push_str(&format!(
            "-A {p}-POST -s {sub} -o {b} -m conntrack --ctstate DNAT -m comment --comment \"net {id}\" -j MASQUERADE\n"
        ));
        if !n.internal {
            s.push_str(&format!(
                "-A {p}-POST -s {sub} ! -o {b} -m comment --comment \"net {id}\" -j MASQUERADE\n"
            ));
        }
    }
    s.push_str(&format!("COMMIT\n*filter\n:{p}-FWD - [0:0]\n"));
    let c = |id: &str| format!("-m comment --comment \"net {}\"", short(id));
    for n in rs.networks.iter().filter(|n| n.internal) {
        let b = &n.bridge;
        s.push_str(&format!(
            "-A {p}-FWD -i {b} ! -o {b} {} -j DROP\n",
            c(&n.id)
        ));
        s.push_str(&format!(
            "-A {p}-FWD -o {b} ! -i {b} {} -j DROP\n",
            c(&n.id)
        ));
    }
    for n in rs.networks.iter().filter(|n| !n.internal) {
        let b = &n.bridge;
        s.push_str(&format!(
            "-A {p}-FWD -o {b} -m conntrack --ctstate RELATED,ESTABLISHED {} -j ACCEPT\n",
            c(&n.id)
        ));
        s.push_str(&format!(
            "-A {p}-FWD -o {b} -m conntrack --ctstate DNAT {} -j ACCEPT\n",
            c(&n.id)
        ));
    }
    for n in &rs.networks {
        let b = &n.bridge;
        if !n.internal {
            for o in rs.networks.iter().filter(|o| o.bridge != *b) {
                s.push_str(&format!(
                    "-A {p}-FWD -i {b} -o {} {} -j DROP\n",
                    o.bridge,
                    c(&n.id)
                ));
            }
        }
        s.push_str(&format!(
            "-A {p}-FWD -i {b} -o {b} {} -j ACCEPT\n",
            c(&n.id)
        ));
        if !n.internal {
            s.push_str(&format!("-A {p}-FWD -i {b} {} -j ACCEPT\n", c(&n.id)));
            s.push_str(&format!("-A {p}-FWD -o {b} {} -j DROP\n", c(&n.id)));
        }
    }
    s.push_str("COMMIT\n");
    s
}

/// Whether `iptables-restore` is usable.
pub fn available() -> bool {
    Command::new("iptables-restore")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn iptables(args: &[String]) -> Result<bool> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| NetworkError::io("run iptables", e))?;
    Ok(out.status.success())
}

/// Rewrites Berth's chains with `rs` and makes sure the built-in chains jump to them.
pub fn apply(table: &str, rs: &Ruleset) -> Result<()> {
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::io("run iptables-restore", e))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(render(table, rs).as_bytes())
        .map_err(|e| NetworkError::io("write iptables-restore input", e))?;
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::io("wait for iptables-restore", e))?;
    if !out.status.success() {
        return Err(NetworkError::Internal(format!(
            "iptables-restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    for (t, chain, rule) in jumps(&prefix(table)) {
        let mut check = vec!["-t".to_string(), t.into(), "-C".into(), chain.into()];
        check.extend(rule.iter().cloned());
        if !iptables(&check)? {
            let mut ins = vec![
                "-t".to_string(),
                t.into(),
                "-I".into(),
                chain.into(),
                "1".into(),
            ];
            ins.extend(rule);
            if !iptables(&ins)? {
                return Err(NetworkError::Internal(format!(
                    "cannot add the jump from {t}/{chain}"
                )));
            }
        }
    }
    Ok(())
}

/// Removes the jumps and Berth's chains (absent is fine).
pub fn delete(table: &str) -> Result<()> {
    let p = prefix(table);
    for (t, chain, rule) in jumps(&p) {
        let mut del = vec!["-t".to_string(), t.into(), "-D".into(), chain.into()];
        del.extend(rule);
        while iptables(&del)? {}
    }
    for (t, chain) in [("nat", "PORTS"), ("nat", "POST"), ("filter", "FWD")] {
        let name = format!("{p}-{chain}");
        iptables(&["-t".into(), t.into(), "-F".into(), name.clone()])?;
        iptables(&["-t".into(), t.into(), "-X".into(), name])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{FwNetwork, PortMapping, Proto};

    #[test]
    fn renders_chains() {
        let rs = Ruleset {
            networks: vec![
                FwNetwork {
                    id: "a".repeat(64),
                    bridge: "berth0".into(),
                    subnet: "172.29.0.0/16".parse().unwrap(),
                    internal: false,
                },
                FwNetwork {
                    id: "b".repeat(64),
                    bridge: "br-b".into(),
                    subnet: "10.5.0.0/24".parse().unwrap(),
                    internal: true,
                },
            ],
            ports: vec![PortMapping {
                proto: Proto::Udp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 5353,
                container_ip: "172.29.0.2".parse().unwrap(),
                container_port: 53,
                container_id: "c".repeat(64),
            }],
        };
        let s = render("berth", &rs);
        assert!(s.starts_with("*nat\n:BERTH-PORTS - [0:0]\n:BERTH-POST - [0:0]\n"));
        assert!(s.contains("-A BERTH-PORTS -d 127.0.0.1/32 -p udp -m udp --dport 5353 -m comment --comment \"ctr cccccccccccc\" -j DNAT --to-destination 172.29.0.2:53\n"));
        assert!(s.contains("-A BERTH-POST -s 172.29.0.0/16 ! -o berth0"));
        assert!(!s.contains("-s 10.5.0.0/24 ! -o br-b"));
        assert!(s.contains("-A BERTH-FWD -i berth0 -o br-b"));
        assert!(s.find("-i br-b ! -o br-b").unwrap() < s.find("ACCEPT").unwrap());
        assert!(s.ends_with("COMMIT\n"));
        assert_eq!(prefix("berth_test_x"), "BERTH_TEST_X");
    }
}
