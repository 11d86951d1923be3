//! Networking through a private berthd with the real docker CLI (and berth's): user networks with DNS by
//! name, published ports from loopback, the bridge gateway and another "machine" (a namespace made
//! here), `none`/`host`/`--internal`, isolation between networks, the `/networks` API's errors, and a
//! leak check after each test (links, nftables table, namespace files).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestDaemon, can_run, network_tag, run_with_timeout};

const BB: &str = "busybox:local";

/// A daemon with busybox imported, and what its network leak check needs.
fn daemon() -> TestDaemon {
    let d = TestDaemon::start();
    d.import_busybox();
    d
}

fn slot(d: &TestDaemon) -> u8 {
    let text = std::fs::read_to_string(d.dir.join("data/network/auto.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["slot"].as_u64().unwrap() as u8
}

/// Asserts nothing of the daemon of `dir` is left in the kernel once it is gone.
fn assert_no_leaks(dir: &Path) {
    let tag = network_tag(&dir.join("data"));
    let links = out(Command::new("ip").args(["-o", "link"]));
    for l in links.lines() {
        assert!(
            !l.contains(&format!("bt{tag}0")) && !l.contains(&format!("b{tag}-")),
            "leaked link: {l}"
        );
    }
    let tables = out(Command::new("nft").args(["list", "tables"]));
    assert!(
        !tables.contains(&format!("berth_{tag}")),
        "leaked nft table: {tables}"
    );
    let ns = dir.join("exec/netns");
    if let Ok(rd) = std::fs::read_dir(&ns) {
        let left: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "leaked netns files: {left:?}");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "leaked mounts under {}",
        dir.display()
    );
}

/// Stops the daemon cleanly (containers removed first) and checks for leaks.
fn finish(mut d: TestDaemon) {
    let ids = d.ok(&["ps", "-aq"]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        d.ok(&args);
    }
    d.terminate();
    // Before the harness' drop sweeps mounts: a clean shutdown itself leaves nothing (no spare
    // namespace half made or not yet unmounted, no container's).
    assert_no_leaks(&d.dir);
    let dir = d.dir.clone();
    drop(d);
    assert_no_leaks(&dir);
}

fn out(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&cmd.output().expect("run").stdout).into_owned()
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends an HTTP GET with busybox nc (in namespace `ns` when given); returns the answer.
fn http_get(ns: Option<&str>, addr: &str, port: u16) -> String {
    let mut cmd = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "/bin/busybox"]);
            c
        }
        None => Command::new("/bin/busybox"),
    };
    cmd.args(["nc", "-w", "3", addr, &port.to_string()]);
    let o = run_with_timeout(
        cmd,
        Some(b"GET /passwd HTTP/1.0\r\n\r\n"),
        Duration::from_secs(10),
    );
    o.stdout
}

