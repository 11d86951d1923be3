//! Docker's seccomp profile format (`--security-opt seccomp=<file.json>`) and the Engine's
//! default profile, resolved for one container into an OCI `linux.seccomp`.
//!
//! A Docker profile's rules may depend on the architecture, the kernel version and the
//! container's capabilities (`includes`/`excludes`): a container given `CAP_SYS_ADMIN` may
//! call `mount`, one without it may not. The resolution happens when the container's spec is
//! built, so the runtime only ever sees a plain OCI profile.

use oci_spec::runtime::LinuxSeccomp;
use serde::Deserialize;
use serde_json::{Value, json};

/// Docker's default profile (same allowlist, argument rules and capability-dependent parts as
/// the Engine's `profiles/seccomp/default.json`), kept as data.
const DEFAULT_PROFILE: &str = include_str!("seccomp_default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: Value,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    flags: Vec<Value>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    /// The old single-name form.
    #[serde(default)]
    name: Option<String>,
    action: Value,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Docker's name for this machine's architecture.
fn native_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        std::env::consts::ARCH
    }
}

/// `major.minor` of a kernel release string (`6.18.0-foo` → `(6, 18)`).
fn parse_kernel(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn running_kernel() -> (u32, u32) {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| parse_kernel(&u.release().to_string_lossy()))
        .unwrap_or((0, 0))
}

fn has_cap(caps: &[String], c: &str) -> bool {
    caps.iter().any(|x| x.eq_ignore_ascii_case(c))
}

/// Resolves a profile for a container with `caps` on a kernel `kernel`.
fn resolve(p: Profile, caps: &[String], kernel: (u32, u32)) -> Result<LinuxSeccomp, String> {
    let arch = native_arch();
    let mut out = Vec::new();
    for r in p.syscalls {
        let inc = &r.includes;
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
            continue;
        }
        if !inc.caps.iter().all(|c| has_cap(caps, c)) {
            continue;
        }
        if let Some(k) = inc.min_kernel.as_deref() {
            let min = parse_kernel(k).ok_or_else(|| format!("invalid minKernel {k:?}"))?;
            if kernel < min {
                continue;
            }
        }
        let exc = &r.excludes;
        if exc.arches.iter().any(|a| a == arch) || exc.caps.iter().any(|c| has_cap(caps, c)) {
            continue;
        }
        if let Some(k) = exc.min_kernel.as_deref() {
            let min = parse_kernel(k).ok_or_else(|| format!("invalid minKernel {k:?}"))?;
            if kernel >= min {
                continue;
            }
        }
        let mut names = r.names;
        names.extend(r.name);
        if names.is_empty() {
            continue;
        }
        let mut o = json!({"names": names, "action": r.action});
        if let Some(e) = r.errno_ret {
            o["errnoRet"] = json!(e);
        }
        if let Some(a) = r.args.filter(|a| !a.is_empty()) {
            o["args"] = json!(a);
        }
        out.push(o);
    }
    let mut s = json!({"defaultAction": p.default_action, "syscalls": out});
    if let Some(e) = p.default_errno_ret {
        s["defaultErrnoRet"] = json!(e);
    }
    if !p.flags.is_empty() {
        s["flags"] = json!(p.flags);
    }
    serde_json::from_value(s).map_err(|e| format!("invalid seccomp profile: {e}"))
}

/// Docker's default profile for a container with the capabilities `caps` (`CAP_…` names).
pub fn docker_default(caps: &[String]) -> LinuxSeccomp {
    let p: Profile = serde_json::from_str(DEFAULT_PROFILE).expect("built-in profile parses");
    resolve(p, caps, running_kernel()).expect("built-in profile resolves")
}

/// A profile in Docker's format (the content of `--security-opt seccomp=<file>`), resolved for
/// a container with the capabilities `caps`.
pub fn from_docker_json(text: &str, caps: &[String]) -> Result<LinuxSeccomp, String> {
    let p: Profile =
        serde_json::from_str(text).map_err(|e| format!("decoding seccomp profile failed: {e}"))?;
    resolve(p, caps, running_kernel())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.args().as_ref().is_none_or(|a| a.is_empty()))
            .filter(|r| r.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
            .flat_map(|r| r.names().clone())
            .collect()
    }

    const DOCKER_CAPS: [&str; 14] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];

    #[test]
    fn default_profile_depends_on_caps() {
        let caps: Vec<String> = DOCKER_CAPS.iter().map(|c| c.to_string()).collect();
        let d = docker_default(&caps);
        assert_eq!(
            d.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
        assert_eq!(d.default_errno_ret(), Some(1));
        let allowed = names(&d);
        for n in ["read", "execve", "ptrace", "chroot", "arch_prctl", "capset"] {
            assert!(allowed.iter().any(|a| a == n), "{n} allowed");
        }
        for n in [
            "mount", "unshare", "keyctl", "setns", "bpf", "reboot", "clone", "clone3",
        ] {
            assert!(!allowed.iter().any(|a| a == n), "{n} refused");
        }
        // clone3 gets ENOSYS so that libc falls back to clone.
        assert!(
            d.syscalls()
                .iter()
                .flatten()
                .any(|r| r.names() == &["clone3"] && r.errno_ret() == Some(38))
        );
        let mut admin = caps.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let a = names(&docker_default(&admin));
        for n in ["mount", "unshare", "setns", "clone", "clone3"] {
            assert!(a.iter().any(|x| x == n), "{n} allowed with SYS_ADMIN");
        }
        // Old kernels do not get ptrace.
        let p: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
        let old = resolve(p, &caps, (4, 4)).unwrap();
        assert!(!names(&old).iter().any(|n| n == "ptrace"));
    }

    #[test]
    fn every_default_name_compiles() {
        let caps: Vec<String> = DOCKER_CAPS.iter().map(|c| c.to_string()).collect();
        let prog = crate::seccomp::compile(&docker_default(&caps)).unwrap();
        assert!(prog.len() < 1024, "{} instructions", prog.len());
    }

    #[test]
    fn custom_profile() {
        let p = from_docker_json(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"name":"mkdir","action":"SCMP_ACT_ERRNO"},
                {"names":["chmod"],"action":"SCMP_ACT_ERRNO","excludes":{"caps":["CAP_FOWNER"]}}]}"#,
            &["CAP_FOWNER".to_string()],
        )
        .unwrap();
        assert_eq!(p.syscalls().as_ref().unwrap().len(), 1);
        assert!(from_docker_json("{", &[]).is_err());
        assert!(from_docker_json(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, &[]).is_err());
    }
}
