//! Root integration tests: a busybox rootfs, a bundle from `docker_default_spec()`, and the
//! real shim binary driven over its socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_runtime::oci_spec::runtime::{Root, Spec};
use berth_shim::proto::{self, Request, Response, StartupReport};

const TIMEOUT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// How the container's own cgroup shows in `/proc/self/cgroup` (it is the namespace's root).
fn own_cgroup_line() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "0::/"
    } else {
        ":memory:/"
    }
}

fn make_rootfs(dir: &Path) {
    berth_testkit::busybox_rootfs(dir, berth_testkit::Users::Basic);
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

struct Ctr {
    _dir: tempfile::TempDir,
    id: String,
    root: PathBuf,
    bundle: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    exit_file: PathBuf,
    pid: i32,
}

struct Opts<'a> {
    args: &'a [&'a str],
    terminal: bool,
    stdin: bool,
    stdin_once: bool,
    cgroup_root: Option<&'a str>,
    /// Last changes to the spec (`root` is the rootfs path).
    edit: &'a dyn Fn(&mut Spec, &Path),
}

fn no_edit(_: &mut Spec, _: &Path) {}

impl Ctr {
    fn new(args: &[&str]) -> Ctr {
        Self::with(Opts {
            args,
            terminal: false,
            stdin: false,
            stdin_once: false,
            cgroup_root: None,
            edit: &no_edit,
        })
    }

    fn with(o: Opts<'_>) -> Ctr {
        Self::try_with(o).unwrap_or_else(|e| panic!("shim failed: {e}"))
    }

    fn try_with(o: Opts<'_>) -> Result<Ctr, String> {
        let dir = tempfile::Builder::new()
            .prefix("bs")
            .tempdir_in("/tmp")
            .unwrap();
        let id = format!(
            "t{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let root = dir.path().join("rootfs");
        make_rootfs(&root);
        let bundle = dir.path().join("b");
        std::fs::create_dir_all(&bundle).unwrap();
        let mut spec: Spec = berth_runtime::spec::docker_default_spec();
        let mut r = Root::default();
        r.set_path(root.clone());
        r.set_readonly(Some(false));
        spec.set_root(Some(r));
        spec.set_hostname(Some("ctr-host".into()));
        let mut p = spec.process().clone().unwrap();
        p.set_args(Some(o.args.iter().map(|s| s.to_string()).collect()));
        p.set_terminal(Some(o.terminal));
        spec.set_process(Some(p));
        let mut l = spec.linux().clone().unwrap();
        l.set_cgroups_path(Some(PathBuf::from(format!("/berth/{id}"))));
        let mut res = l.resources().clone().unwrap();
        res.set_pids(Some(
            serde_json::from_value(serde_json::json!({"limit": 100})).unwrap(),
        ));
        res.set_memory(Some(
            serde_json::from_value(serde_json::json!({"limit": 256 * 1024 * 1024})).unwrap(),
        ));
        if o.cgroup_root.is_none() {
            l.set_resources(Some(res));
        }
        spec.set_linux(Some(l));
        (o.edit)(&mut spec, &root);
        spec.save(bundle.join("config.json")).unwrap();
        let log = dir.path().join("ctr-json.log");
        let exit_file = dir.path().join("exit.json");
        // BERTH_SHIM runs the tests against another build (e.g. target/release/berth-shim).
        let bin = std::env::var("BERTH_SHIM")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_berth-shim").to_string());
        let mut cmd = Command::new(bin);
        cmd.args(["--id", &id, "--bundle"])
            .arg(&bundle)
            .arg("--log")
            .arg(&log)
            .arg("--exit-file")
            .arg(&exit_file);
        if o.stdin {
            cmd.arg("--stdin");
        }
        if o.stdin_once {
            cmd.arg("--stdin-once");
        }
        if let Some(r) = o.cgroup_root {
            cmd.args(["--cgroup-root", r]);
        }
        let out = cmd.output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let rep: StartupReport =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("report {line:?}: {e}"));
        let Some(pid) = rep.pid else {
            assert!(!out.status.success());
            assert!(!bundle.join("shim.sock").exists());
            return Err(rep.error.unwrap_or_default());
        };
        assert!(out.status.success());
        Ok(Ctr {
            sock: bundle.join("shim.sock"),
            _dir: dir,
            id,
            root,
            bundle,
            log,
            exit_file,
            pid,
        })
    }

