//! The container's init, running in the cloned child until `execve`.
//!
//! Errors are reported to the parent as text over the sync socket; the child then exits.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, LinuxDeviceType, PosixRlimitType, Spec};

use crate::ContainerStdio;
use crate::mount::{mountinfo, parse_options};
use crate::path::secure_join;
use crate::spec::DEFAULT_PATH;
use crate::sys;

pub(crate) struct InitConfig<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub sock: OwnedFd,
    pub stdio: ContainerStdio,
    pub joins: Vec<(CloneFlags, PathBuf)>,
    pub new_cgroupns: bool,
    pub seccomp: Option<(Vec<crate::seccomp::Insn>, u32)>,
    /// Cloned into a new user namespace: wait for the parent's id maps, then become its root.
    pub userns: bool,
    /// A detached sysfs mount of the joined network namespace, made by the parent (see
    /// `create`), attached where the spec mounts sysfs.
    pub sysfs: Option<OwnedFd>,
}

type R<T = ()> = std::result::Result<T, String>;

trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> R<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> R<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

/// Runs the init; never returns.
pub(crate) fn run(cfg: InitConfig<'_>) -> ! {
    let sock = match sys::dup_min(&cfg.sock, 3) {
        Ok(s) => s,
        Err(_) => sys::exit_now(1),
    };
    match setup(cfg, &sock) {
        Ok(Ready { exec, master }) => {
            let fd = master.as_ref().map(|m| m.as_raw_fd());
            if sys::send_msg(&sock, b"R", fd).is_err() {
                sys::exit_now(1);
            }
            drop(master);
            match sys::recv_msg(&sock) {
                Ok((m, _)) if m.first() == Some(&b'S') => {}
                _ => sys::exit_now(1),
            }
            exec_or_report(&sock, exec)
        }
        Err(e) => report_error(&sock, &e),
    }
}

/// Sends a setup error to the parent and exits.
pub(crate) fn report_error(sock: &OwnedFd, e: &str) -> ! {
    let mut msg = vec![b'E'];
    msg.extend_from_slice(e.as_bytes());
    let _ = sys::send_msg(sock, &msg, None);
    sys::exit_now(1);
}

