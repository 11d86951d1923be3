//! `berth-shim`: the per-container supervisor (see docs/INTERNALS.md).
//!
//! `berth-shim --id ID --bundle DIR --log FILE --exit-file FILE [--stdin] [--stdin-once]
//! [--cgroup-root DIR] [--log-max-size BYTES] [--log-max-file N] [--log-compress] [--log-attr K=V]... [--no-log]`

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use berth_runtime::oci_spec::runtime::Spec;
use berth_runtime::{CgroupManager, ContainerStdio, Created, ExitStatus, ForkResult};
use berth_shim::logfmt::{LineSplitter, rfc3339_nano};
use berth_shim::logwriter::{LogWriter, Rotation};
use berth_shim::proto::{self, ExitFile, Request, Response, StartupReport, Status};
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

mod external;

const STACK: usize = 128 * 1024;

#[derive(Debug)]
struct Args {
    id: String,
    bundle: PathBuf,
    log: PathBuf,
    exit_file: PathBuf,
    stdin: bool,
    stdin_once: bool,
    cgroup_root: Option<PathBuf>,
    log_rotation: Rotation,
    log_attrs: Vec<(String, String)>,
    no_log: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut id, mut bundle, mut log, mut exit_file) = (None, None, None, None);
    let (mut stdin, mut stdin_once, mut cgroup_root) = (false, false, None);
    let mut log_rotation = Rotation {
        max_size: None,
        max_file: 1,
        compress: false,
    };
    let (mut log_attrs, mut no_log) = (Vec::new(), false);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--id" => id = Some(val()?),
            "--bundle" => bundle = Some(PathBuf::from(val()?)),
            "--log" => log = Some(PathBuf::from(val()?)),
            "--exit-file" => exit_file = Some(PathBuf::from(val()?)),
            "--stdin" => stdin = true,
            "--stdin-once" => stdin_once = true,
            "--cgroup-root" => cgroup_root = Some(PathBuf::from(val()?)),
            "--log-max-size" => {
                log_rotation.max_size = Some(val()?.parse().map_err(|e| format!("{a}: {e}"))?)
            }
            "--log-max-file" => {
                log_rotation.max_file = val()?.parse().map_err(|e| format!("{a}: {e}"))?
            }
            "--log-compress" => log_rotation.compress = true,
            "--log-attr" => {
                let v = val()?;
                let (k, v) = v.split_once('=').unwrap_or((&v, ""));
                log_attrs.push((k.to_string(), v.to_string()));
            }
            "--no-log" => no_log = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        id: id.ok_or("--id is required")?,
        bundle: bundle.ok_or("--bundle is required")?,
        log: log.ok_or("--log is required")?,
        exit_file: exit_file.ok_or("--exit-file is required")?,
        stdin,
        stdin_once,
        cgroup_root,
        log_rotation,
        log_attrs,
        no_log,
    })
}

mod init;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--exec-helper") {
        std::process::exit(exec_helper());
    }
    if std::env::args().nth(1).as_deref() == Some("--init") {
        let mut cmd: Vec<String> = std::env::args().skip(2).collect();
        if cmd.first().map(String::as_str) == Some("--") {
            cmd.remove(0);
        }
        std::process::exit(init::run(&cmd));
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            std::process::exit(2);
        }
    };
    let (rd, wr) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => report_and_exit(&format!("pipe: {e}")),
    };
    match berth_runtime::fork() {
        Err(e) => report_and_exit(&format!("fork: {e}")),
        Ok(ForkResult::Parent { .. }) => {
            drop(wr);
            // One line; the container's init holds the write end until it execs.
            let mut f = File::from(rd);
            let line = proto::read_line(&mut f).unwrap_or_default();
            let rep: StartupReport = serde_json::from_str(&line).unwrap_or(StartupReport {
                pid: None,
                error: Some("shim exited during startup".into()),
            });
            println!("{}", serde_json::to_string(&rep).unwrap_or_default());
            std::process::exit(if rep.pid.is_some() { 0 } else { 1 });
        }
        Ok(ForkResult::Child) => {
            drop(rd);
            let code = shim(args, File::from(wr));
            std::process::exit(code);
        }
    }
}

fn report_and_exit(msg: &str) -> ! {
    let rep = StartupReport {
        pid: None,
        error: Some(msg.to_string()),
    };
    println!("{}", serde_json::to_string(&rep).unwrap_or_default());
    std::process::exit(1);
}

fn report(w: &mut File, rep: &StartupReport) {
    let mut s = serde_json::to_string(rep).unwrap_or_default();
    s.push('\n');
    let _ = w.write_all(s.as_bytes());
}