    fn call(&self, req: &Request) -> Response {
        proto::call(&self.sock, req, Some(TIMEOUT)).unwrap().0
    }

    fn attach(&self, stdin: bool) -> UnixStream {
        let (r, s) = proto::call(
            &self.sock,
            &Request::Attach {
                stdin,
                stdout: true,
                stderr: true,
            },
            Some(TIMEOUT),
        )
        .unwrap();
        assert!(r.ok, "{r:?}");
        s
    }

    fn start(&self) -> Response {
        self.call(&Request::Start)
    }

    /// Sends a `wait` request now (so it is registered before the container ends); the
    /// answer is read by the returned thread.
    fn waiter(&self) -> Waiter {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"{\"op\":\"wait\"}\n").unwrap();
        Waiter(std::thread::spawn(move || {
            let line = proto::read_line(&mut s).unwrap();
            serde_json::from_str(&line).unwrap()
        }))
    }

    /// Checks that the shim cleaned up: socket, cgroups, mounts.
    fn assert_cleaned_up(&self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.sock.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!self.sock.exists(), "shim.sock left behind");
        for h in ["memory", "pids", "cpu", "systemd", "unified"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(h)
                .join("berth")
                .join(&self.id);
            if Path::new("/sys/fs/cgroup").join(h).exists() {
                assert!(!p.exists(), "{} left behind", p.display());
            }
        }
        let p = Path::new("/sys/fs/cgroup/berth").join(&self.id);
        assert!(!p.exists());
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mi.contains(self.root.to_str().unwrap()),
            "rootfs still mounted"
        );
        let ef: proto::ExitFile =
            serde_json::from_slice(&std::fs::read(&self.exit_file).unwrap()).unwrap();
        assert!(ef.finished_at.ends_with('Z'));
    }
}

struct Waiter(std::thread::JoinHandle<Response>);