/// Executes the program, or tells the parent why not (`N`: not in `$PATH`; `X` + errno).
pub(crate) fn exec_or_report(sock: &OwnedFd, exec: Result<ExecArgs, ()>) -> ! {
    let (path, args, env) = match exec {
        Ok(x) => x,
        Err(()) => {
            let _ = sys::send_msg(sock, b"N", None);
            sys::exit_now(127);
        }
    };
    let err = match nix::unistd::execve(&path, &args, &env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let mut msg = vec![b'X'];
    msg.extend_from_slice(&(err as i32).to_le_bytes());
    let _ = sys::send_msg(sock, &msg, None);
    sys::exit_now(if err == Errno::ENOENT { 127 } else { 126 });
}

pub(crate) type ExecArgs = (CString, Vec<CString>, Vec<CString>);

struct Ready {
    /// What to execute, or `Err` when the program was not found in `$PATH`.
    exec: Result<ExecArgs, ()>,
    master: Option<OwnedFd>,
}

fn setup(cfg: InitConfig<'_>, sock: &OwnedFd) -> R<Ready> {
    let spec = cfg.spec;
    let process = spec.process().as_ref().ok_or("no process")?;
    if cfg.userns {
        // Until the maps are written our ids are unmapped (no file can be created): wait, then
        // become the namespace's root (the host's range start) with no supplementary groups.
        match sys::recv_msg(sock) {
            Ok((m, _)) if m.first() == Some(&b'U') => {}
            _ => sys::exit_now(1),
        }
        let root = (Gid::from_raw(0), Uid::from_raw(0));
        nix::unistd::setresgid(root.0, root.0, root.0).ctx(|| "setresgid 0 in userns".into())?;
        nix::unistd::setresuid(root.1, root.1, root.1).ctx(|| "setresuid 0 in userns".into())?;
        nix::unistd::setgroups(&[]).ctx(|| "setgroups in userns".into())?;
    }
    // CVE-2019-5736: the init is the shim's binary until execve; non-dumpable, its
    // /proc/<pid>/exe cannot be opened (for writing the host binary) from the container.
    nix::sys::prctl::set_dumpable(false).ctx(|| "set non-dumpable".into())?;
    let linux = spec.linux().as_ref();
    sys::reset_signals().ctx(|| "reset signals".into())?;
    nix::sys::stat::umask(Mode::empty());

    for (flag, path) in &cfg.joins {
        let f = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .ctx(|| format!("open {}", path.display()))?;
        nix::sched::setns(f, *flag).ctx(|| format!("setns {}", path.display()))?;
    }

    nix::unistd::setsid().ctx(|| "setsid".into())?;
    if let Some(h) = spec.hostname() {
        nix::unistd::sethostname(h).ctx(|| "sethostname".into())?;
    }
    if let Some(d) = spec.domainname() {
        set_domainname(d)?;
    }

    let terminal = process.terminal() == Some(true);
    // The parent joins our cgroups meanwhile (a cgroup join can stall for an RCU grace
    // period): mount everything that does not depend on it first.
    let new_cgroupns = cfg.new_cgroupns;
    let mut joined = || -> R {
        match sys::recv_msg(sock) {
            Ok((m, _)) if m.first() == Some(&b'G') => {}
            _ => sys::exit_now(1),
        }
        if new_cgroupns {
            nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).ctx(|| "unshare cgroup ns".into())?;
        }
        Ok(())
    };
    prepare_rootfs(spec, cfg.rootfs, terminal, cfg.sysfs, &mut joined)?;
    pivot_root(cfg.rootfs)?;
    // The new `/` gets the asked propagation only now: before pivot_root it would reach the host's.
    let prop = root_propagation(spec);
    if prop != (MsFlags::MS_PRIVATE | MsFlags::MS_REC) {
        mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
            .ctx(|| "set rootfs propagation".into())?;
    }

    // Terminal or stdio.
    let master = setup_stdio(cfg.stdio, process, true)?;

    if let Some(l) = linux {
        // sysctls first: /proc/sys is about to become read-only.
        for (k, v) in l.sysctl().iter().flatten() {
            if k.contains("..") || k.contains('/') {
                return Err(format!("invalid sysctl {k}"));
            }
            let p = format!("/proc/sys/{}", k.replace('.', "/"));
            std::fs::write(&p, v).ctx(|| format!("sysctl {k}"))?;
        }
        for p in l.masked_paths().iter().flatten() {
            mask_path(p)?;
        }
        for p in l.readonly_paths().iter().flatten() {
            readonly_path(p)?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        remount_ro(Path::new("/"))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| "oom_score_adj".into())?;
    }
    let exec = finalize(process, cfg.seccomp.as_ref())?;
    Ok(Ready { exec, master })
}

