//! `exec`: run another process inside a running container (setns, cgroups, same confinement).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxSeccomp, Process};

use crate::cgroups::CgroupManager;
use crate::init;
use crate::{ContainerStdio, ExecErrorKind, Result, RuntimeError, sys};

/// A process started inside a running container.
#[derive(Debug)]
pub struct Execed {
    pid: Pid,
    pty_master: Option<OwnedFd>,
}

impl Execed {
    /// Its process id (in the caller's pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The terminal master, for [`ContainerStdio::Terminal`] (once).
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }
}

/// Namespaces joined by `exec`, in order (the mount namespace after the others: `/proc` paths are opened
/// before).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
    // Last: joined from the host's user namespace, every other one can be entered (a network
    // namespace owned by the host's user namespace could not be from inside the container's).
    ("user", CloneFlags::CLONE_NEWUSER),
];

/// Starts `process` inside the container whose init is `container_pid`: joins its cgroups and
/// namespaces, then forks the process with the given stdio, user, capabilities, rlimits and
/// `seccomp` profile, and returns once it has executed (or fails with
/// [`RuntimeError::Exec`], like [`crate::Created::start`]).
///
/// The calling process joins the container's cgroups and namespaces itself, so it must be a
/// dedicated, single-threaded process (the shim runs `berth-shim --exec-helper` for this); it
/// is the parent of the new process and should wait for it.
pub fn exec(
    container_pid: i32,
    process: &Process,
    seccomp: Option<&LinuxSeccomp>,
    cgroup: &dyn CgroupManager,
    stdio: ContainerStdio,
) -> Result<Execed> {
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .ok_or_else(|| RuntimeError::InvalidSpec("process.args is empty".into()))?;
    if process.terminal() == Some(true) && !matches!(stdio, ContainerStdio::Terminal) {
        return Err(RuntimeError::InvalidSpec(
            "process.terminal needs ContainerStdio::Terminal".into(),
        ));
    }
    let seccomp = match seccomp {
        Some(s) => Some((
            crate::seccomp::compile(s).map_err(RuntimeError::InvalidSpec)?,
            crate::seccomp::filter_flags(s),
        )),
        None => None,
    };
    let mut fds = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{container_pid}/ns/{name}");
        let own = format!("/proc/self/ns/{name}");
        if std::fs::read_link(&path).ok() == std::fs::read_link(&own).ok() {
            continue; // shared with us (e.g. no namespace of this kind)
        }
        let fd = nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| RuntimeError::sys(format!("open {path}"), e))?;
        fds.push((fd, flag, name));
    }
    // CVE-2019-5736: while this process (the shim's binary) is inside the container's
    // namespaces, its /proc/<pid>/exe must not be openable from there; a non-dumpable process
    // needs CAP_SYS_PTRACE on the host for that. execve makes the user's program dumpable again.
    nix::sys::prctl::set_dumpable(false).map_err(|e| RuntimeError::sys("set non-dumpable", e))?;
    cgroup.add_pid(std::process::id() as i32)?;
    for (fd, flag, name) in fds {
        nix::sched::setns(fd, flag).map_err(|e| RuntimeError::sys(format!("setns {name}"), e))?;
    }
    nix::unistd::chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))?;

    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("socketpair", e))?;
    let pid = match sys::fork().map_err(|e| RuntimeError::sys("fork", e))? {
        ForkResult::Child => {
            drop(parent_sock);
            let sock = match sys::dup_min(&child_sock, 3) {
                Ok(s) => s,
                Err(_) => sys::exit_now(1),
            };
            drop(child_sock);
            let ready = (|| -> std::result::Result<_, String> {
                sys::reset_signals().map_err(|e| format!("reset signals: {e}"))?;
                nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
                let master = init::setup_stdio(stdio, process, false)?;
                let exec = init::finalize(process, seccomp.as_ref())?;
                Ok((master, exec))
            })();
            match ready {
                Ok((master, exec)) => {
                    let fd = master.as_ref().map(|m| m.as_raw_fd());
                    if sys::send_msg(&sock, b"R", fd).is_err() {
                        sys::exit_now(1);
                    }
                    drop(master);
                    init::exec_or_report(&sock, exec)
                }
                Err(e) => init::report_error(&sock, &e),
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(child_sock);
    drop(stdio);
    let fail = |e: RuntimeError| {
        let _ = nix::sys::wait::waitpid(pid, None);
        e
    };
    let (msg, master) =
        sys::recv_msg(&parent_sock).map_err(|e| fail(RuntimeError::sys("wait for exec", e)))?;
    match msg.first() {
        Some(b'R') => {}
        Some(_) => {
            return Err(fail(RuntimeError::Init(
                String::from_utf8_lossy(&msg[1..]).into_owned(),
            )));
        }
        None => return Err(fail(RuntimeError::Init("exec process died".into()))),
    }
    let (msg, _) =
        sys::recv_msg(&parent_sock).map_err(|e| fail(RuntimeError::sys("wait for exec", e)))?;
    match msg.first() {
        None => Ok(Execed {
            pid,
            pty_master: master,
        }),
        Some(b'N') => Err(fail(RuntimeError::Exec {
            path: arg0,
            kind: ExecErrorKind::NotFoundInPath,
        })),
        Some(b'X') if msg.len() >= 5 => Err(fail(RuntimeError::Exec {
            path: arg0,
            kind: ExecErrorKind::Errno(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]])),
        })),
        Some(_) => Err(fail(RuntimeError::Init(
            String::from_utf8_lossy(&msg[1..]).into_owned(),
        ))),
    }
}
