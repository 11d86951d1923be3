//! `berth-shim --init -- CMD [ARG...]`: the container's PID 1 for `--init` (the job of
//! docker-init/tini). It runs CMD as its child, forwards every signal it receives to it, reaps
//! every zombie that is reparented to it, and exits with CMD's status (128+N after signal N).
//!
//! Signals are blocked and taken with `sigwait`: the kernel drops signals sent to a namespace's
//! init when it has no handler, but never ignores a blocked one, so this is how PID 1 still
//! receives `docker stop`'s SIGTERM or a `kill -HUP 1` from inside.

use std::ffi::CString;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Runs the init; returns the exit code.
pub fn run(cmd: &[String]) -> i32 {
    if cmd.is_empty() {
        eprintln!("berth-init: no command given");
        return 1;
    }
    let all = SigSet::all();
    if let Err(e) = all.thread_block() {
        eprintln!("berth-init: block signals: {e}");
        return 1;
    }
    let child = match berth_runtime::fork() {
        Err(e) => {
            eprintln!("berth-init: fork: {e}");
            return 1;
        }
        Ok(berth_runtime::ForkResult::Child) => {
            let _ = all.thread_unblock();
            let args: Vec<CString> = cmd
                .iter()
                .filter_map(|a| CString::new(a.as_bytes()).ok())
                .collect();
            let e = nix::unistd::execvp(&args[0], &args).unwrap_err();
            eprintln!("berth-init: exec {}: {e}", cmd[0]);
            std::process::exit(if e == nix::errno::Errno::ENOENT {
                127
            } else {
                126
            });
        }
        Ok(berth_runtime::ForkResult::Parent { child }) => child,
    };
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        // Reap everything that has ended; stop when the command itself has.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return code,
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