/// Where attach clients and the log receive the container's output.
#[derive(Debug)]
struct Output {
    log: Option<LogWriter>,
    clients: Vec<Client>,
    open_streams: usize,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    stdout: bool,
    stderr: bool,
}

#[derive(Debug)]
struct State {
    created: Option<Pending>,
    started: bool,
    paused: bool,
    pending: usize,
    exit: Option<(i32, bool)>,
    waiters: usize,
}

/// A created container waiting for `start`: built-in runtime or an external OCI runtime.
#[derive(Debug)]
enum Pending {
    Builtin(Created),
    External(external::Created),
}

impl Pending {
    fn pid(&self) -> i32 {
        match self {
            Pending::Builtin(c) => c.pid(),
            Pending::External(c) => c.pid(),
        }
    }

    fn take_pty_master(&mut self) -> Option<OwnedFd> {
        match self {
            Pending::Builtin(c) => c.take_pty_master(),
            Pending::External(c) => c.take_pty_master(),
        }
    }

    /// Starts the process: Err((message, exit code for exec failures)).
    fn start(self) -> Result<(), (String, Option<i32>)> {
        match self {
            Pending::Builtin(c) => c
                .start()
                .map(|_| ())
                .map_err(|e| (e.to_string(), e.exec_exit_code())),
            Pending::External(c) => c.start().map_err(|e| (e, None)),
        }
    }
}

#[derive(Debug)]
struct Shim {
    pid: i32,
    terminal: bool,
    stdin_once: bool,
    state: Mutex<State>,
    state_cv: Condvar,
    out: Mutex<Output>,
    out_cv: Condvar,
    stdin: Mutex<Option<File>>,
    master: Option<File>,
    cgroup: Box<dyn CgroupManager>,
    execs: Mutex<HashMap<String, ExecEntry>>,
    bundle: PathBuf,
    id: String,
    cgroup_root: Option<PathBuf>,
}

#[derive(Debug)]
struct ExecEntry {
    pid: i32,
    exit: Option<i32>,
    master: Option<Arc<File>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn shim(args: Args, mut report_w: File) -> i32 {
    // One arena: the shim's threads rarely allocate at once; each extra arena keeps its pages.
    berth_runtime::sys::malloc_tune(1);
    let _ = berth_runtime::daemonize_setsid();
    let _ = berth_runtime::set_child_subreaper();
    // Do not keep berthd's pipes: stdio to /dev/null, diagnostics to the bundle's shim.log.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
    match File::options()
        .create(true)
        .append(true)
        .open(args.bundle.join("shim.log"))
    {
        Ok(f) => {
            let _ = nix::unistd::dup2_stderr(&f);
        }
        Err(_) => {
            // Never keep berthd's stderr pipe open: it would wait for the shim to exit.
            if let Ok(null) = File::options().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stderr(&null);
            }
        }
    }