/// Sets up fds 0, 1, 2: a new terminal in the container's devpts (its master is returned) or
/// the given descriptors. With `console`, the terminal is also bound onto `/dev/console`.
pub(crate) fn setup_stdio(
    stdio: ContainerStdio,
    process: &oci_spec::runtime::Process,
    console: bool,
) -> R<Option<OwnedFd>> {
    let mut master = None;
    match stdio {
        ContainerStdio::Terminal => {
            let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
                .ctx(|| "open /dev/ptmx".into())?;
            nix::pty::grantpt(&m).ctx(|| "grantpt".into())?;
            nix::pty::unlockpt(&m).ctx(|| "unlockpt".into())?;
            let name = nix::pty::ptsname_r(&m).ctx(|| "ptsname".into())?;
            let slave = nix::fcntl::open(
                name.as_str(),
                OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open {name}"))?;
            if console && Path::new("/dev/console").exists() {
                mount(
                    Some(name.as_str()),
                    "/dev/console",
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .ctx(|| "bind /dev/console".into())?;
            }
            if let Some(b) = process.console_size() {
                let _ = sys::set_winsize(&m, b.width() as u16, b.height() as u16);
            }
            nix::unistd::dup2_stdin(&slave).ctx(|| "dup2 stdin".into())?;
            nix::unistd::dup2_stdout(&slave).ctx(|| "dup2 stdout".into())?;
            nix::unistd::dup2_stderr(&slave).ctx(|| "dup2 stderr".into())?;
            sys::set_controlling_terminal(std::io::stdin().as_fd())
                .ctx(|| "set controlling terminal".into())?;
            let m: OwnedFd = m.into();
            master = Some(m);
        }
        ContainerStdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            let i = sys::dup_min(&stdin, 3).ctx(|| "dup stdin".into())?;
            let o = sys::dup_min(&stdout, 3).ctx(|| "dup stdout".into())?;
            let e = sys::dup_min(&stderr, 3).ctx(|| "dup stderr".into())?;
            drop((stdin, stdout, stderr));
            nix::unistd::dup2_stdin(&i).ctx(|| "dup2 stdin".into())?;
            nix::unistd::dup2_stdout(&o).ctx(|| "dup2 stdout".into())?;
            nix::unistd::dup2_stderr(&e).ctx(|| "dup2 stderr".into())?;
        }
    }
    Ok(master)
}

/// The last steps before `execve`, shared by the init and `exec`: rlimits, no_new_privs,
/// seccomp, user and capabilities, cwd, umask, program lookup, close-on-exec.
pub(crate) fn finalize(
    process: &oci_spec::runtime::Process,
    seccomp: Option<&(Vec<crate::seccomp::Insn>, u32)>,
) -> R<Result<ExecArgs, ()>> {
    for rl in process.rlimits().iter().flatten() {
        set_rlimit(rl.typ(), rl.soft(), rl.hard())?;
    }
    if process.no_new_privileges() == Some(true) {
        nix::sys::prctl::set_no_new_privs().ctx(|| "no_new_privs".into())?;
    }

    // Without no_new_privs a filter can only be installed while we still have CAP_SYS_ADMIN;
    // with it, as late as possible.
    let nnp = process.no_new_privileges() == Some(true);
    if !nnp {
        if let Some((prog, flags)) = seccomp {
            sys::install_seccomp(prog, *flags).ctx(|| "install seccomp filter".into())?;
        }
    }

    // Identity and capabilities.
    let caps = process.capabilities().as_ref();
    let bounding = to_caps(caps.and_then(|c| c.bounding().as_ref()))?;
    for c in caps::all() {
        if !bounding.contains(&c) && caps::has_cap(None, caps::CapSet::Bounding, c).unwrap_or(false)
        {
            caps::drop(None, caps::CapSet::Bounding, c).ctx(|| format!("drop {c}"))?;
        }
    }
    let user = process.user();
    nix::sys::prctl::set_keepcaps(true).ctx(|| "keepcaps".into())?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).ctx(|| "setgroups".into())?;
    nix::unistd::setgid(Gid::from_raw(user.gid())).ctx(|| "setgid".into())?;
    nix::unistd::setuid(Uid::from_raw(user.uid())).ctx(|| "setuid".into())?;
    nix::sys::prctl::set_keepcaps(false).ctx(|| "keepcaps".into())?;
    let effective = to_caps(caps.and_then(|c| c.effective().as_ref()))?;
    let permitted = to_caps(caps.and_then(|c| c.permitted().as_ref()))?;
    let inheritable = to_caps(caps.and_then(|c| c.inheritable().as_ref()))?;
    let ambient = to_caps(caps.and_then(|c| c.ambient().as_ref()))?;
    caps::set(None, caps::CapSet::Effective, &effective).ctx(|| "set effective caps".into())?;
    caps::set(None, caps::CapSet::Permitted, &permitted).ctx(|| "set permitted caps".into())?;
    caps::set(None, caps::CapSet::Inheritable, &inheritable)
        .ctx(|| "set inheritable caps".into())?;
    let _ = caps::clear(None, caps::CapSet::Ambient);
    for c in ambient {
        caps::raise(None, caps::CapSet::Ambient, c).ctx(|| format!("raise ambient {c}"))?;
    }

    let cwd = process.cwd();
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to cwd ({})", cwd.display()))?;
    let umask = user.umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask as libc::mode_t));

    // The program, resolved in the new root.
    let env: Vec<String> = process.env().clone().unwrap_or_default();
    let args: Vec<String> = process.args().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let exec = match lookup(&args[0], path_var) {
        Some(p) => Ok((
            cstring(&p)?,
            args.iter().map(|a| cstring(a)).collect::<R<Vec<_>>>()?,
            env.iter().map(|a| cstring(a)).collect::<R<Vec<_>>>()?,
        )),
        None => Err(()),
    };
    if nnp {
        if let Some((prog, flags)) = seccomp {
            sys::install_seccomp(prog, *flags).ctx(|| "install seccomp filter".into())?;
        }
    }
    sys::cloexec_from(3).ctx(|| "mark fds close-on-exec".into())?;
    Ok(exec)
}