impl Waiter {
    fn wait(self) -> Response {
        let r = self.0.join().unwrap();
        assert!(r.ok, "{r:?}");
        r
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        if self.sock.exists() {
            let _ = berth_runtime::kill(self.pid, 9);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.sock.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Reads stdcopy frames until EOF: (stdout, stderr).
fn read_frames(mut s: UnixStream) -> (String, String) {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i + 8 <= all.len() {
        let n = u32::from_be_bytes([all[i + 4], all[i + 5], all[i + 6], all[i + 7]]) as usize;
        let data = &all[i + 8..i + 8 + n];
        match all[i] {
            1 => o.extend_from_slice(data),
            2 => e.extend_from_slice(data),
            x => panic!("bad stream {x}"),
        }
        i += 8 + n;
    }
    assert_eq!(i, all.len(), "trailing bytes");
    (
        String::from_utf8_lossy(&o).into_owned(),
        String::from_utf8_lossy(&e).into_owned(),
    )
}

macro_rules! root_only {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

#[test]
fn echo_hi_logs_and_cleans_up() {
    root_only!();
    let c = Ctr::new(&["sh", "-c", "echo hi; echo oops >&2"]);
    let st = c.call(&Request::State);
    assert_eq!(st.status, Some(proto::Status::Created));
    assert_eq!(st.pid, Some(c.pid));
    let a = c.attach(false);
    let waiter = c.waiter();
    let r = c.start();
    assert!(r.ok, "{r:?}");
    let (out, err) = read_frames(a);
    assert_eq!(out, "hi\n");
    assert_eq!(err, "oops\n");
    let w = waiter.wait();
    assert_eq!(w.exit_code, Some(0));
    assert_eq!(w.oom_killed, Some(false));
    c.assert_cleaned_up();
    let log = std::fs::read_to_string(&c.log).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    let hi = lines.iter().find(|l| l["stream"] == "stdout").unwrap();
    assert_eq!(hi["log"], "hi\n");
    let t = hi["time"].as_str().unwrap();
    assert_eq!(t.len(), "2026-11-25T21:50:20.123456789Z".len(), "{t}");
    assert!(t.ends_with('Z'));
    let oops = lines.iter().find(|l| l["stream"] == "stderr").unwrap();
    assert_eq!(oops["log"], "oops\n");
}

#[test]
fn exit_code_is_reported() {
    root_only!();
    let c = Ctr::new(&["sh", "-c", "exit 3"]);
    let waiter = c.waiter();
    assert!(c.start().ok);
    assert_eq!(waiter.wait().exit_code, Some(3));
    c.assert_cleaned_up();
    let ef: proto::ExitFile =
        serde_json::from_slice(&std::fs::read(&c.exit_file).unwrap()).unwrap();
    assert_eq!(ef.exit_code, 3);
}

#[test]
fn sigkill_gives_137() {
    root_only!();
    let c = Ctr::new(&["sleep", "100"]);
    let waiter = c.waiter();
    assert!(c.start().ok);
    assert_eq!(c.call(&Request::State).status, Some(proto::Status::Running));
    let r = c.call(&Request::Kill {
        signal: 9,
        all: false,
    });
    assert!(r.ok, "{r:?}");
    assert_eq!(waiter.wait().exit_code, Some(137));
    c.assert_cleaned_up();
}

#[test]
fn exec_errors_read_like_runc() {
    root_only!();
    for (arg, msg, code) in [
        (
            "nosuch",
            "exec: \"nosuch\": executable file not found in $PATH",
            127,
        ),
        ("/etc", "exec: \"/etc\": permission denied", 126),
        ("/x", "exec: \"/x\": no such file or directory", 127),
    ] {
        let c = Ctr::new(&[arg]);
        let waiter = c.waiter();
        let r = c.start();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some(msg));
        assert_eq!(r.exit_code, Some(code));
        assert_eq!(waiter.wait().exit_code, Some(code));
        c.assert_cleaned_up();
    }
}

#[test]
fn isolation_matches_docker_defaults() {
    root_only!();
    let script = format!(
        "hostname; cat /proc/1/cmdline; echo; ps -o pid,args > /tmp/ps; echo $(wc -l < /tmp/ps); \
         cat /proc/kcore 2>/dev/null | wc -c; wc -c < /proc/keys; grep Cap /proc/self/status; \
         grep -e '{}' /proc/self/cgroup; ls /sys/fs/cgroup/; \
         touch /proc/sys/x 2>/dev/null || echo rofs; ls -l /dev/null; readlink /dev/ptmx; \
         cat /proc/self/status | grep -i nonewprivs; echo PS; cat /tmp/ps",
        own_cgroup_line()
    );
    let script = script.as_str();
    let c = Ctr::new(&["sh", "-c", script]);
    let a = c.attach(false);
    let waiter = c.waiter();
    assert!(c.start().ok);
    let (out, err) = read_frames(a);
    assert_eq!(waiter.wait().exit_code, Some(0), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ctr-host");
    assert_eq!(
        lines[1].replace('\0', " ").trim(),
        format!("sh -c {script}")
    );
    // Only the container's processes: PID 1 (sh) and ps itself.
    let ps: Vec<&str> = out.split("PS\n").nth(1).unwrap().lines().skip(1).collect();
    assert_eq!(ps.len(), 2, "{out}");
    assert!(ps[0].trim().starts_with("1 sh -c"), "{out}");
    assert!(ps[1].contains("ps -o pid,args"), "{out}");
    assert_eq!(lines[2].trim(), "3", "{out}");
    assert_eq!(lines[3].trim(), "0", "/proc/kcore readable");
    assert_eq!(lines[4].trim(), "0", "/proc/keys not masked");
    assert!(out.contains("CapInh:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapAmb:\t0000000000000000"), "{out}");
    assert!(out.contains(&format!("{}\n", own_cgroup_line())), "{out}");
    assert!(out.contains("rofs"), "{out}");
    assert!(out.contains("pts/ptmx"), "{out}");
    assert!(out.contains("1,   3"), "{out}");
    c.assert_cleaned_up();
}

#[test]
fn tty_and_resize() {
    root_only!();
    let c = Ctr::with(Opts {
        args: &["sh", "-c", "tty; stty size"],
        terminal: true,
        stdin: false,
        stdin_once: false,
        cgroup_root: None,
        edit: &no_edit,
    });
    let mut a = c.attach(false);
    let r = c.call(&Request::Resize {
        width: 100,
        height: 40,
        exec_id: None,
    });
    assert!(r.ok, "{r:?}");
    let waiter = c.waiter();
    assert!(c.start().ok);
    a.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = String::new();
    a.read_to_string(&mut out).unwrap();
    assert_eq!(waiter.wait().exit_code, Some(0));
    assert_eq!(out, "/dev/pts/0\r\n40 100\r\n");
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(
        log.contains("{\"log\":\"/dev/pts/0\\r\\n\",\"stream\":\"stdout\""),
        "{log}"
    );
    c.assert_cleaned_up();
}

#[test]
fn stdin_once_closes_stdin() {
    root_only!();
    let c = Ctr::with(Opts {
        args: &["cat"],
        terminal: false,
        stdin: true,
        stdin_once: true,
        cgroup_root: None,
        edit: &no_edit,
    });
    let mut a = c.attach(true);
    let waiter = c.waiter();
    assert!(c.start().ok);
    a.write_all(b"hello\n").unwrap();
    a.shutdown(std::net::Shutdown::Write).unwrap();
    let (out, _) = read_frames(a);
    assert_eq!(out, "hello\n");
    assert_eq!(waiter.wait().exit_code, Some(0));
    c.assert_cleaned_up();
}

#[test]
fn create_start_latency() {
    root_only!();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let c = Ctr::new(&["/bin/true"]);
        let t1 = Instant::now();
        let waiter = c.waiter();
        assert!(c.start().ok);
        let t2 = Instant::now();
        assert_eq!(waiter.wait().exit_code, Some(0));
        let shimlog = std::fs::read_to_string(c.bundle.join("shim.log")).unwrap_or_default();
        times.push((t1 - t0, t2 - t1, shimlog));
        c.assert_cleaned_up();
    }
    for (create, start, log) in &times {
        eprintln!(
            "shim spawn+create (incl. rootfs copy): {create:?}, start: {start:?}; {}",
            log.trim()
        );
    }
}

/// On cgroup v2 the child is cloned straight into its cgroup (`CLONE_INTO_CGROUP`). A hybrid
/// host's `unified` mount is a real cgroup2 hierarchy to try it on.
#[test]
fn cgroup_v2_clone_into_cgroup() {
    root_only!();
    let root = "/sys/fs/cgroup/unified";
    if !Path::new(root).join("cgroup.controllers").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        eprintln!("skipped: no cgroup2 hierarchy");
        return;
    }
    let root = if Path::new(root).exists() {
        root
    } else {
        "/sys/fs/cgroup"
    };
    let c = Ctr::with(Opts {
        args: &["sleep", "100"],
        terminal: false,
        stdin: false,
        stdin_once: false,
        cgroup_root: Some(root),
        edit: &no_edit,
    });
    let dir = Path::new(root).join("berth").join(&c.id);
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), c.pid.to_string());
    let shimlog = std::fs::read_to_string(c.bundle.join("shim.log")).unwrap_or_default();
    eprintln!("{}", shimlog.trim());
    let waiter = c.waiter();
    assert!(c.start().ok);
    assert!(
        c.call(&Request::Kill {
            signal: 9,
            all: true
        })
        .ok
    );
    assert_eq!(waiter.wait().exit_code, Some(137));
    c.assert_cleaned_up();
    assert!(!dir.exists());
}