    let fail = |w: &mut File, msg: String| {
        report(
            w,
            &StartupReport {
                pid: None,
                error: Some(msg),
            },
        );
        1
    };
    let mut spec = match Spec::load(args.bundle.join("config.json")) {
        Ok(s) => s,
        Err(e) => return fail(&mut report_w, format!("load config.json: {e}")),
    };
    if let Some(root) = spec.root().clone() {
        if root.path().is_relative() {
            let mut r = root.clone();
            r.set_path(args.bundle.join(root.path()));
            spec.set_root(Some(r));
        }
    }
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| berth_runtime::default_cgroups_path(&args.id));

    // The container's stdio.
    let mut stdin_w: Option<File> = None;
    let mut pumps: Vec<(File, &'static str)> = Vec::new();
    let stdio = if terminal {
        ContainerStdio::Terminal
    } else {
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC);
        let made = (|| -> nix::Result<ContainerStdio> {
            let stdin: OwnedFd = if args.stdin {
                let (r, w) = pipe()?;
                stdin_w = Some(File::from(w));
                r
            } else {
                File::open("/dev/null")
                    .map_err(|_| nix::errno::Errno::last())?
                    .into()
            };
            let (or, ow) = pipe()?;
            let (er, ew) = pipe()?;
            pumps.push((File::from(or), "stdout"));
            pumps.push((File::from(er), "stderr"));
            Ok(ContainerStdio::Fds {
                stdin,
                stdout: ow,
                stderr: ew,
            })
        })();
        match made {
            Ok(s) => s,
            Err(e) => return fail(&mut report_w, format!("pipes: {e}")),
        }
    };

    let t0 = Instant::now();
    // `--runtime`: an external OCI runtime named in the spec's annotations.
    let external = external::Runtime::from_spec(&spec, &args.bundle);
    let mut created = match &external {
        Some(rt) => match rt.create(&args.id, &args.bundle, stdio, terminal) {
            Ok(c) => Pending::External(c),
            Err(e) => return fail(&mut report_w, e),
        },
        None => match berth_runtime::create_in(&args.id, &spec, stdio, args.cgroup_root.as_deref())
        {
            Ok(c) => Pending::Builtin(c),
            Err(e) => return fail(&mut report_w, e.to_string()),
        },
    };
    eprintln!("berth-shim: {}: created in {:?}", args.id, t0.elapsed());
    // The parsed spec is not needed any more; free it before the shim settles down.
    drop(spec);
    let pid = created.pid();
    let cgroup = berth_runtime::cgroups::detect_at(
        args.cgroup_root
            .as_deref()
            .unwrap_or(Path::new(berth_runtime::cgroups::DEFAULT_ROOT)),
        &cgroups_path,
    );
    let mut master = None;
    if terminal {
        match created.take_pty_master() {
            Some(m) => {
                let m = File::from(m);
                match m.try_clone() {
                    Ok(r) => pumps.push((r, "stdout")),
                    Err(e) => return fail(&mut report_w, format!("dup pty: {e}")),
                }
                if args.stdin {
                    stdin_w = m.try_clone().ok();
                }
                master = Some(m);
            }
            None => return fail(&mut report_w, "no terminal from the runtime".into()),
        }
    }

    let sock_path = args.bundle.join("shim.sock");
    let _ = std::fs::remove_file(&sock_path);
    let listener = match berth_runtime::unix_socket_path(&sock_path)
        .and_then(|(p, _dir)| UnixListener::bind(p))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = berth_runtime::kill(pid, 9);
            let _ = waitpid(Pid::from_raw(pid), None);
            let _ = cgroup.delete();
            return fail(
                &mut report_w,
                format!("listen on {}: {e}", sock_path.display()),
            );
        }
    };
    let log = if args.no_log {
        None
    } else {
        LogWriter::open(&args.log, args.log_rotation, &args.log_attrs)
            .map_err(|e| eprintln!("berth-shim: open log {}: {e}", args.log.display()))
            .ok()
    };

    let shim = Arc::new(Shim {
        pid,
        terminal,
        stdin_once: args.stdin_once,
        state: Mutex::new(State {
            created: Some(created),
            started: false,
            paused: false,
            pending: 0,
            exit: None,
            waiters: 0,
        }),
        state_cv: Condvar::new(),
        out: Mutex::new(Output {
            log,
            clients: Vec::new(),
            open_streams: pumps.len(),
        }),
        out_cv: Condvar::new(),
        stdin: Mutex::new(stdin_w),
        master,
        cgroup,
        execs: Mutex::new(HashMap::new()),
        bundle: args.bundle.clone(),
        id: args.id.clone(),
        cgroup_root: args.cgroup_root.clone(),
    });
    for (f, stream) in pumps {
        let s = shim.clone();
        spawn(move || pump(&s, f, stream));
    }
    {
        let s = shim.clone();
        spawn(move || accept_loop(&s, listener));
    }
    report(
        &mut report_w,
        &StartupReport {
            pid: Some(pid),
            error: None,
        },
    );
    drop(report_w);
    // Startup code (spec parsing, container setup) will not run again: drop its pages, and
    // give the heap it used back.
    berth_runtime::sys::malloc_trim();
    berth_runtime::sys::text_pages_on_demand();
    berth_runtime::sys::release_file_pages();

    let status = reap_until(pid);
    finish(&shim, status, &args, &sock_path);
    if let Some(rt) = &external {
        rt.delete(&args.id);
    }
    0
}

fn spawn(f: impl FnOnce() + Send + 'static) {
    let r = std::thread::Builder::new().stack_size(STACK).spawn(f);
    if let Err(e) = r {
        eprintln!("berth-shim: spawn thread: {e}");
    }
}

/// Reaps children (we are a subreaper) until the container's init has ended.
fn reap_until(pid: i32) -> ExitStatus {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
            Ok(ws) => {
                if let Some((p, st)) = ExitStatus::from_wait(ws) {
                    if p.as_raw() == pid {
                        return st;
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("berth-shim: waitpid: {e}");
                return ExitStatus {
                    code: 255,
                    signal: None,
                };
            }
        }
    }
}