fn cstring(s: &str) -> R<CString> {
    CString::new(s).ctx(|| format!("{s:?} contains a NUL byte"))
}

/// Resolves a program like Go's `exec.LookPath`: names with a `/` are used as they are.
fn lookup(arg0: &str, path_var: &str) -> Option<String> {
    if arg0.contains('/') {
        return Some(arg0.to_string());
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = format!("{dir}/{arg0}");
        if let Ok(md) = std::fs::metadata(&p) {
            if !md.is_dir() && md.permissions().mode() & 0o111 != 0 {
                return Some(p);
            }
        }
    }
    None
}

fn to_caps(set: Option<&Capabilities>) -> R<caps::CapsHashSet> {
    let mut out = HashSet::new();
    for c in set.into_iter().flatten() {
        let name = serde_json::to_value(c).ctx(|| "capability".into())?;
        let name = name.as_str().unwrap_or_default();
        // Capabilities this kernel/crate does not know are skipped, as runc does.
        if let Ok(cap) = caps::Capability::from_str(name) {
            out.insert(cap);
        }
    }
    Ok(out)
}

fn set_domainname(d: &str) -> R {
    std::fs::write("/proc/sys/kernel/domainname", d).ctx(|| "set domainname".into())
}

fn set_rlimit(t: PosixRlimitType, soft: u64, hard: u64) -> R {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let r = match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    };
    // Never raise a hard limit (root may lack CAP_SYS_RESOURCE).
    let (_, cur_hard) = getrlimit(r).ctx(|| format!("getrlimit {t}"))?;
    let hard = hard.min(cur_hard);
    let soft = soft.min(hard);
    setrlimit(r, soft, hard).ctx(|| format!("setrlimit {t}"))
}

fn prepare_rootfs(
    spec: &Spec,
    rootfs: &Path,
    terminal: bool,
    mut sysfs: Option<OwnedFd>,
    joined: &mut dyn FnMut() -> R,
) -> R {
    let prop = root_propagation(spec);
    // Private unless a bind needs the host's propagation, so that nothing we mount leaks to the
    // host; under a shared `/` the rootfs's own mount is made private instead.
    mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
        .ctx(|| "set / propagation".into())?;
    if prop.contains(MsFlags::MS_SHARED) {
        crate::mount::make_mount_private(rootfs).ctx(|| "make rootfs mount private".into())?;
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind rootfs {}", rootfs.display()))?;

    let mut dev_mounted = false;
    let mut pts_mounted = false;
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        if dest == Path::new("/dev") {
            dev_mounted = true;
        }
        if dest == Path::new("/dev/pts") {
            pts_mounted = true;
        }
        if m.typ().as_deref() == Some("sysfs") {
            if let Some(fd) = sysfs.take() {
                attach_sysfs(rootfs, m, fd)?;
                continue;
            }
        }
        if m.typ().as_deref() != Some("cgroup") {
            do_mount(rootfs, m)?;
        }
    }
    if dev_mounted {
        create_devices(spec, rootfs, terminal, pts_mounted)?;
    }
    joined()?;
    // cgroup filesystems show the cgroup namespace's root: mounted once we joined.
    for m in spec.mounts().iter().flatten() {
        if m.typ().as_deref() == Some("cgroup") {
            do_mount(rootfs, m)?;
        }
    }
    Ok(())
}

fn root_propagation(spec: &Spec) -> MsFlags {
    let linux = spec.linux().as_ref();
    crate::mount::root_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()))
}

fn mkdir_all(p: &Path) -> R {
    std::fs::create_dir_all(p).ctx(|| format!("mkdir {}", p.display()))
}

