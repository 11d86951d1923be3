//! Root integration tests: real bridges, veths, namespaces and nftables tables, each test with its own
//! names (bridge prefix, subnet 10.213.X.0/24, nft table), so tests run in parallel without touching each
//! other. Traffic stays on loopback and inside the namespaces made here. Skipped when not root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_api::container::PortBinding;
use berth_api::network::{
    EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig, NetworkCreateRequest,
};
use berth_network::{
    ContainerNetwork, ContainerNetworkRequest, Firewall, NetworkConfig, NetworkManager,
};

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// Runs `args` inside the namespace file `ns`.
fn ns_run(ns: &Path, args: &[&str]) -> (bool, String) {
    let net = format!("--net={}", ns.display());
    let mut v = vec![net.as_str()];
    v.extend_from_slice(args);
    run("nsenter", &v)
}

fn ping(ns: &Path, ip: &str) -> bool {
    ns_run(ns, &["busybox", "ping", "-c", "1", "-W", "2", ip]).0
}

/// One test's private manager; its Drop removes every kernel object it made.
struct Env {
    mgr: NetworkManager,
    tag: String,
    dir: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
        Self::with_firewall(tag, Firewall::Nftables)
    }

    fn with_firewall(tag: &str, firewall: Firewall) -> Env {
        let dir = std::env::temp_dir().join(format!("berth-net-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = NetworkConfig {
            data_root: dir.join("data"),
            netns_dir: dir.join("netns"),
            bridge_name: format!("{tag}d0"),
            bridge_prefix: format!("{tag}-"),
            nft_table: format!("berth_test_{tag}"),
            predefined_networks: false,
            upstream_dns: Some(vec![]),
            firewall,
            ..Default::default()
        };
        Env {
            mgr: NetworkManager::open(cfg).unwrap(),
            tag: tag.into(),
            dir,
        }
    }

    fn reopen(&mut self) {
        let cfg = self.mgr.config().clone();
        self.mgr = NetworkManager::open(cfg).unwrap();
    }

    fn net(&self, name: &str, subnet: &str, internal: bool) -> String {
        let req = NetworkCreateRequest {
            name: name.into(),
            internal,
            ipam: Some(Ipam {
                config: vec![IpamConfig {
                    subnet: subnet.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        self.mgr.create_network(&req).unwrap().id
    }

    fn ctr(
        &self,
        n: u32,
        name: &str,
        nets: &[(&str, EndpointSettings)],
    ) -> (String, ContainerNetwork) {
        let id = format!("{:0>12}{}", format!("{}{n}", self.tag), "c".repeat(52));
        let req = ContainerNetworkRequest {
            id: id.clone(),
            name: name.into(),
            networks: nets
                .iter()
                .map(|(k, e)| (k.to_string(), e.clone()))
                .collect(),
            ..Default::default()
        };
        (id, self.mgr.setup(&req).unwrap())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Err(e) = self.mgr.shutdown_and_clean() {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process (server) in a namespace, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ns_spawn(ns: &Path, args: &[&str]) -> Bg {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns.display()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Bg(c.spawn().unwrap())
}

fn links() -> String {
    run("ip", &["-o", "link"]).1
}

fn nft_ruleset() -> String {
    run("nft", &["list", "ruleset"]).1
}

fn assert_clean(tag: &str, table: &str, veths: &[String]) {
    let l = links();
    assert!(!l.contains(&format!(" {tag}-")), "bridge left: {l}");
    for v in veths {
        assert!(
            !l.contains(&format!(" {v}@")) && !l.contains(&format!(" {v}:")),
            "veth {v} left: {l}"
        );
    }
    assert!(!nft_ruleset().contains(table), "nft table {table} left");
}

fn ep() -> EndpointSettings {
    EndpointSettings::default()
}

fn veth_names(e: &Env) -> Vec<String> {
    // the host ends are the veths enslaved to this test's bridges
    let l = links();
    l.lines()
        .filter(|line| line.contains(&format!("master {}-", e.tag)))
        .filter_map(|line| line.split(": ").nth(1)?.split('@').next().map(String::from))
        .collect()
}

#[test]
fn same_network_ping_dns_and_teardown() {
    require_root!();
    let mut env = Env::new("ta");
    env.mgr.reconcile(&[]).unwrap();
    let nid = env.net("ta-net", "10.213.1.0/24", false);
    let alias = EndpointSettings {
        aliases: Some(vec!["db".into()]),
        ..ep()
    };
    let (id1, c1) = env.ctr(1, "web1", &[("ta-net", ep())]);
    let (id2, c2) = env.ctr(2, "web2", &[("ta-net", alias)]);
    let ns1 = c1.netns_path.clone().unwrap();
    let e1 = &c1.endpoints["ta-net"];
    let e2 = &c2.endpoints["ta-net"];
    assert_eq!(e1.ip_address, "10.213.1.2");
    assert_eq!(e2.ip_address, "10.213.1.3");
    assert_eq!(e1.mac_address, "02:42:0a:d5:01:02");
    assert_eq!(e1.gateway, "10.213.1.1");
    assert_eq!(e1.network_id, nid);
    assert_eq!(e2.dns_names.as_deref().unwrap(), ["web2", &id2[..12], "db"]);
    assert_eq!(c1.embedded_dns, Some(Ipv4Addr::new(10, 213, 1, 1)));
    // eth0 with the derived MAC inside, default route via the gateway
    let (_, inside) = ns_run(&ns1, &["ip", "-o", "link", "show", "eth0"]);
    assert!(inside.contains("02:42:0a:d5:01:02"), "{inside}");
    assert!(inside.contains("UP"), "{inside}");
    let (_, routes) = ns_run(&ns1, &["ip", "route"]);
    assert!(
        routes.contains("default via 10.213.1.1 dev eth0"),
        "{routes}"
    );
    assert!(ping(&ns1, "10.213.1.3"), "web1 cannot ping web2");
    // names through the embedded DNS on the gateway
    for (name, want) in [
        ("web2", "10.213.1.3"),
        ("db", "10.213.1.3"),
        (&id1[..12], "10.213.1.2"),
    ] {
        let (_, out) = ns_run(&ns1, &["busybox", "nslookup", name, "10.213.1.1"]);
        assert!(out.contains(want), "nslookup {name}: {out}");
    }
    let (_, out) = ns_run(
        &ns1,
        &["busybox", "nslookup", "nosuchname.invalid", "10.213.1.1"],
    );
    assert!(out.contains("can't find"), "{out}");
    // inspect shows both containers
    let r = env.mgr.inspect_network("ta-net").unwrap();
    assert_eq!(r.containers.len(), 2);
    assert_eq!(r.containers[&id2].ipv4_address, "10.213.1.3/24");
    // network with endpoints cannot go
    assert!(
        env.mgr
            .remove_network("ta-net")
            .unwrap_err()
            .to_string()
            .contains("has active endpoints")
    );
    let veths = veth_names(&env);
    assert_eq!(veths.len(), 2, "{veths:?}");
    env.mgr.teardown(&id1).unwrap();
    env.mgr.teardown(&id2).unwrap();
    assert!(!ns1.exists());
    // addresses released, serially reused later
    assert!(
        env.mgr
            .inspect_network("ta-net")
            .unwrap()
            .containers
            .is_empty()
    );
    env.mgr.remove_network("ta-net").unwrap();
    env.mgr.shutdown_and_clean().unwrap();
    assert_clean("ta", "berth_test_ta", &veths);
    assert!(
        std::fs::read_dir(env.dir.join("netns"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
    env.reopen();
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn published_ports_from_the_host() {
    require_root!();
    let env = Env::new("tb");
    env.mgr.reconcile(&[]).unwrap();
    env.net("tb-net", "10.213.2.0/24", false);
    let id = format!("tb1{}", "d".repeat(61));
    let mut pb = BTreeMap::new();
    pb.insert("80/tcp".to_string(), vec![PortBinding::default()]);
    pb.insert(
        "81/tcp".to_string(),
        vec![PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: "".into(),
        }],
    );
    let req = ContainerNetworkRequest {
        id: id.clone(),
        name: "srv".into(),
        networks: vec![("tb-net".into(), ep())],
        port_bindings: pb,
        exposed_ports: vec!["80/tcp".into(), "81/tcp".into(), "9999/udp".into()],
        ..Default::default()
    };
    let cn = env.mgr.setup(&req).unwrap();
    let ns = cn.netns_path.clone().unwrap();
    let hp: u16 = cn.ports["80/tcp"].as_ref().unwrap()[0]
        .host_port
        .parse()
        .unwrap();
    let hp_lo: u16 = cn.ports["81/tcp"].as_ref().unwrap()[0]
        .host_port
        .parse()
        .unwrap();
    assert!(hp >= 49153);
    assert_eq!(cn.ports["81/tcp"].as_ref().unwrap()[0].host_ip, "127.0.0.1");
    assert_eq!(cn.ports["9999/udp"], None);
    let www = env.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello from the container\n").unwrap();
    let w = www.to_str().unwrap();
    let _s1 = ns_spawn(&ns, &["busybox", "httpd", "-f", "-p", "80", "-h", w]);
    let _s2 = ns_spawn(&ns, &["busybox", "httpd", "-f", "-p", "81", "-h", w]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    let mut ok = false;
    while Instant::now() < deadline {
        match http_get(&format!("127.0.0.1:{hp}")) {
            Ok(s) if s.contains("hello from the container") => {
                ok = true;
                break;
            }
            Ok(s) => last = s,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok, "127.0.0.1:{hp}: {last}\n{}", env.mgr.ruleset_script());
    // Each address gets a few tries: on a loaded machine a connection was refused once, right
    // after the first address answered (not understood yet; the rules are one nft transaction).
    let get = |addr: String| {
        let mut last = Err(std::io::Error::other("no try"));
        for _ in 0..20 {
            last = http_get(&addr);
            if last.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last.unwrap_or_else(|e| panic!("{addr}: {e}"))
    };
    let gw = get(format!("10.213.2.1:{hp}"));
    assert!(gw.contains("hello from the container"), "{gw}");
    let lo = get(format!("127.0.0.1:{hp_lo}"));
    assert!(lo.contains("hello from the container"), "{lo}");
    // bound to 127.0.0.1 only: not on the gateway address
    assert!(http_get(&format!("10.213.2.1:{hp_lo}")).is_err());
    // a fixed port already taken by this container is a conflict
    let mut pb2 = BTreeMap::new();
    pb2.insert(
        "80/tcp".to_string(),
        vec![PortBinding {
            host_ip: String::new(),
            host_port: hp.to_string(),
        }],
    );
    let e = env
        .mgr
        .setup(&ContainerNetworkRequest {
            id: format!("tb2{}", "d".repeat(61)),
            name: "srv2".into(),
            networks: vec![("tb-net".into(), ep())],
            port_bindings: pb2,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Bind for 0.0.0.0:{hp} failed: port is already allocated")
    );
    assert!(
        !env.dir
            .join("netns")
            .join(format!("tb2{}", "d".repeat(61)))
            .exists()
    );
    let table = nft_ruleset();
    assert_eq!(table.matches("dnat to 10.213.2.2:80").count(), 1, "{table}");
    env.mgr.teardown(&id).unwrap();
    assert!(!nft_ruleset().contains("dnat to 10.213.2.2"));
    assert!(http_get(&format!("127.0.0.1:{hp}")).is_err());
}

#[test]
fn networks_are_isolated_and_internal_has_no_way_out() {
    require_root!();
    let env = Env::new("tc");
    env.mgr.reconcile(&[]).unwrap();
    env.net("tc-a", "10.213.3.0/24", false);
    env.net("tc-b", "10.213.4.0/24", false);
    env.net("tc-int", "10.213.5.0/24", true);
    let (_, a) = env.ctr(1, "a", &[("tc-a", ep())]);
    let bid = format!("tc2{}", "e".repeat(61));
    let mut pb = BTreeMap::new();
    pb.insert("80/tcp".to_string(), vec![PortBinding::default()]);
    let b = env
        .mgr
        .setup(&ContainerNetworkRequest {
            id: bid,
            name: "b".into(),
            networks: vec![("tc-b".into(), ep())],
            port_bindings: pb,
            ..Default::default()
        })
        .unwrap();
    let hp = b.ports["80/tcp"].as_ref().unwrap()[0].host_port.clone();
    let (_, i) = env.ctr(3, "i", &[("tc-int", ep())]);
    let (na, nb, ni) = (
        a.netns_path.unwrap(),
        b.netns_path.unwrap(),
        i.netns_path.unwrap(),
    );
    assert!(ping(&na, "10.213.3.1"), "a cannot reach its gateway");
    assert!(ping(&nb, "10.213.4.1"), "b cannot reach its gateway");
    assert!(!ping(&na, "10.213.4.2"), "a reaches b on another network");
    assert!(!ping(&nb, "10.213.3.2"), "b reaches a on another network");
    // but b's published port is reachable from a through the host, and from b itself (hairpin)
    let www = env.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello from b\n").unwrap();
    let _srv = ns_spawn(
        &nb,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            www.to_str().unwrap(),
        ],
    );
    // (busybox wget of busybox-static crashes here: nc speaks the HTTP)
    let fetch = |ns: &Path, ip: &str| {
        for _ in 0..30 {
            let mut c = Command::new("nsenter")
                .arg(format!("--net={}", ns.display()))
                .args(["busybox", "nc", "-w", "2", ip, &hp])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // nc exits at once while the server is not up yet: the request then meets a closed
            // pipe, and the loop tries again.
            let _ = c
                .stdin
                .take()
                .unwrap()
                .write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n");
            let out = String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned();
            if out.contains("200 OK") {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        String::new()
    };
    let out = fetch(&na, "10.213.3.1");
    assert!(
        out.contains("hello from b"),
        "a -> published port of b: {out:?}"
    );
    let out = fetch(&nb, "10.213.4.1");
    assert!(
        out.contains("hello from b"),
        "b -> its own published port (hairpin): {out:?}"
    );
    assert!(
        ping(&ni, "10.213.5.1"),
        "internal container cannot reach its own gateway"
    );
    let (_, routes) = ns_run(&ni, &["ip", "route"]);
    assert!(
        !routes.contains("default"),
        "internal network has a default route: {routes}"
    );
    assert!(i.endpoints["tc-int"].gateway.is_empty());
    assert!(!ping(&ni, "10.213.3.2"));
    assert!(!ping(&ni, "10.213.3.1"));
    // a (non-internal) cannot reach into the internal network either
    assert!(!ping(&na, "10.213.5.2"));
    // even with a route put in by hand, the forward chain drops internal traffic
    ns_run(&ni, &["ip", "route", "add", "default", "via", "10.213.5.1"]);
    assert!(
        !ping(&ni, "10.213.3.2"),
        "internal container got out via the host"
    );
}

#[test]
fn reconcile_removes_leftovers_and_readds_missing() {
    require_root!();
    let mut env = Env::new("td");
    env.mgr.reconcile(&[]).unwrap();
    env.net("td-net", "10.213.6.0/24", false);
    let static_ip = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: "10.213.6.50".into(),
            ..Default::default()
        }),
        mac_address: "02:aa:bb:cc:dd:ee".into(),
        ..ep()
    };
    let (id1, c1) = env.ctr(1, "keep", &[("td-net", static_ip)]);
    let (id2, c2) = env.ctr(2, "gone", &[("td-net", ep())]);
    assert_eq!(c1.endpoints["td-net"].ip_address, "10.213.6.50");
    let (_, l) = ns_run(
        c1.netns_path.as_ref().unwrap(),
        &["ip", "-o", "link", "show", "eth0"],
    );
    assert!(l.contains("02:aa:bb:cc:dd:ee"), "{l}");
    let before = veth_names(&env);
    assert_eq!(before.len(), 2);
    // an orphan bridge with our prefix, and the kept container's veth lost
    berth_network::link::ensure_bridge("td-0123456789ab", Ipv4Addr::new(10, 213, 7, 1), 24, None)
        .unwrap();
    // restart: a new manager over the same state, only `keep` still running
    env.reopen();
    let rep = env.mgr.reconcile(std::slice::from_ref(&id1)).unwrap();
    assert_eq!(rep.released_containers, vec![id2.clone()]);
    assert!(
        rep.removed_links.contains(&"td-0123456789ab".to_string()),
        "{rep:?}"
    );
    assert!(!c2.netns_path.as_ref().unwrap().exists());
    assert_eq!(veth_names(&env).len(), 1);
    assert!(ping(c1.netns_path.as_ref().unwrap(), "10.213.6.1"));
    // delete the remaining veth by hand: reconcile puts it back
    for v in veth_names(&env) {
        berth_network::link::delete_link(&v).unwrap();
    }
    assert!(!ping(c1.netns_path.as_ref().unwrap(), "10.213.6.1"));
    let rep = env.mgr.reconcile(std::slice::from_ref(&id1)).unwrap();
    assert_eq!(rep.restored_endpoints.len(), 1, "{rep:?}");
    assert!(
        ping(c1.netns_path.as_ref().unwrap(), "10.213.6.1"),
        "restored veth does not work"
    );
    // nothing duplicates across repeated reconciles
    let once = nft_ruleset();
    env.mgr.reconcile(std::slice::from_ref(&id1)).unwrap();
    assert_eq!(once, nft_ruleset());
    assert_eq!(once.matches("table ip berth_test_td").count(), 1);
    // stray namespace file is removed
    let stray = env.dir.join("netns").join("stray");
    berth_network::create_netns(&stray).unwrap();
    let rep = env.mgr.reconcile(std::slice::from_ref(&id1)).unwrap();
    assert_eq!(rep.removed_netns, vec![stray.clone()]);
    assert!(!stray.exists());
    // the IP of the released container is free again, the static one is still held
    let r = env.mgr.inspect_network("td-net").unwrap();
    assert_eq!(r.containers.len(), 1);
    assert_eq!(r.containers[&id1].ipv4_address, "10.213.6.50/24");
}

#[test]
fn none_mode_connect_disconnect_and_setup_cost() {
    require_root!();
    let env = Env::new("te");
    // --network none: a namespace with only lo, up
    let p = env.dir.join("netns").join("none-test");
    berth_network::create_netns(&p).unwrap();
    let (_, l) = ns_run(&p, &["ip", "-o", "link"]);
    assert_eq!(l.lines().count(), 1, "{l}");
    assert!(l.contains("lo:") && l.contains("UP"), "{l}");
    assert!(ping(&p, "127.0.0.1"));
    berth_network::remove_netns(&p).unwrap();
    assert!(!p.exists());
    berth_network::remove_netns(&p).unwrap();

    env.mgr.reconcile(&[]).unwrap();
    env.net("te-a", "10.213.8.0/24", false);
    env.net("te-b", "10.213.9.0/24", false);
    let (id, c) = env.ctr(1, "multi", &[("te-a", ep())]);
    let ns = c.netns_path.unwrap();
    let e = env
        .mgr
        .connect(
            &id,
            "te-b",
            &EndpointSettings {
                aliases: Some(vec!["bee".into()]),
                ..ep()
            },
        )
        .unwrap();
    assert_eq!(e.ip_address, "10.213.9.2");
    let (_, l) = ns_run(&ns, &["ip", "-o", "-4", "addr"]);
    assert!(l.contains("eth1") && l.contains("10.213.9.2/24"), "{l}");
    let (_, out) = ns_run(&ns, &["busybox", "nslookup", "bee", "10.213.9.1"]);
    assert!(out.contains("10.213.9.2"), "{out}");
    env.mgr.disconnect(&id, "te-b").unwrap();
    let (_, l) = ns_run(&ns, &["ip", "-o", "link"]);
    assert!(!l.contains("eth1"), "{l}");
    assert!(env.mgr.disconnect(&id, "te-b").is_err());
    env.mgr.teardown(&id).unwrap();

    // cost of a container's network: namespace + veth + addresses + route (no published ports)
    let mut times = Vec::new();
    let mut netns_only = Vec::new();
    for i in 0..20u32 {
        let t = Instant::now();
        let (id, _) = env.ctr(100 + i, &format!("bench{i}"), &[("te-a", ep())]);
        times.push(t.elapsed());
        env.mgr.teardown(&id).unwrap();
        let q = env.dir.join("netns").join(format!("bench{i}"));
        let t = Instant::now();
        berth_network::create_netns(&q).unwrap();
        netns_only.push(t.elapsed());
        berth_network::remove_netns(&q).unwrap();
    }
    times.sort();
    netns_only.sort();
    eprintln!(
        "setup (netns + veth + addr + route + state write): median {:?}, min {:?}, max {:?}; create_netns alone: median {:?}",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        netns_only[netns_only.len() / 2]
    );
}

#[test]
fn iptables_fallback_publishes_and_isolates() {
    require_root!();
    if !berth_network::iptables::available() {
        eprintln!("skipped: no iptables-restore");
        return;
    }
    let env = Env::with_firewall("tf", Firewall::Iptables);
    env.mgr.reconcile(&[]).unwrap();
    env.net("tf-a", "10.213.10.0/24", false);
    env.net("tf-b", "10.213.11.0/24", false);
    let id = format!("tf1{}", "d".repeat(61));
    let mut pb = BTreeMap::new();
    pb.insert("80/tcp".to_string(), vec![PortBinding::default()]);
    let a = env
        .mgr
        .setup(&ContainerNetworkRequest {
            id,
            name: "a".into(),
            networks: vec![("tf-a".into(), ep())],
            port_bindings: pb,
            ..Default::default()
        })
        .unwrap();
    let (_, b) = env.ctr(2, "b", &[("tf-b", ep())]);
    let (na, nb) = (a.netns_path.clone().unwrap(), b.netns_path.unwrap());
    let hp = a.ports["80/tcp"].as_ref().unwrap()[0].host_port.clone();
    let www = env.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello from the container\n").unwrap();
    let _srv = ns_spawn(
        &na,
        &[
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            www.to_str().unwrap(),
        ],
    );
    let mut got = String::new();
    for _ in 0..30 {
        if let Ok(s) = http_get(&format!("127.0.0.1:{hp}")) {
            got = s;
            if got.contains("hello") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let save = run("iptables-save", &[]).1;
    assert!(got.contains("hello from the container"), "{got}\n{save}");
    assert!(ping(&na, "10.213.10.1"));
    assert!(!ping(&nb, "10.213.10.2"), "b reaches a on another network");
    assert!(save.contains("-A BERTH_TEST_TF-PORTS"), "{save}");
    env.mgr.shutdown_and_clean().unwrap();
    let save = run("iptables-save", &[]).1;
    assert!(!save.contains("BERTH_TEST_TF"), "{save}");
}