fn finish(shim: &Arc<Shim>, status: ExitStatus, args: &Args, sock: &Path) {
    // Other processes of the container (without a pid namespace they may survive the init).
    if let Ok(pids) = shim.cgroup.pids() {
        for p in pids {
            let _ = berth_runtime::kill(p, 9);
        }
    }
    // Drain the output into the log (bounded: a process outside may hold a pipe open).
    {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut out = lock(&shim.out);
        while out.open_streams > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            out = shim
                .out_cv
                .wait_timeout(out, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(l) = out.log.as_mut() {
            let _ = l.finish();
        }
    }
    // Reap whatever else ended meanwhile.
    while let Ok(ws) = waitpid(
        None::<Pid>,
        Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
    ) {
        if ws == nix::sys::wait::WaitStatus::StillAlive {
            break;
        }
    }
    let oom = shim.cgroup.oom_kill_count() > 0;
    let ef = ExitFile {
        exit_code: status.code,
        oom_killed: oom,
        finished_at: rfc3339_nano(SystemTime::now()),
    };
    if let Err(e) = write_atomic(
        &args.exit_file,
        &serde_json::to_vec(&ef).unwrap_or_default(),
    ) {
        eprintln!("berth-shim: write {}: {e}", args.exit_file.display());
    }
    // Answer waiters, then close attach connections.
    {
        let mut st = lock(&shim.state);
        st.exit = Some((status.code, oom));
        shim.state_cv.notify_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        while st.waiters > 0 || st.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = shim
                .state_cv
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
    {
        let mut out = lock(&shim.out);
        for c in out.clients.drain(..) {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }
    if let Err(e) = shim.cgroup.delete() {
        eprintln!("berth-shim: {e}");
    }
    let _ = std::fs::remove_file(sock);
}

/// Replaces `path` atomically. Not fsynced: waiters (a `run --rm` among them) are answered only
/// after this, and a machine crash, the only thing an fsync would guard against, ends the
/// container and its record anyway.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Copies one output stream into the log and to attached clients.
fn pump(shim: &Shim, mut f: File, stream: &'static str) {
    // Small for a quiet container; grows to 32 KiB when reads fill it.
    let mut buf = vec![0u8; 4 * 1024];
    let mut lines = LineSplitter::default();
    let id: u8 = if stream == "stdout" { 1 } else { 2 };
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break, // EIO on a pty master once the terminal is gone
        };
        if n == buf.len() && n < 32 * 1024 {
            buf.resize(n * 2, 0);
        }
        let data = &buf[..n];
        let mut out = lock(&shim.out);
        let now = rfc3339_nano(SystemTime::now());
        let entries = lines.push(data);
        write_log(&mut out, &entries, stream, &now);
        let mut frame = Vec::with_capacity(n + 8);
        if !shim.terminal {
            frame.extend_from_slice(&[id, 0, 0, 0]);
            frame.extend_from_slice(&(n as u32).to_be_bytes());
        }
        frame.extend_from_slice(data);
        out.clients.retain_mut(|c| {
            let wants = if id == 1 { c.stdout } else { c.stderr };
            !wants || c.stream.write_all(&frame).is_ok()
        });
    }
    let mut out = lock(&shim.out);
    if let Some(rest) = lines.finish() {
        let now = rfc3339_nano(SystemTime::now());
        write_log(&mut out, &[rest], stream, &now);
    }
    out.open_streams = out.open_streams.saturating_sub(1);
    shim.out_cv.notify_all();
}

fn write_log(out: &mut Output, entries: &[Vec<u8>], stream: &str, now: &str) {
    if let Some(log) = out.log.as_mut() {
        if let Err(e) = log.write_entries(entries, stream, now) {
            eprintln!("berth-shim: write log: {e}");
        }
    }
}

fn accept_loop(shim: &Arc<Shim>, listener: UnixListener) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // Code pages touched by startup or a request are paged out once the shim has been quiet
    // for a second, from this thread, which then only blocks again: the calling thread's own
    // code after the page-out is all that comes back (a request thread would bring back its
    // exit path, and the code of requests still running).
    let mut touched = true;
    loop {
        let timeout = if touched {
            PollTimeout::from(1000u16)
        } else {
            PollTimeout::NONE
        };
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                berth_runtime::sys::malloc_trim();
                berth_runtime::sys::release_file_pages();
                touched = false;
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("berth-shim: poll: {e}");
                return;
            }
        }
        match listener.accept() {
            Ok((c, _)) => {
                touched = true;
                // Counted until its request is read, so that the shim does not exit under a
                // `wait` that arrived just before the container ended.
                lock(&shim.state).pending += 1;
                let s = shim.clone();
                spawn(move || serve(&s, c));
            }
            Err(e) => eprintln!("berth-shim: accept: {e}"),
        }
    }
}

