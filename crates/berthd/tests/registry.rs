//! Pull and push with the docker CLI through berthd, against Debian's `docker-registry` on loopback.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_image::Digest;
use common::{TestDaemon, can_run};

struct Registry {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Registry {
    fn start(dir: &std::path::Path) -> Option<Registry> {
        Registry::start_with(dir, "registry", "")
    }

    /// A registry under `dir/<name>` with `extra` appended to its config (e.g. an `auth:` section).
    fn start_with(dir: &std::path::Path, name: &str, extra: &str) -> Option<Registry> {
        let bin = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Registry { child, dir, port };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private berthd and a registry, or `None` (with the reason on stderr) where they cannot run.
fn daemon_and_registry() -> Option<(TestDaemon, Registry)> {
    if !can_run() {
        return None;
    }
    let d = TestDaemon::start();
    let Some(reg) = Registry::start(&d.dir) else {
        eprintln!("skipping: no docker-registry (apt-get install docker-registry)");
        return None;
    };
    Some((d, reg))
}

#[test]
fn push_then_pull_and_run() {
    let Some((d, reg)) = daemon_and_registry() else {
        return;
    };
    d.import_busybox();
    let name = format!("127.0.0.1:{}/team/bb:1", reg.port);
    d.ok(&["tag", "busybox:local", &name]);
    let out = d.ok(&["push", &name]);
    assert!(out.contains("digest: sha256:"), "{out}");
    d.ok(&["rmi", &name]);
    d.ok(&["rmi", "busybox:local"]);
    let out = d.ok(&["pull", &name]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let out = d.ok(&["run", "--rm", &name, "echo", "pulled"]);
    assert_eq!(out, "pulled\n");
    let out = d.ok(&["pull", &name]);
    assert!(out.contains("Image is up to date"), "{out}");
    // Unknown repository: the CLI's "Unable to find image" then the daemon's error; exit 125.
    let missing = format!("127.0.0.1:{}/nosuch:1", reg.port);
    let o = d.docker(&["run", "--rm", &missing]);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("Unable to find image"), "{}", o.stderr);
    assert!(
        o.stderr.contains("not found") || o.stderr.contains("denied"),
        "{}",
        o.stderr
    );
}

/// A TCP proxy in front of the registry that counts the bytes it returns and can stall the response
/// to one blob after its first bytes: a pull through it stays in flight for as long as the test likes.
struct StallProxy {
    port: u16,
    stall: Arc<Mutex<Option<String>>>,
    /// Stall every blob upload (`PATCH`) after its first bytes: a push stays in flight.
    stall_uploads: Arc<AtomicBool>,
    /// Uploads stalled so far.
    stalled_uploads: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Bytes of a stalled response that still get through.
const STALL_AFTER: u64 = 256 * 1024;

impl StallProxy {
    fn start(upstream: u16) -> StallProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = StallProxy {
            port,
            stall: Arc::new(Mutex::new(None)),
            stall_uploads: Arc::new(AtomicBool::new(false)),
            stalled_uploads: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (stall, served, stop) = (p.stall.clone(), p.served.clone(), p.stop.clone());
        let (stall_up, stalled_up) = (p.stall_uploads.clone(), p.stalled_uploads.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = c else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                // Where the stalled response stops (bytes returned on this connection), once asked.
                let cut = Arc::new(Mutex::new(None::<u64>));
                let returned = Arc::new(AtomicU64::new(0));
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (stall, cut2, returned2) = (stall.clone(), cut.clone(), returned.clone());
                let (stall_up, stalled_up, stop2) =
                    (stall_up.clone(), stalled_up.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    // Request bytes forwarded, and where a stalled upload stops.
                    let (mut sent, mut up_cut) = (0u64, None::<u64>);
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(blob) = stall.lock().unwrap().as_deref()
                            && text.starts_with("GET ")
                            && text.contains(blob)
                        {
                            *cut2.lock().unwrap() =
                                Some(returned2.load(Ordering::SeqCst) + STALL_AFTER);
                        }
                        if up_cut.is_none()
                            && stall_up.load(Ordering::SeqCst)
                            && text.starts_with("PATCH ")
                        {
                            up_cut = Some(sent + STALL_AFTER);
                        }
                        let room = up_cut.map_or(n as u64, |c| c.saturating_sub(sent));
                        let m = (n as u64).min(room) as usize;
                        if s_out.write_all(&buf[..m]).is_err() {
                            break;
                        }
                        sent += m as u64;
                        if m < n {
                            // Stalled: read no more (the sender blocks) until the test ends.
                            stalled_up.fetch_add(1, Ordering::SeqCst);
                            while !stop2.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                let (served, stop) = (served.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let limit = *cut.lock().unwrap();
                        let sent = returned.load(Ordering::SeqCst);
                        let room = limit.map_or(buf.len() as u64, |l| l.saturating_sub(sent));
                        if room == 0 {
                            // Stalled: hold the connection open, silent, until the test ends.
                            while !stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            break;
                        }
                        let want = (buf.len() as u64).min(room) as usize;
                        match s_in.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                returned.fetch_add(n as u64, Ordering::SeqCst);
                                served.fetch_add(n as u64, Ordering::SeqCst);
                            }
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        p
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Deterministic incompressible bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// A docker-archive of `tag`: busybox, then one layer per entry of `sizes` with `/lN/data` (that many
/// random bytes) and `/lN/marker`. Returns the archive and the layers' diff IDs.
fn multi_layer_archive(
    dir: &std::path::Path,
    tag: &str,
    sizes: &[usize],
) -> (Vec<u8>, Vec<Digest>) {
    let mut layers = vec![std::fs::read(common::busybox_tar(dir)).unwrap()];
    for (i, &n) in sizes.iter().enumerate() {
        let n_i = i + 1;
        let data = noise(n, 0x9e37_79b9_7f4a_7c15 ^ n_i as u64);
        let marker = format!("layer {n_i}\n");
        layers.push(tar_of(&[
            (&format!("l{n_i}/data"), &data),
            (&format!("l{n_i}/marker"), marker.as_bytes()),
        ]));
    }
    let diff_ids: Vec<Digest> = layers.iter().map(|l| Digest::of_bytes(l)).collect();
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    });
    let names: Vec<String> = (0..layers.len()).map(|i| format!("l{i}.tar")).collect();
    let manifest =
        serde_json::json!([{"Config": "config.json", "RepoTags": [tag], "Layers": names}]);
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut files: Vec<(&str, &[u8])> =
        vec![("manifest.json", &manifest), ("config.json", &config)];
    for (n, l) in names.iter().zip(&layers) {
        files.push((n, l));
    }
    (tar_of(&files), diff_ids)
}

/// Names under `dir` (recursively) that are leftovers of unfinished work.
fn temp_debris(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            out.push(e.path().display().to_string());
        }
    }
    out
}

fn image_store_debris(d: &TestDaemon) -> Vec<String> {
    let root = d.dir.join("data/image");
    ["", "blobs/sha256", "layers", "containers"]
        .iter()
        .flat_map(|s| temp_debris(&root.join(s)))
        .collect()
}

#[test]
fn kill9_during_pull_and_load_leaves_a_consistent_store() {
    let Some((mut d, reg)) = daemon_and_registry() else {
        return;
    };
    let (archive, _) = multi_layer_archive(&d.dir, "big:1", &[3 << 20, 2 << 20, 6 << 20]);
    let o = d.docker_in(&["load"], Some(&archive));
    assert_eq!(o.code, 0, "{o:?}");
    let pushed = format!("127.0.0.1:{}/team/big:1", reg.port);
    d.ok(&["tag", "big:1", &pushed]);
    d.ok(&["push", &pushed]);
    d.ok(&["rmi", "big:1", &pushed]);
    assert!(
        d.ok(&["images", "-q"]).trim().lines().count() <= 1,
        "only hello-world is left"
    );

    // The top layer as pushed (its digest names the blob the proxy stalls).
    let reg_dir = reg
        .dir
        .join("data/docker/registry/v2/repositories/team/big/_manifests/tags/1/current/link");
    let mdigest = std::fs::read_to_string(&reg_dir).unwrap();
    let mpath = reg.dir.join(format!(
        "data/docker/registry/v2/blobs/sha256/{}/{}/data",
        &mdigest[7..9],
        &mdigest[7..]
    ));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mpath).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), 4);
    let top = layers[3]["digest"].as_str().unwrap().to_string();
    let total: u64 = layers.iter().map(|l| l["size"].as_u64().unwrap()).sum();

    let proxy = StallProxy::start(reg.port);
    *proxy.stall.lock().unwrap() = Some(top.clone());
    let via = format!("127.0.0.1:{}/team/big:1", proxy.port);
    // The pull through the API, its JSON progress read as it streams.
    let mut api = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    // A safety net against a hung pull, not a speed check.
    api.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        api,
        "POST /images/create?fromImage=127.0.0.1:{}/team/big&tag=1 HTTP/1.1\r\nHost: berth\r\nContent-Length: 0\r\n\r\n",
        proxy.port
    )
    .unwrap();
    // Wait until the three lower layers are in and the top one is downloading (it never finishes).
    let short = &top[7..19];
    let downloading = r#""status":"Downloading","progressDetail":{"current":"#;
    let top_id = format!(r#""id":"{short}""#);
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    while seen.matches(r#""status":"Pull complete""#).count() < 3
        || !seen
            .lines()
            .any(|l| l.contains(downloading) && l.contains(&top_id))
    {
        match api.read(&mut buf) {
            Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => panic!("pull ended early:\n{seen}\nberthd log:\n{}", d.log()),
        }
    }
    assert!(
        !seen
            .lines()
            .any(|l| l.contains("Pull complete") && l.contains(&top_id)),
        "{seen}"
    );
    d.kill9();
    drop(api);

    d.spawn();
    // No half image; what was unpacked for the top layer is gone.
    assert!(!d.ok(&["images"]).contains("team/big"));
    let o = d.docker(&["image", "inspect", &via]);
    assert_ne!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("No such image"), "{}", o.stderr);
    assert_eq!(image_store_debris(&d), Vec::<String>::new());
    assert!(d.log().contains("kept 3 verified layers"), "{}", d.log());

    // The re-pull fetches only the top layer.
    *proxy.stall.lock().unwrap() = None;
    let before = proxy.served.load(Ordering::SeqCst);
    let out = d.ok(&["pull", &via]);
    let fetched = proxy.served.load(Ordering::SeqCst) - before;
    assert_eq!(out.matches("Already exists").count(), 3, "{out}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert!(fetched < total, "fetched {fetched} of {total} bytes");
    let out = d.ok(&["run", "--rm", &via, "cat", "/l1/marker", "/l3/marker"]);
    assert_eq!(out, "layer 1\nlayer 3\n");
    let leases = std::fs::read_dir(d.dir.join("data/image/leases"))
        .unwrap()
        .count();
    assert_eq!(leases, 0);

    // `load` killed while the archive streams in: nothing of it after the restart, and it loads again.
    let (archive, _) = multi_layer_archive(&d.dir, "other:1", &[1 << 20, 4 << 20]);
    {
        let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
        let head = format!(
            "POST /images/load HTTP/1.1\r\nHost: berth\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
            archive.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&archive[..archive.len() * 3 / 4]).unwrap();
        // The daemon has the bytes once the spool holds them; give it no more.
        let spool = d.dir.join("data/image");
        let t0 = Instant::now();
        while temp_debris(&spool).is_empty() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        d.kill9();
    }
    d.spawn();
    assert!(!d.ok(&["images"]).contains("other"));
    assert_eq!(image_store_debris(&d), Vec::<String>::new());
    let o = d.docker_in(&["load"], Some(&archive));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Loaded image: other:1"), "{}", o.stdout);
    d.ok(&["image", "inspect", "other:1"]);
}

/// The names in `dir`.
fn entries(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a crash may not change in the image store: its layers and blobs, and the images it lists.
#[derive(Debug, PartialEq)]
struct StoreState {
    layers: std::collections::BTreeSet<String>,
    blobs: std::collections::BTreeSet<String>,
    /// `ID name:tag` lines, sorted.
    images: Vec<String>,
}

fn store_state(d: &TestDaemon) -> StoreState {
    let root = d.dir.join("data/image");
    StoreState {
        layers: entries(&root.join("layers")),
        blobs: entries(&root.join("blobs/sha256")),
        images: {
            let out = d.ok(&[
                "images",
                "-a",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.Repository}}:{{.Tag}}",
            ]);
            let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
            lines.sort();
            lines
        },
    }
}

/// Nothing left by unfinished work: no temp files, no lease.
fn assert_clean_store(d: &TestDaemon) {
    assert_eq!(image_store_debris(d), Vec::<String>::new(), "{}", d.log());
    assert_eq!(
        entries(&d.dir.join("data/image/leases")),
        Default::default(),
        "{}",
        d.log()
    );
}

/// Where a commit is (what the store shows of it).
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// `image/commit.tmp-*`: the diff tar being written.
    DiffTar,
    /// `layers/*.tmp-*`: the layer being unpacked.
    Unpacking,
    /// A new layer renamed into place (the image's metadata comes next).
    LayerInPlace,
}

/// `commit` of a container with ~64 MiB in its writable layer, killed with SIGKILL at several stages
/// (diff tar being written, layer being unpacked — at once and later —, the layer just renamed into
/// place): after each restart either the commit finished (its tagged image is whole and runs) or nothing
/// of it is left — no dangling image, layer, blob, temp file or lease. The container keeps its changes
/// and a last commit works.
#[test]
fn kill9_during_commit_leaves_no_half_image() {
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    d.ok(&[
        "run",
        "--name",
        "big",
        "busybox:local",
        "sh",
        "-c",
        "mkdir /big && for i in $(seq 1 32); do dd if=/dev/urandom of=/big/f$i bs=1M count=2 2>/dev/null; done && echo changed > /big/marker",
    ]);
    let root = d.dir.join("data/image");
    let before = store_state(&d);
    let has_tmp = |sub: &str| !temp_debris(&root.join(sub)).is_empty();
    let reached = |stage: Stage| match stage {
        Stage::DiffTar => has_tmp(""),
        Stage::Unpacking => has_tmp("layers"),
        Stage::LayerInPlace => entries(&root.join("layers"))
            .iter()
            .any(|l| !l.contains(".tmp-") && !before.layers.contains(l)),
    };
    // (stage, delay in ms after it is seen)
    let points = [
        (Stage::DiffTar, 0),
        (Stage::Unpacking, 0),
        (Stage::Unpacking, 300),
        (Stage::Unpacking, 1000),
        (Stage::LayerInPlace, 0),
    ];
    let mut caught = 0;
    for (stage, delay) in points {
        let at = format!("{delay} ms into {stage:?}");
        let mut api = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
        write!(
            api,
            "POST /commit?container=big&repo=snap&tag=1 HTTP/1.1\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .unwrap();
        api.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let mut answered = false;
        while !reached(stage) && t0.elapsed() < Duration::from_secs(30) {
            if api.read(&mut [0u8; 512]).is_ok_and(|n| n > 0) {
                answered = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        drop(api);
        d.spawn();
        assert_clean_store(&d);
        d.ok(&["container", "inspect", "big"]);
        if d.docker(&["image", "inspect", "snap:1"]).code == 0 {
            // Finished before the kill: the whole image, which runs; removing it restores the store.
            eprintln!("kill {at}: the commit had finished (answered: {answered})");
            let out = d.ok(&["run", "--rm", "snap:1", "cat", "/big/marker"]);
            assert_eq!(out, "changed\n");
            d.ok(&["rmi", "snap:1"]);
        } else {
            eprintln!("kill {at}: no image");
            assert!(!answered, "the commit answered but its image is gone");
            caught += 1;
        }
        assert_eq!(store_state(&d), before, "after a kill {at}");
    }
    assert!(caught > 0, "no kill point caught the commit mid-way");
    // The container still has its changes: a commit now makes them an image.
    d.ok(&["commit", "big", "snap:2"]);
    let out = d.ok(&[
        "run",
        "--rm",
        "snap:2",
        "sh",
        "-c",
        "cat /big/marker; ls /big | wc -l",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["changed", "33"]
    );
}

/// `push` killed with SIGKILL while its layer uploads stall (a proxy stops forwarding them): after the
/// restart the local store is as before (the image runs, nothing leaked), a re-push completes and a
/// fresh pull of what it pushed runs.
#[test]
fn kill9_during_push_keeps_the_store_and_pushes_again() {
    let Some((mut d, reg)) = daemon_and_registry() else {
        return;
    };
    let (archive, _) = multi_layer_archive(&d.dir, "up:1", &[3 << 20, 2 << 20]);
    let o = d.docker_in(&["load"], Some(&archive));
    assert_eq!(o.code, 0, "{o:?}");
    let proxy = StallProxy::start(reg.port);
    proxy.stall_uploads.store(true, Ordering::SeqCst);
    let via = format!("127.0.0.1:{}/team/up", proxy.port);
    let tagged = format!("{via}:1");
    d.ok(&["tag", "up:1", &tagged]);
    let before = store_state(&d);
    let mut api = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    write!(
        api,
        "POST /images/{via}/push?tag=1 HTTP/1.1\r\nHost: berth\r\nX-Registry-Auth: e30=\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let t0 = Instant::now();
    while proxy.stalled_uploads.load(Ordering::SeqCst) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no upload started; berthd log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill9();
    drop(api);

    d.spawn();
    assert_clean_store(&d);
    assert_eq!(store_state(&d), before);
    let out = d.ok(&["run", "--rm", &tagged, "cat", "/l2/marker"]);
    assert_eq!(out, "layer 2\n");

    proxy.stall_uploads.store(false, Ordering::SeqCst);
    let out = d.ok(&["push", &tagged]);
    assert!(out.contains("digest: sha256:"), "{out}");
    d.ok(&["rmi", &tagged, "up:1"]);
    let out = d.ok(&["pull", &tagged]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert_clean_store(&d);
    let out = d.ok(&["run", "--rm", &tagged, "cat", "/l1/marker", "/l2/marker"]);
    assert_eq!(out, "layer 1\nlayer 2\n");
}

/// The berth CLI next to berthd, built once per test run (it is another package of the workspace,
/// which `cargo test -p berthd` does not rebuild).
fn berth_bin() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "berth"])
            .status()
            .unwrap();
        assert!(st.success(), "building berth failed");
    });
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_berthd")).with_file_name("berth")
}

/// Runs the berth CLI against `d` with `DOCKER_CONFIG` of the test (and `extra` env) and returns it.
fn berth(
    d: &TestDaemon,
    args: &[&str],
    stdin: Option<&[u8]>,
    extra: &[(&str, &str)],
) -> common::Out {
    let mut cmd = Command::new(berth_bin());
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .env("DOCKER_CONFIG", d.dir.join("docker-config"))
        .env_remove("BERTH_HOST")
        .env_remove("DOCKER_CONTEXT");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    common::run_with_timeout(cmd, stdin, Duration::from_secs(120))
}

#[test]
fn pull_all_tags_with_both_clis() {
    let Some((d, reg)) = daemon_and_registry() else {
        return;
    };
    d.import_busybox();
    let repo = format!("127.0.0.1:{}/team/multi", reg.port);
    let (archive, _) = multi_layer_archive(&d.dir, "two:1", &[64 << 10]);
    let o = d.docker_in(&["load"], Some(&archive));
    assert_eq!(o.code, 0, "{o:?}");
    d.ok(&["tag", "busybox:local", &format!("{repo}:1")]);
    d.ok(&["tag", "two:1", &format!("{repo}:2")]);
    // A repository without tag pushes all its tags.
    let out = d.ok(&["push", "--all-tags", &repo]);
    assert_eq!(out.matches(": digest: sha256:").count(), 2, "{out}");
    let gone = [
        format!("{repo}:1"),
        format!("{repo}:2"),
        "two:1".into(),
        "busybox:local".into(),
    ];
    let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
    let rmi = |names: &[&str]| {
        let mut args = vec!["rmi"];
        args.extend_from_slice(names);
        d.ok(&args);
    };
    rmi(&gone);

    let out = d.ok(&["pull", "-a", &repo]);
    for want in [
        "1: Pulling from team/multi",
        "2: Pulling from team/multi",
        &format!("Status: Downloaded newer image for {repo}\n"),
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    assert_eq!(out.matches("Digest: sha256:").count(), 2, "{out}");
    assert_eq!(out.lines().last(), Some(repo.as_str()), "{out}");
    let tags = d.ok(&["images", "--format", "{{.Tag}}", &repo]);
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort();
    assert_eq!(tags, vec!["1", "2"]);
    // Pulled again: up to date.
    let out = d.ok(&["pull", "--all-tags", &repo]);
    assert!(
        out.contains(&format!("Status: Image is up to date for {repo}\n")),
        "{out}"
    );
    let o = d.docker(&["pull", "-a", &format!("{repo}:1")]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("tag can't be used with --all-tags/-a"),
        "{o:?}"
    );

    // The berth CLI.
    rmi(&[&format!("{repo}:1"), &format!("{repo}:2")]);
    let o = berth(&d, &["pull", "-a", &repo], None, &[]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("2: Pulling from team/multi"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains(&format!("Status: Downloaded newer image for {repo}\n")),
        "{}",
        o.stdout
    );
    let tags = d.ok(&["images", "--format", "{{.Tag}}", &repo]);
    assert_eq!(tags.lines().count(), 2, "{tags}");
    let o = berth(&d, &["pull", "-a", &format!("{repo}:1")], None, &[]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("tag can't be used with --all-tags/-a"),
        "{o:?}"
    );
}

/// A credential helper (python) keeping one JSON file per server under `store`.
const HELPER: &str = r#"#!/usr/bin/env python3
import hashlib, json, os, sys
store = STORE
def path(server): return os.path.join(store, hashlib.sha256(server.encode()).hexdigest())
action, data = sys.argv[1], sys.stdin.read().strip()
if action == "store":
    c = json.loads(data)
    open(path(c["ServerURL"]), "w").write(json.dumps(c))
elif action == "get":
    if not os.path.exists(path(data)):
        print("credentials not found in native keychain"); sys.exit(1)
    print(open(path(data)).read())
elif action == "erase":
    if not os.path.exists(path(data)):
        print("credentials not found in native keychain"); sys.exit(1)
    os.remove(path(data))
"#;

#[test]
fn credential_helpers_for_login_push_pull_logout() {
    let Some((d, _plain)) = daemon_and_registry() else {
        return;
    };
    if Command::new("htpasswd").arg("-h").output().is_err() {
        eprintln!("skipping: no htpasswd (apt-get install apache2-utils)");
        return;
    }
    let htpasswd = d.dir.join("htpasswd");
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .unwrap();
    std::fs::write(&htpasswd, &o.stdout).unwrap();
    let auth = format!(
        "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
        htpasswd.display()
    );
    let reg = Registry::start_with(&d.dir, "authreg", &auth).unwrap();
    let server = format!("127.0.0.1:{}", reg.port);
    // The helper, first on PATH.
    let bin = d.dir.join("helper-bin");
    let store = d.dir.join("helper-store");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&store).unwrap();
    let helper = bin.join("docker-credential-berthtest");
    // Written by `install` in a child process: an executable this (multithreaded) test process
    // held open for writing could be inherited by another test's fork and fail with ETXTBSY.
    let src = d.dir.join("helper.src");
    std::fs::write(
        &src,
        HELPER.replace("STORE", &format!("{:?}", store.display().to_string())),
    )
    .unwrap();
    let st = std::process::Command::new("install")
        .args(["-m", "755"])
        .arg(&src)
        .arg(&helper)
        .status()
        .unwrap();
    assert!(st.success());
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("PATH", path.as_str())];
    let config = d.dir.join("docker-config/config.json");
    let stored = || std::fs::read_dir(&store).unwrap().count();

    // credsStore: login stores through the helper; config.json keeps only an empty entry.
    std::fs::write(&config, r#"{"credsStore": "berthtest"}"#).unwrap();
    let o = berth(
        &d,
        &["login", &server, "-u", "alice", "--password-stdin"],
        Some(b"s3cret\n"),
        &env,
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Login Succeeded"), "{o:?}");
    assert!(!o.stderr.contains("unencrypted"), "{o:?}");
    assert_eq!(stored(), 1);
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(cfg["auths"][&server], serde_json::json!({}), "{cfg}");
    assert_eq!(cfg["credsStore"], "berthtest");

    // push and pull use what the helper gives.
    d.import_busybox();
    let name = format!("{server}/team/secret:1");
    d.ok(&["tag", "busybox:local", &name]);
    let o = berth(&d, &["push", &name], None, &env);
    assert_eq!(o.code, 0, "{o:?}");
    d.ok(&["rmi", &name]);
    let o = berth(&d, &["pull", &name], None, &env);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("Downloaded newer image"), "{o:?}");

    // logout erases through the helper; then the registry refuses.
    let o = berth(&d, &["logout", &server], None, &env);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(stored(), 0);
    d.ok(&["rmi", &name]);
    let o = berth(&d, &["pull", &name], None, &env);
    assert_ne!(o.code, 0, "{o:?}");

    // credHelpers names the helper per registry (over credsStore, here one that does not exist).
    let input = format!(r#"{{"ServerURL":"{server}","Username":"alice","Secret":"s3cret"}}"#);
    let o = common::run_with_timeout(
        {
            let mut c = Command::new(&helper);
            c.arg("store");
            c
        },
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert_eq!(o.code, 0, "{o:?}");
    std::fs::write(
        &config,
        format!(r#"{{"credsStore": "nosuch", "credHelpers": {{"{server}": "berthtest"}}}}"#),
    )
    .unwrap();
    let o = berth(&d, &["pull", &name], None, &env);
    assert_eq!(o.code, 0, "{o:?}");

    // No helper: `auths` as before.
    d.ok(&["rmi", &name]);
    let basic = base64_of("alice:s3cret");
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"{server}": {{"auth": "{basic}"}}}}}}"#),
    )
    .unwrap();
    let o = berth(&d, &["pull", &name], None, &env);
    assert_eq!(o.code, 0, "{o:?}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
