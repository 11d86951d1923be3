//! The project's only `unsafe` code and raw system calls, each behind a safe function.
//!
//! Everything else in Berth calls these (or safe wrappers of `nix`/`caps`).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

pub use nix::unistd::ForkResult;

mod ioctls {
    nix::ioctl_write_ptr_bad!(ioctl_tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
    nix::ioctl_write_int_bad!(ioctl_tiocsctty, libc::TIOCSCTTY);
}
use ioctls::{ioctl_tiocsctty, ioctl_tiocswinsz};

/// Number of threads of the calling process (from `/proc/self/stat`).
pub fn thread_count() -> usize {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    rest.split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn ensure_single_threaded() -> nix::Result<()> {
    if thread_count() > 1 {
        // Forking a multithreaded process can deadlock the child on locks held by other threads.
        return Err(Errno::EDEADLK);
    }
    Ok(())
}

/// `fork(2)`; refuses (EDEADLK) when the process has more than one thread.
pub fn fork() -> nix::Result<ForkResult> {
    ensure_single_threaded()?;
    // SAFETY: the process is single-threaded (checked above), so the child cannot inherit a lock
    // held by another thread; the child may use any function, as after a normal fork.
    unsafe { nix::unistd::fork() }
}

/// `clone(2)` with `flags | SIGCHLD` and no new stack: returns `None` in the child (which runs
/// on a copy of the parent's memory, like `fork`), `Some(pid)` in the parent.
pub(crate) fn clone_fork(flags: CloneFlags) -> nix::Result<Option<Pid>> {
    ensure_single_threaded()?;
    let flags = flags.bits() as libc::c_long | libc::SIGCHLD as libc::c_long;
    // SAFETY: raw clone without CLONE_VM and a null stack behaves like fork(): the child gets a
    // copy-on-write copy of the address space and continues on its own copy of the stack. The
    // process is single-threaded (checked above), so no lock is held by a vanished thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// `clone3(2)` with `CLONE_INTO_CGROUP`: like [`clone_fork`], but the child starts in the
/// cgroup v2 directory `cgroup` (no migration, so no cgroup write lock and no RCU stall).
pub(crate) fn clone_fork_into_cgroup(
    flags: CloneFlags,
    cgroup: impl AsFd,
) -> nix::Result<Option<Pid>> {
    ensure_single_threaded()?;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    let args = CloneArgs {
        flags: flags.bits() as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_fd().as_raw_fd() as u64,
    };
    // SAFETY: `args` is a valid clone_args of the size passed and outlives the call. With no
    // stack and no CLONE_VM the child continues like after fork() on a copy of our memory; the
    // process is single-threaded (checked above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Mounts an overlay with the new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`),
/// giving each lower dir with `lowerdir+` (Linux 6.8+), so the number of layers is not limited
/// by the one-page option string of `mount(2)`. `lowers` are topmost first.
pub(crate) fn mount_overlay_fsconfig(
    target: &std::ffi::CStr,
    lowers: &[std::ffi::CString],
    upper: &std::ffi::CStr,
    work: &std::ffi::CStr,
) -> nix::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    fn check(r: libc::c_long) -> nix::Result<libc::c_long> {
        if r < 0 { Err(Errno::last()) } else { Ok(r) }
    }
    // SAFETY: the name is a NUL-terminated string literal; fsopen returns a new descriptor.
    let fs =
        check(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a fresh descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    let set = |key: &std::ffi::CStr, value: &std::ffi::CStr| -> nix::Result<()> {
        // SAFETY: key and value are NUL-terminated strings that outlive the call; `fs` is an
        // open filesystem context.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })
        .map(|_| ())
    };
    for l in lowers {
        set(c"lowerdir+", l)?;
    }
    set(c"upperdir", upper)?;
    set(c"workdir", work)?;
    // SAFETY: a create command on an open filesystem context; no pointers are passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on the created context returns a new mount descriptor.
    let mnt =
        check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    // SAFETY: fsmount returned a fresh descriptor that nothing else owns.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as RawFd) };
    // SAFETY: the empty path and the target are NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(|_| ())
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`), id-mapped through the
/// user namespace `userns` (`mount_setattr(MOUNT_ATTR_IDMAP)`): files owned by uid N on disk show
/// as the namespace's mapping of N.
pub(crate) fn open_tree_idmapped(path: &std::ffi::CStr, userns: impl AsFd) -> nix::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    // SAFETY: `path` is a NUL-terminated string that outlives the call; open_tree returns a new
    // descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: open_tree returned a fresh descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed and outlives the call; the empty
    // path is a NUL-terminated literal; `tree` is an open detached mount.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(tree)
}

/// A new, detached sysfs mount (`fsopen`/`fsmount`, nosuid, nodev, noexec) showing the calling
/// thread's network namespace, for a container whose user namespace does not own the network
/// namespace it joins (sysfs can only be mounted with `CAP_SYS_ADMIN` over the latter).
pub(crate) fn fsmount_sysfs() -> nix::Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID_NODEV_NOEXEC: libc::c_uint = 0x2 | 0x4 | 0x8;
    fn check(r: libc::c_long) -> nix::Result<libc::c_long> {
        if r < 0 { Err(Errno::last()) } else { Ok(r) }
    }
    // SAFETY: the name is a NUL-terminated string literal; fsopen returns a new descriptor.
    let fs = check(unsafe { libc::syscall(libc::SYS_fsopen, c"sysfs".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: fsopen returned a fresh descriptor that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    // SAFETY: a create command on an open filesystem context; no pointers are passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount on the created context returns a new mount descriptor.
    let mnt = check(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NOSUID_NODEV_NOEXEC,
        )
    })?;
    // SAFETY: fsmount returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

/// Attaches the detached mount `mnt` at `target` (`move_mount(MOVE_MOUNT_F_EMPTY_PATH)`).
pub(crate) fn move_mount_to(mnt: impl AsFd, target: &std::ffi::CStr) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: the empty path and the target are NUL-terminated strings that outlive the call;
    // `mnt` is an open mount descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Installs a seccomp BPF filter on the calling thread (`seccomp(SECCOMP_SET_MODE_FILTER)`).
pub(crate) fn install_seccomp(prog: &[crate::seccomp::Insn], flags: u32) -> nix::Result<()> {
    let filter: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    // SAFETY: `fprog` points at `filter`, both alive for the call; the kernel copies the
    // program and only reads through the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_uint,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program and attaches it to the cgroup v2 directory
/// `cgroup` (`BPF_F_ALLOW_MULTI`). The attachment lives as long as the cgroup.
pub(crate) fn attach_device_filter(
    prog: &[crate::cgroups::devices_bpf::BpfInsn],
    cgroup: impl AsFd,
) -> nix::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    #[repr(C)]
    struct Insn {
        code: u8,
        regs: u8,
        off: i16,
        imm: i32,
    }
    #[repr(C)]
    #[derive(Default)]
    struct LoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
        _pad: [u64; 8],
    }
    #[repr(C)]
    #[derive(Default)]
    struct AttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
        _pad: [u32; 11],
    }
    let insns: Vec<Insn> = prog
        .iter()
        .map(|i| Insn {
            code: i.code,
            regs: i.regs,
            off: i.off,
            imm: i.imm,
        })
        .collect();
    let mut name = [0u8; 16];
    name[..5].copy_from_slice(b"berth");
    let load = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: c"Apache".as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    // SAFETY: `load` is a valid bpf_attr prefix (zero-padded) whose pointers (instructions,
    // license) outlive the call; the kernel only reads them and returns a new descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const LoadAttr,
            std::mem::size_of::<LoadAttr>(),
        )
    };
    if fd < 0 {
        let e = Errno::last();
        // Leave the verifier's reason in the log (stderr: the shim's log).
        let mut log = vec![0u8; 64 * 1024];
        let retry = LoadAttr {
            log_level: 1,
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            ..load
        };
        // SAFETY: as above; the kernel writes at most `log_size` bytes into `log`.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &retry as *const LoadAttr,
                std::mem::size_of::<LoadAttr>(),
            )
        };
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        eprintln!(
            "berth-runtime: device filter refused: {}",
            String::from_utf8_lossy(&log[..end])
        );
        return Err(e);
    }
    // SAFETY: BPF_PROG_LOAD returned a fresh descriptor that nothing else owns.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attach = AttachAttr {
        target_fd: cgroup.as_fd().as_raw_fd() as u32,
        attach_bpf_fd: prog_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: `attach` is a valid, zero-padded bpf_attr for BPF_PROG_ATTACH with open fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const AttachAttr,
            std::mem::size_of::<AttachAttr>(),
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Sends one message on a `SOCK_SEQPACKET` socket with descriptors attached (`SCM_RIGHTS`).
pub fn send_packet(
    sock: impl AsFd,
    data: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    send_fds(sock, data, &raw)
}

/// Receives one message (and the descriptors attached to it, close-on-exec) from a
/// `SOCK_SEQPACKET` socket; the message is empty at EOF.
pub fn recv_packet(sock: impl AsFd) -> nix::Result<(Vec<u8>, Vec<OwnedFd>)> {
    recv_fds(sock)
}

/// Asks the kernel to reclaim the calling process's clean pages of private file mappings
/// (program text and data, `MADV_PAGEOUT`): a long-idle process such as the shim then keeps
/// only what it touches again. Best effort.
pub fn release_file_pages() {
    for (start, len, _) in private_file_mappings() {
        // SAFETY: MADV_PAGEOUT on a private file mapping only reclaims pages whose contents can
        // be restored (clean file pages are read back; modified pages would go to swap); what
        // the process reads at any address does not change.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_PAGEOUT);
        }
    }
}

/// The calling process's private mappings of files: (start address, length, permissions).
fn private_file_mappings() -> Vec<(usize, usize, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        if !path.starts_with('/') || perms.contains('s') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
            out.push((start, end - start, perms.to_string()));
        }
    }
    out
}

/// `setsid(2)`: the calling process leads a new session (for daemonizing the shim).
pub fn daemonize_setsid() -> nix::Result<()> {
    nix::unistd::setsid().map(|_| ())
}

/// Makes the calling process a child subreaper: orphaned descendants are reparented to it.
pub fn set_child_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Opens a new pseudo-terminal pair on the host's devpts: `(master, slave)`.
pub fn openpty() -> nix::Result<(OwnedFd, OwnedFd)> {
    let r = nix::pty::openpty(None, None)?;
    Ok((r.master, r.slave))
}

/// Sets a terminal's window size (`TIOCSWINSZ`) to `width` columns and `height` rows.
pub fn set_winsize(fd: impl AsFd, width: u16, height: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points at a live local.
    unsafe { ioctl_tiocswinsz(fd.as_fd().as_raw_fd(), &ws) }.map(|_| ())
}

/// Makes the terminal `fd` the controlling terminal of the calling session (`TIOCSCTTY`).
pub(crate) fn set_controlling_terminal(fd: impl AsFd) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); no memory is passed.
    unsafe { ioctl_tiocsctty(fd.as_fd().as_raw_fd(), 0) }.map(|_| ())
}

/// Sends signal number `sig` to `pid` (`sig` 0 only checks that the process exists).
pub fn kill(pid: i32, sig: i32) -> nix::Result<()> {
    let sig = if sig == 0 {
        None
    } else {
        Some(Signal::try_from(sig)?)
    };
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
}

/// Restores every signal's disposition to the default and unblocks all signals
/// (ignored signals, such as SIGPIPE ignored by Rust's runtime, would survive `execve`).
pub(crate) fn reset_signals() -> nix::Result<()> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler, so no Rust code can run in signal context.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Marks every file descriptor `>= min` close-on-exec.
pub(crate) fn cloexec_from(min: RawFd) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets the FD_CLOEXEC flag on descriptors;
    // it closes nothing, so no OwnedFd in this process is invalidated.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            min as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Older kernels: walk /proc/self/fd.
    let entries = std::fs::read_dir("/proc/self/fd").map_err(|_| Errno::last())?;
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= min)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD only changes the descriptor's flags; an fd that was the read_dir's own
        // (now closed) descriptor yields EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Duplicates `fd` to a new close-on-exec descriptor numbered at least `min`.
pub(crate) fn dup_min(fd: impl AsFd, min: RawFd) -> nix::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Ends the calling process at once with `code`, without running atexit handlers or
/// flushing stdio (for a forked child that must not touch its parent's state).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Sends one datagram (`SOCK_SEQPACKET`) with an optional file descriptor attached.
pub(crate) fn send_msg(sock: impl AsFd, data: &[u8], fd: Option<RawFd>) -> nix::Result<()> {
    send_fds(sock, data, fd.as_slice())
}

fn send_fds(sock: impl AsFd, data: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let iov = [std::io::IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        match sendmsg::<UnixAddr>(
            sock.as_fd().as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Receives one datagram and the first file descriptor attached to it (close-on-exec);
/// an empty message means the peer closed its end.
pub(crate) fn recv_msg(sock: impl AsFd) -> nix::Result<(Vec<u8>, Option<OwnedFd>)> {
    let (data, fds) = recv_fds(sock)?;
    Ok((data, fds.into_iter().next()))
}

fn recv_fds(sock: impl AsFd) -> nix::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    let mut buf = vec![0u8; 256 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut reset_seen = false;
    let (n, fds) = loop {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        match recvmsg::<UnixAddr>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            // A peer that closed with our last message unread leaves ECONNRESET, which a
            // seqpacket socket reports (once) before the datagrams already queued, such as the
            // error a failing container init sent just before it exited: read on.
            Err(Errno::ECONNRESET) if !reset_seen => reset_seen = true,
            Err(e) => return Err(e),
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(r) = c {
                        fds.extend(r);
                    }
                }
                break (msg.bytes, fds);
            }
        }
    };
    buf.truncate(n);
    let owned = fds
        .into_iter()
        .map(|f| {
            // SAFETY: SCM_RIGHTS just installed this descriptor in our table; nothing else owns it.
            unsafe { OwnedFd::from_raw_fd(f) }
        })
        .collect();
    Ok((buf, owned))
}

/// How a process ended, as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, or 128 + signal number when killed by a signal.
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// Converts a `waitpid` status of an ended process; `None` for stop/continue events.
    pub fn from_wait(ws: WaitStatus) -> Option<(Pid, ExitStatus)> {
        match ws {
            WaitStatus::Exited(pid, code) => Some((pid, ExitStatus { code, signal: None })),
            WaitStatus::Signaled(pid, sig, _) => Some((
                pid,
                ExitStatus {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                },
            )),
            _ => None,
        }
    }
}

/// glibc malloc for a small long-lived process: at most `arenas` arenas (glibc makes up to 8 per
/// core, one per thread that contends, and keeps each one's freed pages) and free memory at the
/// top of the heap returned beyond 128 KiB (fixed: glibc would raise it after large frees).
/// Fixing that also fixes the mmap threshold, so it is set to 1 MiB: network read buffers of a
/// few hundred KiB then come from the heap again instead of a fresh mapping (page faults, zeroing
/// and a TLB shootdown per buffer: most of a cached build's daemon time).
/// No effect with another libc.
pub fn malloc_tune(arenas: i32) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = arenas;
}

/// Returns the allocator's free pages, in every arena, to the kernel (glibc `malloc_trim`).
pub fn malloc_trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes the arena locks itself; it only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Marks the process's program-text mappings `MADV_RANDOM`: a page read back after
/// [`release_file_pages`] comes alone, without the read-around that would map its neighbours
/// too. For processes that idle long (the shim). Best effort.
pub fn text_pages_on_demand() {
    for (start, len, perms) in private_file_mappings() {
        if perms.contains('x') {
            // SAFETY: MADV_RANDOM is advice on read-ahead only; no memory contents change.
            unsafe {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_RANDOM);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_sent_before_a_reset_is_still_read() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        // `b` (a failing init) reports an error and closes with `a`'s message unread.
        send_msg(&a, b"G", None).unwrap();
        send_msg(&b, b"Ebind failed", None).unwrap();
        drop(b);
        assert_eq!(recv_msg(&a).unwrap().0, b"Ebind failed");
        assert!(recv_msg(&a).unwrap().0.is_empty());
    }

    #[test]
    fn exit_status_of_signal_is_128_plus() {
        let ws = WaitStatus::Signaled(Pid::from_raw(5), Signal::SIGKILL, false);
        assert_eq!(ExitStatus::from_wait(ws).unwrap().1.code, 137);
        let ws = WaitStatus::Exited(Pid::from_raw(5), 3);
        assert_eq!(ExitStatus::from_wait(ws).unwrap().1.code, 3);
    }

    #[test]
    fn thread_count_sees_test_threads() {
        assert!(thread_count() >= 1);
    }

    #[test]
    fn winsize_on_pty() {
        let (m, _s) = openpty().unwrap();
        set_winsize(&m, 100, 40).unwrap();
    }
}