fn do_mount(rootfs: &Path, m: &oci_spec::runtime::Mount) -> R {
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let dest = secure_join(rootfs, m.destination())
        .ctx(|| format!("resolve {}", m.destination().display()))?;
    let what = || format!("mount {} on {}", typ, m.destination().display());
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    if typ == "cgroup" {
        return mount_cgroups(&dest, opts.flags);
    }
    if typ == "bind" || opts.flags.contains(MsFlags::MS_BIND) {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| format!("{}: no source", what()))?;
        let md = std::fs::metadata(src).ctx(|| format!("bind source {}", src.display()))?;
        if md.is_dir() {
            mkdir_all(&dest)?;
        } else {
            if let Some(parent) = dest.parent() {
                mkdir_all(parent)?;
            }
            if std::fs::symlink_metadata(&dest).is_err() {
                std::fs::File::create(&dest).ctx(|| format!("create {}", dest.display()))?;
            }
        }
        let rec = opts.flags & MsFlags::MS_REC;
        mount(
            Some(src),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | rec,
            None::<&str>,
        )
        .ctx(what)?;
        let rest = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !rest.is_empty() {
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                rest | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
            .ctx(|| format!("remount {}", m.destination().display()))?;
        }
    } else {
        mkdir_all(&dest)?;
        let src = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| typ.to_string());
        match mount(Some(src.as_str()), &dest, Some(typ), opts.flags, data) {
            Ok(()) => {}
            Err(Errno::EPERM) | Err(Errno::EBUSY) if typ == "sysfs" => {
                // No network namespace of our own: sysfs cannot be mounted, bind the host's.
                mount(
                    Some("/sys"),
                    &dest,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .ctx(what)?;
                remount_ro(&dest)?;
            }
            Err(e) => return Err(format!("{}: {e}", what())),
        }
    }
    for p in &opts.propagation {
        mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>)
            .ctx(|| format!("propagation of {}", m.destination().display()))?;
    }
    Ok(())
}

/// Attaches the parent's detached sysfs mount (already nosuid, nodev, noexec) at the mount's
/// destination, read-only when asked.
fn attach_sysfs(rootfs: &Path, m: &oci_spec::runtime::Mount, fd: OwnedFd) -> R {
    use std::os::unix::ffi::OsStrExt;
    let dest = secure_join(rootfs, m.destination())
        .ctx(|| format!("resolve {}", m.destination().display()))?;
    mkdir_all(&dest)?;
    let c = CString::new(dest.as_os_str().as_bytes()).ctx(|| "sysfs destination".into())?;
    sys::move_mount_to(&fd, &c).ctx(|| format!("attach sysfs on {}", m.destination().display()))?;
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        remount_ro(&dest)?;
    }
    Ok(())
}

/// Mounts the container's view of the cgroup hierarchies at `dest` (in its cgroup namespace).
fn mount_cgroups(dest: &Path, flags: MsFlags) -> R {
    mkdir_all(dest)?;
    let host = Path::new(crate::cgroups::DEFAULT_ROOT);
    let info = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read mountinfo".into())?;
    let mounts = mountinfo(&info);
    // The host's options are passed again: a cgroup2 mount in the host's cgroup namespace
    // (`--cgroupns host`) re-applies the root's flags (nsdelegate, favordynmods, ...).
    let data_of = |mi: &crate::mount::MountInfo| -> String {
        let v: Vec<&str> = mi
            .super_options
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect();
        v.join(",")
    };
    if crate::cgroups::is_unified(host) {
        let data = mounts
            .iter()
            .find(|m| m.fstype == "cgroup2" && Path::new(&m.mount_point) == host)
            .map(data_of)
            .unwrap_or_default();
        return mount(
            Some("cgroup"),
            dest,
            Some("cgroup2"),
            flags,
            Some(data.as_str()),
        )
        .ctx(|| "mount cgroup2".into());
    }
    let base = flags & !MsFlags::MS_RDONLY;
    mount(Some("tmpfs"), dest, Some("tmpfs"), base, Some("mode=755"))
        .ctx(|| "mount cgroup tmpfs".into())?;
    for mi in &mounts {
        if mi.fstype != "cgroup" && mi.fstype != "cgroup2" {
            continue;
        }
        let Some(name) = mi.mount_point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if name.contains('/') {
            continue;
        }
        let sub = dest.join(name);
        mkdir_all(&sub)?;
        let data = data_of(mi);
        mount(
            Some("cgroup"),
            &sub,
            Some(mi.fstype.as_str()),
            flags,
            Some(data.as_str()),
        )
        .ctx(|| format!("mount cgroup {name}"))?;
    }
    // Co-mounted controllers are reached through symlinks (cpu -> cpu,cpuacct).
    if let Ok(rd) = std::fs::read_dir(host) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                if let Ok(t) = std::fs::read_link(e.path()) {
                    let _ = symlink(t, dest.join(e.file_name()));
                }
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            dest,
            None::<&str>,
            base | MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT,
            Some("mode=755"),
        )
        .ctx(|| "remount cgroup tmpfs read-only".into())?;
    }
    Ok(())
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn create_devices(spec: &Spec, rootfs: &Path, terminal: bool, pts: bool) -> R {
    let dev = rootfs.join("dev");
    for (name, major, minor) in DEFAULT_DEVICES {
        make_device(&dev.join(name), SFlag::S_IFCHR, major, minor, 0o666, 0, 0)?;
    }
    let extra = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten();
    for d in extra {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let path =
            secure_join(rootfs, d.path()).ctx(|| format!("resolve {}", d.path().display()))?;
        if let Some(parent) = path.parent() {
            mkdir_all(parent)?;
        }
        make_device(
            &path,
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        )?;
    }
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        match symlink(target, dev.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(format!("symlink /dev/{name}: {e}"));
            }
            _ => {}
        }
    }
    if pts {
        let ptmx = dev.join("ptmx");
        let _ = std::fs::remove_file(&ptmx);
        symlink("pts/ptmx", &ptmx).ctx(|| "symlink /dev/ptmx".into())?;
    }
    if terminal {
        let console = dev.join("console");
        if std::fs::symlink_metadata(&console).is_err() {
            std::fs::File::create(&console).ctx(|| "create /dev/console".into())?;
        }
    }
    Ok(())
}

