//! `create` and `start`: clone the container's init, set up cgroups, release it to `execve`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::{self, CgroupManager};
use crate::init::{self, InitConfig};
use crate::{ExecErrorKind, Result, RuntimeError, sys};

/// The container's standard I/O.
#[derive(Debug)]
pub enum ContainerStdio {
    /// Allocate a terminal inside the container's own devpts (so `tty` shows `/dev/pts/0`);
    /// the master is returned by [`Created::take_pty_master`].
    Terminal,
    /// Three descriptors for stdin, stdout and stderr (stdin may be `/dev/null`).
    Fds {
        /// The container's stdin.
        stdin: OwnedFd,
        /// The container's stdout.
        stdout: OwnedFd,
        /// The container's stderr.
        stderr: OwnedFd,
    },
}

/// The conventional cgroups path of a container: `/berth/<id>`.
pub fn default_cgroups_path(id: &str) -> String {
    format!("/berth/{id}")
}

/// A container whose init is set up and waits to `execve`.
#[derive(Debug)]
pub struct Created {
    pid: Pid,
    sock: OwnedFd,
    pty_master: Option<OwnedFd>,
    cgroup: Box<dyn CgroupManager>,
    arg0: String,
}

/// A container whose process has been executed.
#[derive(Debug)]
pub struct Started {
    pid: Pid,
    cgroup: Box<dyn CgroupManager>,
}

impl Created {
    /// The container's init process id (in the caller's pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The terminal master, for [`ContainerStdio::Terminal`] (once).
    pub fn take_pty_master(&mut self) -> Option<OwnedFd> {
        self.pty_master.take()
    }

    /// The container's cgroups.
    pub fn cgroup(&self) -> &dyn CgroupManager {
        self.cgroup.as_ref()
    }

    /// Lets the init `execve` the user's process. Fails with [`RuntimeError::Exec`] when it
    /// cannot (the init then exits with 127 or 126; the caller still reaps it).
    pub fn start(self) -> Result<Started> {
        sys::send_msg(&self.sock, b"S", None)
            .map_err(|e| RuntimeError::sys("release container init", e))?;
        let (msg, _) =
            sys::recv_msg(&self.sock).map_err(|e| RuntimeError::sys("wait for exec", e))?;
        match msg.first() {
            None => Ok(Started {
                pid: self.pid,
                cgroup: self.cgroup,
            }),
            Some(b'N') => Err(RuntimeError::Exec {
                path: self.arg0,
                kind: ExecErrorKind::NotFoundInPath,
            }),
            Some(b'X') if msg.len() >= 5 => Err(RuntimeError::Exec {
                path: self.arg0,
                kind: ExecErrorKind::Errno(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]])),
            }),
            Some(_) => Err(RuntimeError::Init(
                String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned(),
            )),
        }
    }
}

impl Started {
    /// The container's init process id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The container's cgroups (OOM counter, processes, freeze, delete).
    pub fn cgroup(&self) -> &dyn CgroupManager {
        self.cgroup.as_ref()
    }

    /// Gives up the cgroup manager (e.g. to delete the cgroups after the container ended).
    pub fn into_cgroup(self) -> Box<dyn CgroupManager> {
        self.cgroup
    }
}

fn ns_flag(t: LinuxNamespaceType) -> Result<CloneFlags> {
    Ok(match t {
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        other => {
            return Err(RuntimeError::InvalidSpec(format!(
                "namespace {other:?} is not supported"
            )));
        }
    })
}

/// Creates container `id` from `spec`: clones its init into the spec's namespaces, puts it in
/// its cgroups (`linux.cgroupsPath`, default `/berth/<id>`), lets it build the root filesystem
/// and drop privileges, and returns once it waits for [`Created::start`].
///
/// Must be called from a single-threaded process (it forks; it refuses otherwise).
pub fn create(id: &str, spec: &Spec, stdio: ContainerStdio) -> Result<Created> {
    create_in(id, spec, stdio, None)
}