fn send(c: &mut UnixStream, r: &Response) -> bool {
    c.write_all(r.to_line().as_bytes()).is_ok()
}

fn status_of(st: &State) -> Status {
    if st.exit.is_some() {
        Status::Stopped
    } else if st.paused {
        Status::Paused
    } else if st.started {
        Status::Running
    } else {
        Status::Created
    }
}

/// Ends a one-shot request's pending count when dropped (after its answer was sent).
struct Answered(Arc<Shim>);

impl Drop for Answered {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.pending = st.pending.saturating_sub(1);
        self.0.state_cv.notify_all();
    }
}

/// Serves one connection.
fn serve(shim: &Arc<Shim>, conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    let req = proto::read_request(&mut r);
    // A one-shot request stays pending until answered, so that the shim does not exit (after the
    // container ended) between reading it and answering; streams and waits are let go now.
    let one_shot = !matches!(
        req,
        Ok(Request::Wait | Request::Attach { .. } | Request::Exec { .. }) | Err(_)
    );
    let _answered = one_shot.then(|| Answered(shim.clone()));
    {
        let mut st = lock(&shim.state);
        if matches!(req, Ok(Request::Wait)) {
            st.waiters += 1;
        }
        if !one_shot {
            st.pending = st.pending.saturating_sub(1);
        }
        shim.state_cv.notify_all();
    }
    let req = match req {
        Ok(q) => q,
        Err(e) => {
            send(&mut w, &Response::err(format!("bad request: {e}")));
            return;
        }
    };
    match req {
        Request::Attach {
            stdin,
            stdout,
            stderr,
        } => attach(shim, r, w, stdin, stdout, stderr),
        Request::Start => {
            let mut st = lock(&shim.state);
            let resp = match st.created.take() {
                None if st.started => Response::err("container already started"),
                None => Response::err("container cannot be started"),
                Some(c) => match c.start() {
                    Ok(()) => {
                        st.started = true;
                        Response::ok()
                    }
                    Err((msg, exit_code)) => Response {
                        exit_code,
                        ..Response::err(msg)
                    },
                },
            };
            // Answered under the lock: a process that ends at once must not let the shim finish
            // and exit between the start and this answer (berthd would see a closed connection).
            send(&mut w, &resp);
            drop(st);
        }
        Request::Resize {
            width,
            height,
            exec_id,
        } => {
            let exec_master = exec_id.as_ref().map(|id| {
                lock(&shim.execs)
                    .get(id)
                    .map(|e| e.master.clone())
                    .ok_or_else(|| format!("no such exec: {id}"))
            });
            let resp = match (exec_master, &shim.master) {
                (Some(Err(e)), _) => Response::err(e),
                (Some(Ok(None)), _) | (None, None) => Response::err("no terminal to resize"),
                (Some(Ok(Some(m))), _) => resize(m.as_ref(), width, height),
                (None, Some(m)) => resize(m, width, height),
            };
            send(&mut w, &resp);
        }
        Request::Exec {
            id,
            process,
            stdin,
            stdout,
            stderr,
        } => exec_conn(shim, r, w, id, *process, [stdin, stdout, stderr]),
        Request::Pause | Request::Resume => {
            let pause = matches!(req, Request::Pause);
            let mut st = lock(&shim.state);
            let resp = if !st.started || st.exit.is_some() {
                Response::err("container is not running")
            } else if st.paused == pause {
                Response::err(if pause {
                    "container is already paused"
                } else {
                    "container is not paused"
                })
            } else {
                match shim.cgroup.freeze(pause) {
                    Ok(()) => {
                        st.paused = pause;
                        Response::ok()
                    }
                    Err(e) => Response::err(e.to_string()),
                }
            };
            drop(st);
            send(&mut w, &resp);
        }
        Request::Stats => {
            let resp = Response {
                stats: Some(shim.cgroup.stats()),
                ..Response::ok()
            };
            send(&mut w, &resp);
        }
        Request::ExecState { id } => {
            let resp = match lock(&shim.execs).get(&id) {
                None => Response::err(format!("no such exec: {id}")),
                Some(e) => Response {
                    pid: Some(e.pid),
                    status: Some(if e.exit.is_some() {
                        Status::Stopped
                    } else {
                        Status::Running
                    }),
                    exit_code: e.exit,
                    ..Response::ok()
                },
            };
            send(&mut w, &resp);
        }
        Request::Kill { signal, all } => {
            let (running, paused) = {
                let st = lock(&shim.state);
                (st.exit.is_none(), st.paused)
            };
            // A frozen process cannot die: thaw the container after a SIGKILL.
            let thaw = || {
                if paused && signal == 9 {
                    let mut st = lock(&shim.state);
                    if shim.cgroup.freeze(false).is_ok() {
                        st.paused = false;
                    }
                }
            };
            let resp = if !running {
                Response::err("container is not running")
            } else if all {
                let pids = shim.cgroup.pids().unwrap_or_default();
                for p in pids {
                    let _ = berth_runtime::kill(p, signal);
                }
                let _ = berth_runtime::kill(shim.pid, signal);
                thaw();
                Response::ok()
            } else {
                match berth_runtime::kill(shim.pid, signal) {
                    Ok(()) => {
                        thaw();
                        Response::ok()
                    }
                    Err(e) => Response::err(format!("kill: {e}")),
                }
            };
            send(&mut w, &resp);
        }
        Request::State => {
            let st = lock(&shim.state);
            let resp = Response {
                pid: Some(shim.pid),
                status: Some(status_of(&st)),
                exit_code: st.exit.map(|e| e.0),
                ..Response::ok()
            };
            drop(st);
            send(&mut w, &resp);
        }
        Request::Wait => {
            let mut st = lock(&shim.state);
            while st.exit.is_none() {
                st = shim.state_cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            let (code, oom) = st.exit.unwrap_or((255, false));
            drop(st);
            send(
                &mut w,
                &Response {
                    exit_code: Some(code),
                    oom_killed: Some(oom),
                    ..Response::ok()
                },
            );
            let mut st = lock(&shim.state);
            st.waiters -= 1;
            shim.state_cv.notify_all();
        }
    }
}

fn attach(
    shim: &Arc<Shim>,
    mut r: BufReader<UnixStream>,
    mut w: UnixStream,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) {
    {
        let mut out = lock(&shim.out);
        if !send(&mut w, &Response::ok()) {
            return;
        }
        if out.open_streams == 0 && lock(&shim.state).exit.is_some() {
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
        if stdout || stderr {
            // A client that stops reading is dropped rather than stalling the container.
            let _ = w.set_write_timeout(Some(Duration::from_secs(10)));
            match w.try_clone() {
                Ok(stream) => out.clients.push(Client {
                    stream,
                    stdout,
                    stderr,
                }),
                Err(_) => return,
            }
        }
    }
    if !stdin {
        return;
    }
    let _ = r.get_ref().set_read_timeout(None);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut g = lock(&shim.stdin);
        if let Some(f) = g.as_mut() {
            if f.write_all(&buf[..n]).is_err() {
                *g = None;
            }
        }
    }
    if shim.stdin_once && !shim.terminal {
        lock(&shim.stdin).take();
    }
}

fn resize(m: &File, width: u16, height: u16) -> Response {
    match berth_runtime::set_winsize(m, width, height) {
        Ok(()) => Response::ok(),
        Err(e) => Response::err(format!("resize: {e}")),
    }
}

/// Copies a process's output to one connection (stdcopy frames, or raw with a terminal).
fn pump_to(mut f: File, mut conn: UnixStream, stream: u8, raw: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut frame = Vec::with_capacity(n + 8);
        if !raw {
            frame.extend_from_slice(&[stream, 0, 0, 0]);
            frame.extend_from_slice(&(n as u32).to_be_bytes());
        }
        frame.extend_from_slice(&buf[..n]);
        if conn.write_all(&frame).is_err() {
            // Keep draining so the process does not block on a full pipe.
            continue;
        }
    }
}

