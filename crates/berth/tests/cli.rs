//! Drives the `berth` binary against a private berthd (own data-root, exec-root and socket).
//! Needs root and the berthd/berth-shim binaries built next to berth; skips otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Daemon {
    child: std::process::Child,
    dir: PathBuf,
    host: String,
}

impl Daemon {
    fn start() -> Option<Daemon> {
        if !rustix_is_root() {
            eprintln!("skipping: needs root");
            return None;
        }
        let berthd = bin_dir().join("berthd");
        if !berthd.exists() || !bin_dir().join("berth-shim").exists() {
            eprintln!("skipping: berthd or berth-shim not built");
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/bcli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("d.sock");
        let host = format!("unix://{}", sock.display());
        let log = std::fs::File::create(dir.join("berthd.log")).unwrap();
        let child = Command::new(&berthd)
            .args(["--data-root", dir.join("data").to_str().unwrap()])
            .args(["--exec-root", dir.join("exec").to_str().unwrap()])
            .args(["-H", &host])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon { child, dir, host };
        let t0 = Instant::now();
        while !sock.exists() {
            if t0.elapsed() > Duration::from_secs(20) {
                panic!("berthd did not create its socket");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(d)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
        c.args(args)
            .env("BERTH_HOST", &self.host)
            .env_remove("DOCKER_HOST");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(o) = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["ps", "-aq"])
            .env("BERTH_HOST", &self.host)
            .output()
        {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        // SIGTERM first: with no container left, berthd removes its bridge and nftables table.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_secs(5)
            && matches!(self.child.try_wait(), Ok(None))
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims (and their containers) outlive berthd by design: end the ones this daemon started.
        let dir = self.dir.to_string_lossy().into_owned();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let pid = p.file_name().to_string_lossy().into_owned();
                if !pid.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&dir) {
                    let _ = Command::new("kill").args(["-9", &pid]).status();
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(self.dir.to_str().unwrap()))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
        if std::env::var_os("BERTH_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// A busybox rootfs tarball made from the host's static busybox.
fn busybox_tar(dir: &Path) -> Option<PathBuf> {
    let bb = Path::new("/usr/bin/busybox");
    if !bb.exists() {
        return None;
    }
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for app in [
        "sh", "echo", "cat", "ls", "date", "sleep", "true", "false", "env", "id", "hostname",
        "pwd", "printf",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(app)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .args([
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap()
        .success();
    ok.then_some(tar)
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[test]
fn usage_errors_need_no_daemon() {
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["run", "--bogus", "x"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 125);
    assert!(
        err(&o).starts_with("unknown flag: --bogus\n\nUsage:  berth run"),
        "{}",
        err(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["-H", "unix:///tmp/berth-no-such.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert_eq!(
        err(&o),
        "Cannot connect to the Berth daemon at unix:///tmp/berth-no-such.sock. Is the berth daemon running?\n"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(out(&o).starts_with("Berth version "));
}

/// Runs `script` (python3) which drives berth through a pseudo-terminal.
fn pty_session(d: &Daemon, args: &[&str]) -> (i32, String) {
    let script = r##"
import os, pty, sys, time, select
args = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(args[0], args)
buf = b""
def read_until(pat, timeout=20):
    global buf
    end = time.time() + timeout
    while pat not in buf and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            buf += data
    return pat in buf
read_until(b"# ", 20)
os.write(fd, b"echo $((6*7))\r")
ok = read_until(b"42", 20)
# Type Ctrl-D only at the next prompt, as a person would: sent earlier it can reach the
# terminal while it is still canonical and be lost when the shell switches modes.
read_until(b"42\r\n/ # ", 10)
os.write(fd, b"\x04")
status = None
end = time.time() + 20
while status is None and time.time() < end:
    read_until(b"__never__", 0.3)
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        status = st
if status is None:
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write("HUNG\n")
sys.stdout.write("OK\n" if ok else "NO\n")
sys.stdout.write(buf.decode(errors="replace"))
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 99)
"##;
    let mut full = vec![env!("CARGO_BIN_EXE_berth")];
    full.extend_from_slice(args);
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&full)
        .env("BERTH_HOST", &d.host)
        .output()
        .unwrap();
    (code(&o), out(&o))
}

#[test]
fn against_private_daemon() {
    let Some(d) = Daemon::start() else { return };
    let Some(tar) = busybox_tar(&d.dir) else {
        eprintln!("skipping: no static busybox");
        return;
    };

    let v = d.run(&["version"]);
    assert_eq!(code(&v), 0, "{}{}", out(&v), err(&v));
    assert!(out(&v).contains("Server:"));

    let o = d.run(&["import", tar.to_str().unwrap(), "busybox:local"]);
    assert_eq!(code(&o), 0, "import: {}{}", out(&o), err(&o));
    assert!(out(&o).trim().starts_with("sha256:"), "{}", out(&o));

    let o = d.run(&["images"]);
    assert!(
        out(&o).starts_with("REPOSITORY    TAG       IMAGE ID       CREATED"),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains("busybox"), "{}", out(&o));
    let o = d.run(&["images", "-q"]);
    assert!(
        is_hex(out(&o).lines().next().unwrap_or(""), 12),
        "{}",
        out(&o)
    );

    let o = d.run(&["run", "busybox:local", "echo", "hi", "there"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert_eq!(out(&o), "hi there\n");

    let o = d.run(&[
        "run",
        "--rm",
        "busybox:local",
        "sh",
        "-c",
        "echo err >&2; exit 3",
    ]);
    assert_eq!(code(&o), 3, "{}", err(&o));
    assert_eq!(err(&o), "err\n");

    let o = d.run_stdin(&["run", "--rm", "-i", "busybox:local", "cat"], b"piped\n");
    assert_eq!(out(&o), "piped\n", "{}", err(&o));

    let o = d.run(&["run", "--rm", "busybox:local", "nosuchcmd"]);
    assert_eq!(code(&o), 127, "{}{}", out(&o), err(&o));
    assert!(
        err(&o).starts_with("berth: Error response from daemon: "),
        "{}",
        err(&o)
    );

    let o = d.run(&[
        "run",
        "-d",
        "--name",
        "web",
        "busybox:local",
        "sh",
        "-c",
        "while true; do echo tick; sleep 1; done",
    ]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(is_hex(out(&o).trim(), 64), "{}", out(&o));
    std::thread::sleep(Duration::from_millis(1500));

    let o = d.run(&["ps"]);
    let text = out(&o);
    assert!(
        text.starts_with("CONTAINER ID   IMAGE           COMMAND"),
        "{text}"
    );
    assert!(
        text.contains("\"sh -c 'while true; …\"") && text.trim_end().ends_with("web"),
        "{text}"
    );
    let o = d.run(&["ps", "--format", "{{.Names}} {{.State}}"]);
    assert_eq!(out(&o), "web running\n");
    let o = d.run(&["ps", "-q"]);
    assert!(is_hex(out(&o).trim(), 12), "{}", out(&o));
    let o = d.run(&["container", "ls", "--no-trunc", "--format", "{{.ID}}"]);
    assert!(is_hex(out(&o).trim(), 64), "{}", out(&o));

    let o = d.run(&["logs", "--tail", "1", "web"]);
    assert_eq!(out(&o), "tick\n", "{}", err(&o));
    let o = d.run(&["logs", "-t", "web"]);
    assert!(
        out(&o).lines().next().unwrap_or("").ends_with("Z tick"),
        "{}",
        out(&o)
    );

    let o = d.run(&["inspect", "-f", "{{.State.Status}} {{.Name}}", "web"]);
    assert_eq!(out(&o), "running /web\n", "{}", err(&o));
    let o = d.run(&["inspect", "web"]);
    assert!(
        out(&o).starts_with("[\n    {\n        \"Id\": "),
        "{}",
        out(&o)
    );

    let o = d.run(&["stop", "-t", "1", "web"]);
    assert_eq!((code(&o), out(&o)), (0, "web\n".to_string()), "{}", err(&o));
    let o = d.run(&[
        "ps",
        "-a",
        "-f",
        "status=exited",
        "-f",
        "name=web",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(out(&o), "web\n");
    let o = d.run(&["rm", "-f", "web", "nosuch"]);
    assert_eq!(code(&o), 1);
    assert_eq!(out(&o), "web\n");
    assert!(err(&o).contains("No such container: nosuch"), "{}", err(&o));

    let o = d.run(&["create", "busybox:local", "echo", "hello"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let id = out(&o).trim().to_string();
    let o = d.run(&["start", "-a", &id]);
    assert_eq!(
        (code(&o), out(&o)),
        (0, "hello\n".to_string()),
        "{}",
        err(&o)
    );

    let o = d.run(&["tag", "busybox:local", "bb:two"]);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let o = d.run(&["rmi", "bb:two"]);
    assert_eq!(out(&o), "Untagged: bb:two\n", "{}", err(&o));
    let o = d.run(&["image", "inspect", "-f", "{{.Id}}", "busybox:local"]);
    assert!(out(&o).starts_with("sha256:"), "{}", err(&o));

    let (c, text) = pty_session(&d, &["run", "--rm", "-it", "busybox:local", "sh"]);
    assert!(text.starts_with("OK\n"), "pty session output: {text}");
    assert_eq!(c, 0, "{text}");

    // Resize on SIGWINCH, then Ctrl-P Ctrl-Q detaches and leaves the container running.
    let (c, text) = pty_detach(&d, &["run", "-it", "--name", "dt", "busybox:local", "sh"]);
    assert!(text.starts_with("size1 True\nsize2 True\n"), "{text}");
    assert_eq!(c, 0, "{text}");
    let o = d.run(&["inspect", "-f", "{{.State.Running}}", "dt"]);
    assert_eq!(out(&o), "true\n");

    let o = d.run(&["run", "--name", "dt", "busybox:local", "true"]);
    assert_eq!(code(&o), 125);
    assert!(err(&o).contains("Conflict."), "{}", err(&o));
    assert!(
        err(&o).ends_with("\n\nRun 'berth run --help' for more information\n"),
        "{}",
        err(&o)
    );

    let o = d.run(&[
        "run",
        "--rm",
        "-a",
        "stdout",
        "busybox:local",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!((out(&o).as_str(), err(&o).as_str()), ("out\n", ""));

    let o = d.run(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "1:1",
        "-h",
        "myhost",
        "busybox:local",
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u) $(hostname)",
    ]);
    assert_eq!(out(&o), "bar /tmp 1 myhost\n", "{}", err(&o));

    let o = d.run(&["run", "-it", "busybox:local", "true"]);
    assert_eq!(
        (code(&o), err(&o).as_str()),
        (1, "the input device is not a TTY\n")
    );
}

fn pty_detach(d: &Daemon, args: &[&str]) -> (i32, String) {
    let script = r##"
import os, pty, sys, time, select, fcntl, termios, struct
args = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    os.execv(args[0], args)
buf = b""
def read_until(pat, timeout=15):
    global buf
    end = time.time() + timeout
    while pat not in buf and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try: data = os.read(fd, 4096)
            except OSError: break
            if not data: break
            buf += data
    return pat in buf
read_until(b"# ")
os.write(fd, b"stty size\r")
print("size1", read_until(b"30 100"))
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
time.sleep(0.5)
os.write(fd, b"stty size\r")
print("size2", read_until(b"40 120"))
os.write(fd, b"\x10\x11")
status = None
end = time.time() + 20
while status is None and time.time() < end:
    read_until(b"__never__", 0.3)
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        status = st
if status is None:
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    sys.stdout.write("HUNG\n")
sys.stdout.write(buf.decode(errors="replace"))
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 99)
"##;
    let mut full = vec![env!("CARGO_BIN_EXE_berth")];
    full.extend_from_slice(args);
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&full)
        .env("BERTH_HOST", &d.host)
        .output()
        .unwrap();
    (code(&o), out(&o))
}