fn make_device(
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> R {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let perm = Mode::from_bits_truncate((mode & 0o7777) as libc::mode_t);
    match mknod(path, kind, perm, makedev(major, minor)) {
        Ok(()) => {}
        Err(Errno::EPERM) => {
            // Not allowed to create nodes: bind the host's node instead.
            std::fs::File::create(path).ctx(|| format!("create {}", path.display()))?;
            let host = format!(
                "/dev/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            mount(
                Some(host.as_str()),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .ctx(|| format!("bind {host}"))?;
            return Ok(());
        }
        Err(e) => return Err(format!("mknod {}: {e}", path.display())),
    }
    nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .ctx(|| format!("chown {}", path.display()))
}

fn pivot_root(rootfs: &Path) -> R {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old = nix::fcntl::open("/", flags, Mode::empty()).ctx(|| "open /".into())?;
    let new = nix::fcntl::open(rootfs, flags, Mode::empty()).ctx(|| "open rootfs".into())?;
    nix::unistd::fchdir(&new).ctx(|| "chdir rootfs".into())?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    nix::unistd::fchdir(&old).ctx(|| "chdir old root".into())?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "make old root slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "unmount old root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    Ok(())
}

fn mask_path(p: &str) -> R {
    let md = match std::fs::symlink_metadata(p) {
        Ok(md) => md,
        Err(_) => return Ok(()),
    };
    let r = if md.is_dir() {
        mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    match r {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("mask {p}: {e}")),
    }
}

fn readonly_path(p: &str) -> R {
    match mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => remount_ro(Path::new(p)),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(format!("bind {p}: {e}")),
    }
}

fn remount_ro(p: &Path) -> R {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Ok(st) = statvfs(p) {
        let f = st.flags();
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if f.contains(fs) {
                flags |= ms;
            }
        }
    }
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>)
        .ctx(|| format!("remount {} read-only", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_like_go() {
        assert_eq!(lookup("/x/y", "/bin"), Some("/x/y".into()));
        assert_eq!(lookup("sh", "/nonexistent:/bin"), Some("/bin/sh".into()));
        assert_eq!(lookup("no-such-prog-xyz", "/bin:/usr/bin"), None);
        // A directory is not an executable.
        assert_eq!(lookup("bin", "/"), None);
    }

    #[test]
    fn docker_caps_map() {
        let s = crate::spec::docker_default_spec();
        let c = s
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let set = to_caps(c.bounding().as_ref()).unwrap();
        let mask: u64 = set.iter().map(|c| c.bitmask()).sum();
        assert_eq!(mask, 0xa80425fb);
    }
}