/// Retries [`http_get`] until it answers 200 or 10 s pass.
fn http_ok(ns: Option<&str>, addr: &str, port: u16) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if http_get(ns, addr, port).starts_with("HTTP/1.1 200") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn network_api_errors_events_and_cli() {
    if !can_run() {
        return;
    }
    let d = daemon();
    let since = d.ok(&["version", "-f", "{{.Server.Version}}"]);
    let _ = since;
    let ls = d.ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("NETWORK ID"), "{ls}");
    for n in ["bridge", "host", "none"] {
        assert!(ls.contains(&format!("   {n} ")), "{ls}");
    }
    // Create with an explicit subnet, gateway, labels; duplicates and bad input refused.
    let s = slot(&d);
    let subnet = format!("10.216.{s}.0/24");
    let gw = format!("10.216.{s}.254");
    let id = d.ok(&[
        "network",
        "create",
        "--subnet",
        &subnet,
        "--gateway",
        &gw,
        "--label",
        "team=a",
        "nt1",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let o = d.docker(&["network", "create", "nt1"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("network with name nt1 already exists"),
        "{}",
        o.stderr
    );
    let r = d
        .raw("POST", "/networks/create", Some(r#"{"Name":"nt1"}"#))
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    let o = d.docker(&["network", "create", "--subnet", "10.216.0.0/33", "ntbad"]);
    assert_ne!(o.code, 0);
    let o = d.docker(&["network", "create", "--subnet", &subnet, "ntover"]);
    assert_ne!(o.code, 0, "an overlapping subnet must be refused");
    let r = d
        .raw(
            "POST",
            "/networks/create",
            Some(&format!(
                r#"{{"Name":"ntover","IPAM":{{"Config":[{{"Subnet":"{subnet}"}}]}}}}"#
            )),
        )
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    // Inspect and filters.
    let sub = d.ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}} {{.Labels.team}} {{.Driver}}",
        "nt1",
    ]);
    assert_eq!(sub.trim(), format!("{subnet} {gw} a bridge"));
    let f = d.ok(&["network", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(f.trim(), &id[..12]);
    let f = d.ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        "type=custom",
    ]);
    assert_eq!(f.trim(), "nt1");
    let f = d.ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "-f",
        "dangling=true",
    ]);
    assert_eq!(f.trim(), "nt1");
    let o = d.docker(&["network", "inspect", "nosuch"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("network nosuch not found"),
        "{}",
        o.stderr
    );
    // Predefined networks stay.
    let o = d.docker(&["network", "rm", "bridge"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .contains("bridge is a pre-defined network and cannot be removed"),
        "{}",
        o.stderr
    );
    let r = d.raw("DELETE", "/networks/host", None).unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    // A static IP and an alias; removal refused while attached.
    let ip = format!("10.216.{s}.10");
    let cid = d.ok(&[
        "run",
        "-d",
        "--name",
        "web1",
        "--network",
        "nt1",
        "--ip",
        &ip,
        "--network-alias",
        "www",
        BB,
        "sleep",
        "300",
    ]);
    let cid = cid.trim().to_string();
    let got = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.nt1.IPAddress}} {{.NetworkSettings.Networks.nt1.Gateway}} {{.NetworkSettings.Networks.nt1.IPPrefixLen}}",
        "web1",
    ]);
    assert_eq!(got.trim(), format!("{ip} {gw} 24"));
    let o = d.docker(&["network", "rm", "nt1"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("has active endpoints"), "{}", o.stderr);
    let ins = d.ok(&["network", "inspect", "-f", "{{json .Containers}}", "nt1"]);
    assert!(
        ins.contains(&cid) && ins.contains(&format!("{ip}/24")),
        "{ins}"
    );
    // Connect to a second network while running, then disconnect.
    d.ok(&["network", "create", "nt2"]);
    d.ok(&["network", "connect", "--alias", "w2", "nt2", "web1"]);
    let nets = d.ok(&[
        "inspect",
        "-f",
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
        "web1",
    ]);
    assert_eq!(nets.trim(), "nt1 nt2");
    let links = d.ok(&["exec", "web1", "ip", "-o", "-4", "addr"]);
    assert!(links.contains("eth1"), "{links}");
    let o = d.docker(&["network", "connect", "nt2", "web1"]);
    assert_ne!(o.code, 0);
    d.ok(&["network", "disconnect", "nt2", "web1"]);
    let links = d.ok(&["exec", "web1", "ip", "-o", "-4", "addr"]);
    assert!(!links.contains("eth1"), "{links}");
    // Events.
    let ev = d.ok(&[
        "events",
        "--since",
        "1",
        "--until",
        &format!("{}", chrono_now() + 1),
        "--filter",
        "type=network",
        "--format",
        "{{.Action}} {{.Actor.Attributes.name}}",
    ]);
    for want in [
        "create nt1",
        "create nt2",
        "connect nt1",
        "connect nt2",
        "disconnect nt2",
    ] {
        assert!(ev.contains(want), "missing {want:?} in {ev}");
    }
    // Prune removes only unused networks; rm after the container is gone.
    let p = d.ok(&["network", "prune", "-f"]);
    assert_eq!(p, "Deleted Networks:\nnt2\n\n");
    d.ok(&["rm", "-f", "web1"]);
    assert_eq!(d.ok(&["network", "rm", "nt1"]).trim(), "nt1");
    let ev = d.ok(&[
        "events",
        "--since",
        "1",
        "--until",
        &format!("{}", chrono_now() + 1),
        "--filter",
        "type=network",
        "--filter",
        "event=destroy",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    assert_eq!(ev.split_whitespace().collect::<Vec<_>>(), ["nt2", "nt1"]);
    // The berth CLI against the same daemon.
    let berth = berth_bin();
    let bo = |args: &[&str]| {
        let mut c = Command::new(&berth);
        c.args(args)
            .env("BERTH_HOST", format!("unix://{}", d.sock.display()));
        c.env("DOCKER_HOST", format!("unix://{}", d.sock.display()));
        run_with_timeout(c, None, Duration::from_secs(30))
    };
    let o = bo(&["network", "create", "bn1"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim().len(), 64);
    let o = bo(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert_eq!(
        o.stdout,
        "bn1 bridge\nbridge bridge\nhost host\nnone null\n"
    );
    let o = bo(&["network", "create", "bn1"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("network with name bn1 already exists"),
        "{}",
        o.stderr
    );
    let o = bo(&["network", "rm", "bridge"]);
    assert_eq!(o.code, 1);
    let o = bo(&["network", "rm", "bn1"]);
    assert_eq!(o.stdout, "bn1\n", "{}", o.stderr);
    finish(d);
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The berth CLI next to berthd (built when missing).
fn berth_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_berthd")).with_file_name("berth");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "berth"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

#[test]
fn dns_by_name_published_ports_none_host_internal_isolation() {
    if !can_run() {
        return;
    }
    let d = daemon();
    d.ok(&["network", "create", "na"]);
    d.ok(&["network", "create", "nb"]);
    d.ok(&["network", "create", "--internal", "ni"]);
    // Two containers on a user network reach each other by name and alias.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "na",
        "--network-alias",
        "db",
        BB,
        "sh",
        "-c",
        "while true; do echo pong | nc -l -p 7000; done",
    ]);
    let o = d.ok(&[
        "run", "--rm", "--network", "na", BB, "sh", "-c",
        "for n in srv db; do for i in 1 2 3 4 5 6 7 8 9; do nc $n 7000 </dev/null && break; sleep 0.2; done; done",
    ]);
    assert_eq!(o, "pong\npong\n");
    let rc = d.ok(&[
        "run",
        "--rm",
        "--network",
        "na",
        BB,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(rc.contains("options ndots:0"), "{rc}");
    // Another network cannot reach it, by name or by address.
    let srv_ip = d.ok(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.na.IPAddress}}",
        "srv",
    ]);
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "nb",
        BB,
        "nc",
        "-w",
        "2",
        srv_ip.trim(),
        "7000",
    ]);
    assert!(
        !o.stdout.contains("pong"),
        "other network reached srv: {o:?}"
    );
    // Published port: loopback, the bridge gateway (another host address) and a "remote machine".
    let port = free_port();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{port}:80"),
        BB,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    assert!(
        http_ok(None, "127.0.0.1", port),
        "no answer on 127.0.0.1:{port}"
    );
    let gw = d.ok(&["inspect", "-f", "{{.NetworkSettings.Gateway}}", "web"]);
    let gw = gw.trim().to_string();
    assert!(http_ok(None, &gw, port), "no answer on {gw}:{port}");
    assert_eq!(
        d.ok(&["port", "web"]),
        format!("80/tcp -> 0.0.0.0:{port}\n")
    );
    let ps = d.ok(&["ps", "--format", "{{.Names}} {{.Ports}}", "-f", "name=web"]);
    assert_eq!(ps.trim(), format!("web 0.0.0.0:{port}->80/tcp"));
    let ports = d.ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", "web"]);
    assert_eq!(
        ports.trim(),
        format!(r#"{{"80/tcp":[{{"HostIp":"0.0.0.0","HostPort":"{port}"}}]}}"#)
    );
    let ip = d.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    assert!(ip.trim().starts_with("10.213."), "{ip}");
    {
        let remote = Remote::new(&format!("brm{}", std::process::id() % 100000), slot(&d));
        assert!(
            http_ok(Some(&remote.ns), &remote.host_ip, port),
            "no answer from another machine"
        );
    }
    // --network none: only lo, up.
    let o = d.ok(&["run", "--rm", "--network", "none", BB, "ip", "-o", "link"]);
    assert_eq!(o.lines().count(), 1, "{o}");
    assert!(o.contains("lo:") && o.contains("UP"), "{o}");
    // --network host: the host's interfaces (this daemon's bridge among them).
    let tag = network_tag(&d.dir.join("data"));
    let o = d.ok(&["run", "--rm", "--network", "host", BB, "ip", "-o", "link"]);
    assert!(o.contains(&format!("bt{tag}0")), "{o}");
    // --internal: no way out (the host's listener is reachable from a normal network, not from it).
    let hp = free_port();
    let mut listener = Command::new("/bin/busybox")
        .args([
            "nc",
            "-ll",
            "-p",
            &hp.to_string(),
            "-e",
            "/bin/busybox",
            "echo",
            "out",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let o = d.ok(&[
        "run",
        "--rm",
        "--network",
        "na",
        BB,
        "nc",
        "-w",
        "2",
        &gw,
        &hp.to_string(),
    ]);
    assert_eq!(
        o.trim(),
        "out",
        "control: a normal network reaches the host"
    );
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "ni",
        BB,
        "nc",
        "-w",
        "2",
        &gw,
        &hp.to_string(),
    ]);
    assert!(!o.stdout.contains("out"), "internal network got out: {o:?}");
    let _ = listener.kill();
    let _ = listener.wait();
    // A stopped container's endpoints are gone from the kernel; restart sets them up again.
    d.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(d.ok(&["port", "web"]), "");
    d.ok(&["start", "web"]);
    assert!(http_ok(None, "127.0.0.1", port), "no answer after restart");
    finish(d);
}

/// Another "machine": a namespace joined to the host by a veth pair with its own /30.
struct Remote {
    ns: String,
    host_ip: String,
    veth: String,
}

impl Remote {
    fn new(ns: &str, slot: u8) -> Remote {
        let veth = format!("{ns}h");
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
        let _ = Command::new("ip").args(["link", "del", &veth]).status();
        let r = Remote {
            ns: ns.to_string(),
            host_ip: format!("10.217.{slot}.1"),
            veth: veth.clone(),
        };
        let remote_ip = format!("10.217.{slot}.2/30");
        let peer = format!("{ns}r");
        for args in [
            vec!["netns", "add", ns],
            vec!["link", "add", &veth, "type", "veth", "peer", "name", &peer],
            vec!["link", "set", &peer, "netns", ns],
            vec!["addr", "add", &format!("{}/30", r.host_ip), "dev", &veth],
            vec!["link", "set", &veth, "up"],
            vec!["-n", ns, "addr", "add", &remote_ip, "dev", &peer],
            vec!["-n", ns, "link", "set", &peer, "up"],
            vec!["-n", ns, "link", "set", "lo", "up"],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        r
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn containers_keep_their_network_across_a_daemon_restart() {
    if !can_run() {
        return;
    }
    let mut d = daemon();
    d.ok(&["network", "create", "nr"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "nr",
        BB,
        "sh",
        "-c",
        "while true; do echo still | nc -l -p 7000; done",
    ]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "gone",
        "--network",
        "nr",
        BB,
        "sleep",
        "300",
    ]);
    d.kill9();
    d.spawn();
    let o = d.ok(&[
        "run",
        "--rm",
        "--network",
        "nr",
        BB,
        "sh",
        "-c",
        "for i in 1 2 3 4 5; do nc keep 7000 </dev/null && break; sleep 0.2; done",
    ]);
    assert_eq!(o, "still\n");
    // A removed container's name no longer resolves.
    d.ok(&["rm", "-f", "gone"]);
    let o = d.docker(&["run", "--rm", "--network", "nr", BB, "nslookup", "gone"]);
    assert!(!o.stdout.contains("Address 1") || o.code != 0, "{o:?}");
    finish(d);
}

#[test]
fn daemon_network_config_keys_and_multi_network_create() {
    if !can_run() {
        return;
    }
    let mut d = daemon();
    let s = slot(&d);
    let br = format!("bcf{}", std::process::id() % 100000);
    let table = format!("bcft{}", std::process::id());
    d.terminate();
    std::fs::write(
        d.dir.join("daemon.json"),
        format!(
            r#"{{"bridge":"{br}","bip":"10.218.{s}.1/24","nft-table":"{table}","default-address-pools":[{{"base":"10.219.{s}.0/24","size":26}}]}}"#
        ),
    )
    .unwrap();
    d.spawn();
    let addr = out(Command::new("ip").args(["-o", "-4", "addr", "show", "dev", &br]));
    assert!(addr.contains(&format!("10.218.{s}.1/24")), "{addr}");
    let tables = out(Command::new("nft").args(["list", "tables"]));
    assert!(tables.contains(&table), "{tables}");
    let o = d.ok(&["run", "--rm", BB, "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(o.contains(&format!("10.218.{s}.")), "{o}");
    d.ok(&["network", "create", "m1"]);
    d.ok(&["network", "create", "m2"]);
    let sub = d.ok(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
        "m2",
    ]);
    assert!(sub.starts_with(&format!("10.219.{s}.")), "{sub}");
    // Two networks in one create (API 1.44), both joined at start.
    let r = d
        .raw(
            "POST",
            "/v1.44/containers/create?name=multi",
            Some(&format!(
                r#"{{"Image":"{BB}","Cmd":["sleep","300"],"HostConfig":{{"NetworkMode":"m1"}},"NetworkingConfig":{{"EndpointsConfig":{{"m1":{{}},"m2":{{"Aliases":["two"]}}}}}}}}"#
            )),
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    d.ok(&["start", "multi"]);
    let o = d.ok(&["exec", "multi", "ip", "-o", "-4", "addr"]);
    assert!(o.contains("eth0") && o.contains("eth1"), "{o}");
    let o = d.ok(&[
        "run",
        "--rm",
        "--network",
        "m2",
        BB,
        "sh",
        "-c",
        "ping -c1 -W2 two >/dev/null && echo reached",
    ]);
    assert_eq!(o.trim(), "reached");
    finish(d);
    let links = out(Command::new("ip").args(["-o", "link"]));
    assert!(!links.contains(&br), "{links}");
    let tables = out(Command::new("nft").args(["list", "tables"]));
    assert!(!tables.contains(&table), "{tables}");
}