/// Runs an exec through `berth-shim --exec-helper` (a fresh single-threaded process that can
/// join the container's namespaces) and streams its I/O on this connection.
fn exec_conn(
    shim: &Arc<Shim>,
    mut r: BufReader<UnixStream>,
    mut w: UnixStream,
    id: String,
    process: berth_runtime::oci_spec::runtime::Process,
    [want_stdin, want_stdout, want_stderr]: [bool; 3],
) {
    {
        let st = lock(&shim.state);
        if !st.started || st.exit.is_some() {
            send(&mut w, &Response::err("container is not running"));
            return;
        }
    }
    if lock(&shim.execs).contains_key(&id) {
        send(&mut w, &Response::err(format!("exec id {id} is in use")));
        return;
    }
    let terminal = process.terminal() == Some(true);
    let spawned = (|| -> std::io::Result<_> {
        use std::process::{Command, Stdio};
        let null = || File::options().read(true).write(true).open("/dev/null");
        let (helper_sock, my_sock) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let mut stdin_w = None;
        let mut outs = Vec::new();
        // The process's stdio travels to the helper with the request (SCM_RIGHTS).
        let stdio: Vec<OwnedFd> = if terminal {
            Vec::new()
        } else {
            let i: OwnedFd = if want_stdin {
                let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                stdin_w = Some(File::from(wr));
                rd
            } else {
                null()?.into()
            };
            let (or, ow) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            let (er, ew) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            outs.push((File::from(or), 1u8, want_stdout));
            outs.push((File::from(er), 2u8, want_stderr));
            vec![i, ow, ew]
        };
        // The helper's stdin is its end of the socket.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("--exec-helper")
            .arg("--pid")
            .arg(shim.pid.to_string())
            .arg("--bundle")
            .arg(&shim.bundle)
            .arg("--id")
            .arg(&shim.id);
        if let Some(root) = &shim.cgroup_root {
            cmd.arg("--cgroup-root").arg(root);
        }
        cmd.stdin(Stdio::from(helper_sock))
            .stdout(Stdio::from(null()?))
            .stderr(Stdio::from(null()?));
        let child = cmd.spawn()?;
        drop(cmd);
        // The reaper thread collects the helper; never wait on it here.
        drop(child);
        Ok((my_sock, stdin_w, outs, stdio))
    })();
    let (sock, stdin_w, outs, stdio) = match spawned {
        Ok(x) => x,
        Err(e) => {
            send(&mut w, &Response::err(format!("exec: {e}")));
            return;
        }
    };
    let json = serde_json::to_vec(&process).unwrap_or_default();
    let fds: Vec<_> = stdio.iter().map(|f| f.as_fd()).collect();
    let sent = berth_runtime::sys::send_packet(&sock, &json, &fds);
    drop(fds);
    drop(stdio);
    if let Err(e) = sent {
        send(&mut w, &Response::err(format!("exec: {e}")));
        return;
    }
    let (msg, master) = match berth_runtime::sys::recv_packet(&sock) {
        Ok((m, fds)) => (m, fds.into_iter().next()),
        Err(e) => {
            send(&mut w, &Response::err(format!("exec: {e}")));
            return;
        }
    };
    let pid = match msg.first() {
        Some(b'P') if msg.len() >= 5 => i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]),
        Some(b'E') => {
            let resp: Response = serde_json::from_slice(&msg[1..])
                .unwrap_or_else(|_| Response::err(String::from_utf8_lossy(&msg[1..])));
            send(&mut w, &resp);
            return;
        }
        _ => {
            send(&mut w, &Response::err("exec helper failed"));
            return;
        }
    };
    let master = master.map(|m| Arc::new(File::from(m)));
    lock(&shim.execs).insert(
        id.clone(),
        ExecEntry {
            pid,
            exit: None,
            master: master.clone(),
        },
    );
    if !send(
        &mut w,
        &Response {
            pid: Some(pid),
            ..Response::ok()
        },
    ) {
        return;
    }
    // Output pumps.
    let mut pumps = Vec::new();
    let mut sources: Vec<(File, u8, bool)> = outs;
    if let Some(m) = &master {
        if let Ok(f) = m.try_clone() {
            sources.push((f, 1, want_stdout));
        }
    }
    for (f, stream, wanted) in sources {
        let conn = if wanted { w.try_clone().ok() } else { None };
        let raw = terminal;
        let h = std::thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || match conn {
                Some(c) => pump_to(f, c, stream, raw),
                None => pump_to_nowhere(f),
            });
        if let Ok(h) = h {
            pumps.push(h);
        }
    }
    // Exit watcher: the helper reports the exit code, then the output is drained.
    {
        let shim = shim.clone();
        let id = id.clone();
        let w2 = w.try_clone().ok();
        spawn(move || {
            let code = match berth_runtime::sys::recv_packet(&sock) {
                Ok((m, _)) if m.first() == Some(&b'X') && m.len() >= 5 => {
                    i32::from_le_bytes([m[1], m[2], m[3], m[4]])
                }
                _ => 255,
            };
            for p in pumps {
                let _ = p.join();
            }
            if let Some(e) = lock(&shim.execs).get_mut(&id) {
                e.exit = Some(code);
                e.master = None;
            }
            if let Some(w2) = w2 {
                let _ = w2.shutdown(std::net::Shutdown::Both);
            }
        });
    }
    // Stdin from the client.
    if want_stdin {
        let mut target: Option<Box<dyn Write + Send>> = match (&master, stdin_w) {
            (Some(m), _) => m
                .try_clone()
                .ok()
                .map(|f| Box::new(f) as Box<dyn Write + Send>),
            (None, Some(p)) => Some(Box::new(p)),
            (None, None) => None,
        };
        let _ = r.get_ref().set_read_timeout(None);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(t) = target.as_mut() {
                if t.write_all(&buf[..n]).is_err() {
                    target = None;
                }
            }
        }
        // Closing the pipe ends the process's input (a terminal stays open).
        drop(target);
    }
}