#[test]
fn shim_rss_is_small() {
    root_only!();
    let c = Ctr::new(&["sleep", "100"]);
    let waiter = c.waiter();
    assert!(c.start().ok);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.pid)).unwrap();
    let ppid: i32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{ppid}/status")).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    eprintln!("shim RSS: {rss_kb} kB");
    if std::env::var("BERTH_SHIM_SMAPS").is_ok() {
        eprintln!(
            "{}",
            std::fs::read_to_string(format!("/proc/{ppid}/smaps")).unwrap_or_default()
        );
    }
    assert!(
        c.call(&Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    assert_eq!(waiter.wait().exit_code, Some(137));
    c.assert_cleaned_up();
    assert!(rss_kb < 8 * 1024, "shim RSS {rss_kb} kB");
}

#[test]
fn user_binds_readonly_root_and_no_escape() {
    root_only!();
    let host_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_file.path(), "127.0.0.1 bound-hosts\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host_file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let escape = tempfile::Builder::new()
        .prefix("besc")
        .tempdir_in("/tmp")
        .unwrap();
    let host_path = host_file.path().to_path_buf();
    let escape_path = escape.path().to_path_buf();
    let edit = move |spec: &mut Spec, root: &Path| {
        // A symlink in the image pointing out of the rootfs must not be followed on the host.
        std::os::unix::fs::symlink(&escape_path, root.join("escape")).unwrap();
        let mut p = spec.process().clone().unwrap();
        let mut u = p.user().clone();
        u.set_uid(1000);
        u.set_gid(1000);
        u.set_additional_gids(Some(vec![1001]));
        p.set_user(u);
        p.set_no_new_privileges(Some(true));
        // Asking for more than the current hard limit must not fail (it is clamped).
        p.set_rlimits(Some(
            serde_json::from_value(serde_json::json!([
                {"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 1000},
                {"type": "RLIMIT_NPROC", "soft": u64::MAX, "hard": u64::MAX},
            ]))
            .unwrap(),
        ));
        spec.set_process(Some(p));
        let mut r = spec.root().clone().unwrap();
        r.set_readonly(Some(true));
        spec.set_root(Some(r));
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            serde_json::from_value(serde_json::json!({
                "destination": "/etc/hosts", "type": "bind",
                "source": host_path, "options": ["rbind", "ro"]
            }))
            .unwrap(),
        );
        mounts.push(
            serde_json::from_value(serde_json::json!({
                "destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs", "options": []
            }))
            .unwrap(),
        );
        spec.set_mounts(Some(mounts));
    };
    let c = Ctr::with(Opts {
        args: &[
            "sh",
            "-c",
            "id; cat /etc/hosts; touch /x 2>/dev/null || echo rootro; \
             grep -E 'CapEff|NoNewPrivs' /proc/self/status; echo data > /escape/sub/f && echo wrote; \
             echo nofile=$(ulimit -n); umask",
        ],
        terminal: false,
        stdin: false,
        stdin_once: false,
        cgroup_root: None,
        edit: &edit,
    });
    let a = c.attach(false);
    let waiter = c.waiter();
    assert!(c.start().ok);
    let (out, err) = read_frames(a);
    assert_eq!(waiter.wait().exit_code, Some(0), "{out}\n{err}");
    assert!(out.contains("uid=1000 gid=1000 groups=1001"), "{out}");
    assert!(out.contains("127.0.0.1 bound-hosts"), "{out}");
    assert!(out.contains("rootro"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("wrote"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("nofile=1000"), "{out}");
    assert!(out.contains("0022"), "{out}");
    assert!(
        !escape.path().join("sub").exists(),
        "mount escaped the rootfs"
    );
    assert!(
        c.root
            .join(escape.path().strip_prefix("/").unwrap())
            .join("sub")
            .exists()
    );
    c.assert_cleaned_up();
}

#[test]
fn oom_kill_is_reported() {
    root_only!();
    let edit = |spec: &mut Spec, _: &Path| {
        let mut l = spec.linux().clone().unwrap();
        let mut r = l.resources().clone().unwrap();
        r.set_memory(Some(
            serde_json::from_value(serde_json::json!({"limit": 16 << 20, "swap": 16 << 20}))
                .unwrap(),
        ));
        l.set_resources(Some(r));
        spec.set_linux(Some(l));
    };
    let c = Ctr::with(Opts {
        args: &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
        terminal: false,
        stdin: false,
        stdin_once: false,
        cgroup_root: None,
        edit: &edit,
    });
    let waiter = c.waiter();
    assert!(c.start().ok);
    let w = waiter.wait();
    assert_eq!(w.oom_killed, Some(true), "{w:?}");
    c.assert_cleaned_up();
    let ef: proto::ExitFile =
        serde_json::from_slice(&std::fs::read(&c.exit_file).unwrap()).unwrap();
    assert!(ef.oom_killed);
}

#[test]
fn joins_network_namespace_by_path() {
    root_only!();
    let edit = |spec: &mut Spec, _: &Path| {
        let mut l = spec.linux().clone().unwrap();
        let mut ns = l.namespaces().clone().unwrap();
        for n in ns.iter_mut() {
            if n.typ() == berth_runtime::oci_spec::runtime::LinuxNamespaceType::Network {
                n.set_path(Some(PathBuf::from(format!(
                    "/proc/{}/ns/net",
                    std::process::id()
                ))));
            }
        }
        l.set_namespaces(Some(ns));
        spec.set_linux(Some(l));
    };
    let c = Ctr::with(Opts {
        args: &["readlink", "/proc/self/ns/net"],
        terminal: false,
        stdin: false,
        stdin_once: false,
        cgroup_root: None,
        edit: &edit,
    });
    let a = c.attach(false);
    let waiter = c.waiter();
    assert!(c.start().ok);
    let (out, err) = read_frames(a);
    assert_eq!(waiter.wait().exit_code, Some(0), "{err}");
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(out.trim(), host.to_str().unwrap());
    c.assert_cleaned_up();
}

#[test]
fn init_errors_are_reported_at_create() {
    root_only!();
    let edit = |spec: &mut Spec, _: &Path| {
        let mut mounts = spec.mounts().clone().unwrap();
        mounts.push(
            serde_json::from_value(serde_json::json!({
                "destination": "/data", "type": "bind",
                "source": "/nonexistent/berth-test-src", "options": ["rbind"]
            }))
            .unwrap(),
        );
        spec.set_mounts(Some(mounts));
    };
    let e = Ctr::try_with(Opts {
        args: &["true"],
        terminal: false,
        stdin: false,
        stdin_once: false,
        cgroup_root: None,
        edit: &edit,
    })
    .err()
    .expect("create should fail");
    assert!(
        e.contains("bind source /nonexistent/berth-test-src") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn seccomp_profiles_are_enforced() {
    root_only!();
    // An allowlist of every known syscall but a few, as Docker's default profile is built
    // (default action ERRNO), once with and once without no_new_privileges.
    for nnp in [false, true] {
        let edit = move |spec: &mut Spec, _: &Path| {
            let denied = ["mkdir", "mkdirat", "unshare", "mount"];
            let allowed: Vec<&str> = berth_runtime::seccomp::syscall_names()
                .filter(|n| !denied.contains(n))
                .collect();
            let mut l = spec.linux().clone().unwrap();
            l.set_seccomp(Some(
                serde_json::from_value(serde_json::json!({
                    "defaultAction": "SCMP_ACT_ERRNO",
                    "architectures": ["SCMP_ARCH_X86_64"],
                    "syscalls": [
                        {"names": allowed, "action": "SCMP_ACT_ALLOW"},
                        {"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                    ]
                }))
                .unwrap(),
            ));
            spec.set_linux(Some(l));
            let mut p = spec.process().clone().unwrap();
            p.set_no_new_privileges(Some(nnp));
            spec.set_process(Some(p));
        };
        let c = Ctr::with(Opts {
            args: &[
                "sh",
                "-c",
                "grep Seccomp: /proc/self/status; mkdir /tmp/d || echo mkdir-denied; \
                 unshare -n true || echo unshare-denied; echo alive",
            ],
            terminal: false,
            stdin: false,
            stdin_once: false,
            cgroup_root: None,
            edit: &edit,
        });
        let a = c.attach(false);
        let waiter = c.waiter();
        assert!(c.start().ok);
        let (out, err) = read_frames(a);
        assert_eq!(waiter.wait().exit_code, Some(0), "{out}\n{err}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
        assert!(out.contains("mkdir-denied"), "{out}");
        assert!(err.contains("Permission denied"), "{err}");
        assert!(out.contains("unshare-denied"), "{out}");
        assert!(out.contains("alive"), "{out}");
        c.assert_cleaned_up();
    }
}

/// Device rules on cgroup v2 are an eBPF program attached to the container's cgroup. With
/// `--cgroup-root` at the unified mount the container is outside the v1 devices cgroup, so only
/// the eBPF filter can refuse the access.
#[test]
fn cgroup_v2_device_filter() {
    root_only!();
    let root = if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        eprintln!("skipped: no cgroup2 hierarchy");
        return;
    };
    // A block device of the host that has data.
    let Some(dev) = std::fs::read_dir("/sys/dev/block")
        .unwrap()
        .flatten()
        .find_map(|e| {
            let size = std::fs::read_to_string(e.path().join("size")).ok()?;
            (size.trim().parse::<u64>().ok()? > 0).then(|| e.file_name().into_string().ok())?
        })
    else {
        eprintln!("skipped: no block device");
        return;
    };
    let (major, minor) = dev.split_once(':').unwrap();
    let script = format!(
        "mknod /tmp/blk b {major} {minor} && echo mknod-ok; head -c1 /tmp/blk >/dev/null; \
         head -c1 /dev/urandom >/dev/null && echo urandom-ok"
    );
    let c = Ctr::with(Opts {
        args: &["sh", "-c", &script],
        terminal: false,
        stdin: false,
        stdin_once: false,
        cgroup_root: Some(root),
        edit: &no_edit,
    });
    let a = c.attach(false);
    let waiter = c.waiter();
    assert!(c.start().ok);
    let (out, err) = read_frames(a);
    assert_eq!(waiter.wait().exit_code, Some(0), "{out}\n{err}");
    assert!(out.contains("mknod-ok"), "{out}");
    assert!(out.contains("urandom-ok"), "{out}");
    assert!(err.contains("Operation not permitted"), "{err}");
    c.assert_cleaned_up();
}

fn exec_req(id: &str, args: &[&str], terminal: bool, stdin: bool) -> Request {
    let process = serde_json::from_value(serde_json::json!({
        "args": args,
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/tmp",
        "terminal": terminal,
        "user": {"uid": 0, "gid": 0},
        "capabilities": {
            "bounding": berth_runtime::spec::DEFAULT_CAPS,
            "effective": berth_runtime::spec::DEFAULT_CAPS,
            "permitted": berth_runtime::spec::DEFAULT_CAPS,
        },
    }))
    .unwrap();
    Request::Exec {
        id: id.into(),
        process: Box::new(process),
        stdin,
        stdout: true,
        stderr: true,
    }
}

#[test]
fn exec_runs_inside_the_container() {
    root_only!();
    let c = Ctr::new(&["sleep", "100"]);
    let waiter = c.waiter();
    // Not running yet: refused.
    let (r, _) = proto::call(
        &c.sock,
        &exec_req("e0", &["true"], false, false),
        Some(TIMEOUT),
    )
    .unwrap();
    assert_eq!(r.error.as_deref(), Some("container is not running"));
    assert!(c.start().ok);

    let script = format!(
        "echo $$; hostname; pwd; grep CapEff /proc/self/status; ps -o pid,args | wc -l; \
         grep -e '{}' /proc/self/cgroup; echo oops >&2; exit 5",
        own_cgroup_line()
    );
    let script = script.as_str();
    let (r, s) = proto::call(
        &c.sock,
        &exec_req("e1", &["sh", "-c", script], false, false),
        Some(TIMEOUT),
    )
    .unwrap();
    assert!(r.ok, "{r:?}");
    assert!(r.pid.is_some());
    let (out, err) = read_frames(s);
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "{out}"); // a new process, not the init
    assert_eq!(lines[1], "ctr-host");
    assert_eq!(lines[2], "/tmp");
    assert_eq!(lines[3], "CapEff:\t00000000a80425fb");
    assert_eq!(lines[4].trim(), "5", "{out}"); // header, sleep, sh, ps, wc
    assert!(lines[5].ends_with(own_cgroup_line()), "{out}");
    assert_eq!(err, "oops\n");
    let st = c.call(&Request::ExecState { id: "e1".into() });
    assert_eq!(st.exit_code, Some(5), "{st:?}");
    assert_eq!(st.status, Some(proto::Status::Stopped));

    // stdin, closed when the client shuts down its write half.
    let (r, mut s) = proto::call(
        &c.sock,
        &exec_req("e2", &["cat"], false, true),
        Some(TIMEOUT),
    )
    .unwrap();
    assert!(r.ok, "{r:?}");
    s.write_all(b"piped\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (out, _) = read_frames(s);
    assert_eq!(out, "piped\n");

    // A terminal: raw stream, resizable.
    let (r, mut s) =
        proto::call(&c.sock, &exec_req("e3", &["sh"], true, true), Some(TIMEOUT)).unwrap();
    assert!(r.ok, "{r:?}");
    let rr = c.call(&Request::Resize {
        width: 77,
        height: 33,
        exec_id: Some("e3".into()),
    });
    assert!(rr.ok, "{rr:?}");
    s.write_all(b"tty; stty size; exit 2\n").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("33 77"), "{out:?}");
    let st = c.call(&Request::ExecState { id: "e3".into() });
    assert_eq!(st.exit_code, Some(2), "{st:?}");

    // Exec errors read like runc's.
    let (r, _) = proto::call(
        &c.sock,
        &exec_req("e4", &["nosuch"], false, false),
        Some(TIMEOUT),
    )
    .unwrap();
    assert_eq!(
        r.error.as_deref(),
        Some("exec: \"nosuch\": executable file not found in $PATH")
    );
    assert_eq!(r.exit_code, Some(127));

    assert!(
        c.call(&Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    assert_eq!(waiter.wait().exit_code, Some(137));
    c.assert_cleaned_up();
}

#[test]
fn pause_resume_and_stats() {
    root_only!();
    let c = Ctr::new(&["sh", "-c", "while true; do echo tick; sleep 0.05; done"]);
    let waiter = c.waiter();
    assert!(c.start().ok);
    std::thread::sleep(Duration::from_millis(200));
    let st = c.call(&Request::Stats).stats.unwrap();
    assert!(st.cpu_usage_ns > 0, "{st:?}");
    assert!(st.memory_usage > 0, "{st:?}");
    assert_eq!(st.memory_limit, 256 * 1024 * 1024);
    assert!(st.pids_current >= 1, "{st:?}");
    assert_eq!(st.pids_limit, 100);
    assert!(c.call(&Request::Pause).ok);
    assert_eq!(c.call(&Request::State).status, Some(proto::Status::Paused));
    assert!(c.call(&Request::Pause).error.is_some());
    let lines = || std::fs::read_to_string(&c.log).unwrap().lines().count();
    std::thread::sleep(Duration::from_millis(100));
    let before = lines();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(), before, "output while paused");
    assert!(c.call(&Request::Resume).ok);
    assert_eq!(c.call(&Request::State).status, Some(proto::Status::Running));
    std::thread::sleep(Duration::from_millis(300));
    assert!(lines() > before, "no output after resume");
    // SIGKILL works on a paused container too.
    assert!(c.call(&Request::Pause).ok);
    assert!(
        c.call(&Request::Kill {
            signal: 9,
            all: false
        })
        .ok
    );
    assert_eq!(waiter.wait().exit_code, Some(137));
    c.assert_cleaned_up();
}