/// [`create`] with the cgroup hierarchies detected under `cgroup_root` instead of
/// `/sys/fs/cgroup` (for tests and unusual hosts).
pub fn create_in(
    id: &str,
    spec: &Spec,
    stdio: ContainerStdio,
    cgroup_root: Option<&Path>,
) -> Result<Created> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| RuntimeError::InvalidSpec("no process".into()))?;
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .ok_or_else(|| RuntimeError::InvalidSpec("process.args is empty".into()))?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| RuntimeError::InvalidSpec("no root".into()))?;
    let rootfs: PathBuf = std::fs::canonicalize(root.path())
        .map_err(|e| RuntimeError::io(format!("rootfs {}", root.path().display()), e))?;
    if process.terminal() == Some(true) && !matches!(stdio, ContainerStdio::Terminal) {
        return Err(RuntimeError::InvalidSpec(
            "process.terminal needs ContainerStdio::Terminal".into(),
        ));
    }
    let linux = spec.linux().as_ref();

    // Namespaces: new ones are cloned, ones with a path are joined.
    let mut clone_flags = CloneFlags::empty();
    let mut joins: Vec<(CloneFlags, PathBuf)> = Vec::new();
    let mut new_cgroupns = false;
    let mut pid_join: Option<PathBuf> = None;
    for ns in linux
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let flag = ns_flag(ns.typ())?;
        match ns.path() {
            Some(p) if flag == CloneFlags::CLONE_NEWPID => pid_join = Some(p.clone()),
            Some(p) if flag == CloneFlags::CLONE_NEWUSER => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "joining user namespace {} is not supported",
                    p.display()
                )));
            }
            Some(p) if flag == CloneFlags::CLONE_NEWNS => {
                return Err(RuntimeError::InvalidSpec(format!(
                    "joining mount namespace {} is not supported",
                    p.display()
                )));
            }
            Some(p) => joins.push((flag, p.clone())),
            None if flag == CloneFlags::CLONE_NEWCGROUP => new_cgroupns = true,
            None => clone_flags |= flag,
        }
    }
    if !clone_flags.contains(CloneFlags::CLONE_NEWNS) {
        return Err(RuntimeError::InvalidSpec(
            "a mount namespace is required".into(),
        ));
    }

    let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(s) => Some((
            crate::seccomp::compile(s).map_err(RuntimeError::InvalidSpec)?,
            crate::seccomp::filter_flags(s),
        )),
        None => None,
    };

    // Cgroups: created and limited before the init exists.
    let cgroups_path = linux
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| default_cgroups_path(id));
    let cgroup = cgroups::detect_at(
        cgroup_root.unwrap_or(Path::new(cgroups::DEFAULT_ROOT)),
        &cgroups_path,
    );
    cgroup.create()?;
    if let Some(r) = linux.and_then(|l| l.resources().as_ref()) {
        if let Err(e) = cgroup.apply(r) {
            let _ = cgroup.delete();
            return Err(e);
        }
    }

    // Like runc: on cgroup v2 the container's root owns its cgroup (it may make sub-cgroups
    // in its cgroup namespace). Cgroup v1 directories stay the host root's.
    if clone_flags.contains(CloneFlags::CLONE_NEWUSER) {
        if let Some(dir) = cgroup.clone_into_dir() {
            if let Err(e) = chown_cgroup(dir, linux) {
                let _ = cgroup.delete();
                return Err(e);
            }
        }
    }

    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("socketpair", e))?;

    // A new user namespace owns the namespaces cloned with it; the ones to join (a network
    // namespace prepared by the daemon, owned by the host's user namespace) cannot be joined from
    // inside it, so the parent joins them for the clone and the child inherits them.
    let userns = clone_flags.contains(CloneFlags::CLONE_NEWUSER);
    let mut restore_joins = Vec::new();
    let mut sysfs = None;
    if userns {
        for (flag, path) in std::mem::take(&mut joins) {
            match enter_ns(&path, flag) {
                Ok(own) => restore_joins.push((own, flag)),
                Err(e) => {
                    for (own, flag) in restore_joins {
                        let _ = nix::sched::setns(own, flag);
                    }
                    let _ = cgroup.delete();
                    return Err(e);
                }
            }
        }
        // Nor can the container mount a sysfs for a network namespace it does not own: a
        // detached one is made here, in that namespace, and attached by the init.
        if restore_joins
            .iter()
            .any(|(_, f)| *f == CloneFlags::CLONE_NEWNET)
        {
            sysfs = sys::fsmount_sysfs().ok();
        }
    }
    // Joining a pid namespace applies to children: switch for the clone, then switch back.
    let restore_pidns = match &pid_join {
        Some(p) => Some(enter_pidns(p)?),
        None => None,
    };
    // On cgroup v2, start the child in its cgroup; elsewhere (or if clone3 is refused) move it.
    let mut joined = false;
    let mut cloned = Err(nix::errno::Errno::ENOSYS);
    if let Some(dir) = cgroup.clone_into_dir() {
        use nix::fcntl::{OFlag, open};
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        if let Ok(fd) = open(dir, flags, nix::sys::stat::Mode::empty()) {
            cloned = sys::clone_fork_into_cgroup(clone_flags, &fd);
            joined = cloned.is_ok();
        }
    }
    if !joined {
        cloned = sys::clone_fork(clone_flags);
    }
    if let Some(own) = restore_pidns {
        let _ = nix::sched::setns(own, CloneFlags::CLONE_NEWPID);
    }
    for (own, flag) in restore_joins {
        let _ = nix::sched::setns(own, flag);
    }
    let pid = match cloned {
        Err(e) => {
            let _ = cgroup.delete();
            return Err(RuntimeError::sys("clone", e));
        }
        Ok(None) => {
            drop(parent_sock);
            init::run(InitConfig {
                spec,
                rootfs: &rootfs,
                sock: child_sock,
                stdio,
                joins,
                new_cgroupns,
                seccomp,
                userns,
                sysfs,
            })
        }
        Ok(Some(pid)) => pid,
    };
    drop(child_sock);
    drop(stdio);
    drop(sysfs);

    let fail = |e: RuntimeError| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        let _ = cgroup.delete();
        e
    };
    if userns {
        if let Err(e) = write_id_maps(pid, linux) {
            return Err(fail(e));
        }
        if let Err(e) = sys::send_msg(&parent_sock, b"U", None) {
            return Err(fail(RuntimeError::sys("signal container init", e)));
        }
    }
    if !joined {
        if let Err(e) = cgroup.add_pid(pid.as_raw()) {
            return Err(fail(e));
        }
    }
    // If the init already failed, this send fails; its error message is still to be read.
    let sent = sys::send_msg(&parent_sock, b"G", None);
    let (msg, fd) = match sys::recv_msg(&parent_sock) {
        Ok((m, _)) if m.is_empty() && sent.is_err() => {
            let e = sent.err().unwrap_or(nix::errno::Errno::EPIPE);
            return Err(fail(RuntimeError::sys("signal container init", e)));
        }
        Ok(m) => m,
        Err(e) => return Err(fail(RuntimeError::sys("wait for container init", e))),
    };
    match msg.first() {
        Some(b'R') => Ok(Created {
            pid,
            sock: parent_sock,
            pty_master: fd,
            cgroup,
            arg0,
        }),
        Some(_) => Err(fail(RuntimeError::Init(
            String::from_utf8_lossy(&msg[1..]).into_owned(),
        ))),
        None => Err(fail(RuntimeError::Init(
            "container init exited during setup".into(),
        ))),
    }
}