fn pump_to_nowhere(mut f: File) {
    let mut buf = vec![0u8; 16 * 1024];
    while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
}

/// `berth-shim --exec-helper --pid P --bundle DIR --id ID [--cgroup-root DIR]` (stdin: a socket):
/// joins the container of init `P` and runs the process received on the socket with the stdio
/// sent along (or a new terminal), reports `P<pid>` (with the terminal master) or
/// `E<json response>`, then `X<exit code>` when it has ended.
fn exec_helper() -> i32 {
    let mut it = std::env::args().skip(2);
    let (mut pid, mut bundle, mut id, mut cgroup_root) = (None, None, None, None);
    while let Some(a) = it.next() {
        let v = it.next();
        match a.as_str() {
            "--pid" => pid = v.and_then(|v| v.parse::<i32>().ok()),
            "--bundle" => bundle = v.map(PathBuf::from),
            "--id" => id = v,
            "--cgroup-root" => cgroup_root = v.map(PathBuf::from),
            _ => return 2,
        }
    }
    // Our stdin is the socket to the shim; keep it off fd 0.
    let Ok(sock) = nix::unistd::dup(std::io::stdin().as_fd()) else {
        return 2;
    };
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let fail = |resp: Response| {
        let mut m = vec![b'E'];
        m.extend_from_slice(&serde_json::to_vec(&resp).unwrap_or_default());
        let _ = berth_runtime::sys::send_packet(&sock, &m, &[]);
        1
    };
    let (Some(pid), Some(bundle), Some(id)) = (pid, bundle, id) else {
        return fail(Response::err("exec helper: missing arguments"));
    };
    let (msg, mut fds) = match berth_runtime::sys::recv_packet(&sock) {
        Ok(m) => m,
        Err(e) => return fail(Response::err(format!("exec: {e}"))),
    };
    let process: berth_runtime::oci_spec::runtime::Process = match serde_json::from_slice(&msg) {
        Ok(p) => p,
        Err(e) => return fail(Response::err(format!("exec: bad process: {e}"))),
    };
    let spec = match Spec::load(bundle.join("config.json")) {
        Ok(s) => s,
        Err(e) => return fail(Response::err(format!("load config.json: {e}"))),
    };
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| berth_runtime::default_cgroups_path(&id));
    let cgroup = berth_runtime::cgroups::detect_at(
        cgroup_root
            .as_deref()
            .unwrap_or(Path::new(berth_runtime::cgroups::DEFAULT_ROOT)),
        &cgroups_path,
    );
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let stdio = if process.terminal() == Some(true) {
        ContainerStdio::Terminal
    } else if fds.len() == 3 {
        let stderr = fds.pop().expect("three fds");
        let stdout = fds.pop().expect("three fds");
        let stdin = fds.pop().expect("three fds");
        ContainerStdio::Fds {
            stdin,
            stdout,
            stderr,
        }
    } else {
        return fail(Response::err("exec: stdio missing"));
    };
    let mut execed = match berth_runtime::exec(pid, &process, seccomp, cgroup.as_ref(), stdio) {
        Ok(e) => e,
        Err(e) => {
            return fail(Response {
                exit_code: e.exec_exit_code(),
                ..Response::err(e.to_string())
            });
        }
    };
    let master = execed.take_pty_master();
    let mut m = vec![b'P'];
    m.extend_from_slice(&execed.pid().to_le_bytes());
    let fds: Vec<_> = master.iter().map(|f| f.as_fd()).collect();
    if berth_runtime::sys::send_packet(&sock, &m, &fds).is_err() {
        let _ = berth_runtime::kill(execed.pid(), 9);
    }
    drop(master);
    let code = loop {
        match waitpid(Pid::from_raw(execed.pid()), None) {
            Ok(ws) => {
                if let Some((_, st)) = ExitStatus::from_wait(ws) {
                    break st.code;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break 255,
        }
    };
    let mut m = vec![b'X'];
    m.extend_from_slice(&code.to_le_bytes());
    let _ = berth_runtime::sys::send_packet(&sock, &m, &[]);
    0
}