/// Writes the init's `uid_map` and `gid_map` from the spec's mappings (`setgroups` stays
/// `allow`: the maps are written by a privileged parent, and the container may need
/// `setgroups(2)` for its supplementary groups).
fn write_id_maps(pid: Pid, linux: Option<&oci_spec::runtime::Linux>) -> Result<()> {
    let fmt = |m: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        m.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    if uid.is_empty() || gid.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "a user namespace needs linux.uidMappings and linux.gidMappings".into(),
        ));
    }
    for (file, map) in [("uid_map", uid), ("gid_map", gid)] {
        let p = format!("/proc/{pid}/{file}");
        std::fs::write(&p, map.as_bytes())
            .map_err(|e| RuntimeError::io(format!("write {p}"), e))?;
    }
    Ok(())
}

/// The host id of container id 0 in `maps`.
fn root_host_id(maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>) -> Option<u32> {
    maps.into_iter()
        .flatten()
        .find(|m| m.container_id() == 0)
        .map(|m| m.host_id())
}

/// Gives a cgroup v2 directory and its delegation files to the container's mapped root.
fn chown_cgroup(dir: &Path, linux: Option<&oci_spec::runtime::Linux>) -> Result<()> {
    let uid = root_host_id(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = root_host_id(linux.and_then(|l| l.gid_mappings().as_ref()));
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    for f in [
        "",
        "cgroup.procs",
        "cgroup.subtree_control",
        "cgroup.threads",
    ] {
        let p = if f.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(f)
        };
        match std::os::unix::fs::chown(&p, uid, gid) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::io(format!("chown {}", p.display()), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Joins the namespace at `path` (of kind `flag`) and returns a descriptor of the one left.
fn enter_ns(path: &Path, flag: CloneFlags) -> Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let name = match flag {
        CloneFlags::CLONE_NEWNET => "net",
        CloneFlags::CLONE_NEWIPC => "ipc",
        CloneFlags::CLONE_NEWUTS => "uts",
        CloneFlags::CLONE_NEWCGROUP => "cgroup",
        _ => {
            return Err(RuntimeError::InvalidSpec(format!(
                "cannot join {} with a new user namespace",
                path.display()
            )));
        }
    };
    let own = open(
        format!("/proc/self/ns/{name}").as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys(format!("open own {name} namespace"), e))?;
    let target = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| RuntimeError::sys(format!("open {}", path.display()), e))?;
    nix::sched::setns(&target, flag)
        .map_err(|e| RuntimeError::sys(format!("setns {}", path.display()), e))?;
    Ok(own)
}

fn enter_pidns(path: &Path) -> Result<OwnedFd> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    let own = open(
        "/proc/self/ns/pid",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys("open own pid namespace", e))?;
    let target = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| RuntimeError::sys(format!("open {}", path.display()), e))?;
    nix::sched::setns(&target, CloneFlags::CLONE_NEWPID)
        .map_err(|e| RuntimeError::sys(format!("setns {}", path.display()), e))?;
    Ok(own)
}
