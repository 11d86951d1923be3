//! Building a container's OCI runtime spec and its `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.

use std::io::Read;
use std::path::Path;

use serde_json::{Value, json};

use super::Record;
use crate::error::{Error, Result};

/// `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `/etc/hosts` Docker writes for a container without a network address.
pub fn hosts_file(hostname: &str, extra_hosts: &[String]) -> String {
    let _ = hostname;
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for h in extra_hosts {
        if let Some((name, ip)) = h.split_once(':') {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    s
}

/// The container's resolv.conf: the host's without loopback name servers (Docker's defaults when
/// none is left), with `--dns`, `--dns-search` and `--dns-option` applied.
pub fn resolv_conf(host: &str, dns: &[String], search: &[String], options: &[String]) -> String {
    let mut out = Vec::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let ip = words.next().unwrap_or("");
                if ip.starts_with("127.") || ip == "::1" || !dns.is_empty() {
                    continue;
                }
                servers += 1;
                out.push(t.to_string());
            }
            Some("search") | Some("domain") if !search.is_empty() => {}
            Some("options") if !options.is_empty() => {}
            _ => out.push(line.to_string()),
        }
    }
    for s in dns {
        out.push(format!("nameserver {s}"));
        servers += 1;
    }
    if servers == 0 {
        out.push("nameserver 8.8.8.8".into());
        out.push("nameserver 8.8.4.4".into());
    }
    if !search.is_empty() {
        out.push(format!("search {}", search.join(" ")));
    }
    if !options.is_empty() {
        out.push(format!("options {}", options.join(" ")));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// UID.
    pub uid: u32,
    /// GID.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Home directory.
    pub home: String,
}

/// Resolves Docker's `User` (`name`, `uid`, `name:group`, `uid:gid`) against passwd and group texts.
pub fn resolve_user(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let users: Vec<Vec<&str>> = passwd
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let groups: Vec<Vec<&str>> = group
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let mut eu = ExecUser {
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        home: "/".into(),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = if let Ok(uid) = u.parse::<u32>() {
        eu.uid = uid;
        users.iter().find(|f| f[2].parse::<u32>().ok() == Some(uid))
    } else {
        let e = users.iter().find(|f| f[0] == u).ok_or_else(|| {
            Error::invalid(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        })?;
        eu.uid = e[2].parse().unwrap_or(0);
        Some(e)
    };
    let user_name = entry.map(|e| e[0].to_string());
    if let Some(e) = entry {
        eu.gid = e[3].parse().unwrap_or(0);
        if let Some(h) = e.get(5) {
            if !h.is_empty() {
                eu.home = h.to_string();
            }
        }
    }
    match g {
        Some(g) if !g.is_empty() => {
            if let Ok(gid) = g.parse::<u32>() {
                eu.gid = gid;
            } else {
                let e = groups.iter().find(|f| f[0] == g).ok_or_else(|| {
                    Error::invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?;
                eu.gid = e[2].parse().unwrap_or(0);
            }
        }
        _ => {
            if let Some(name) = &user_name {
                for f in &groups {
                    let members = f.get(3).copied().unwrap_or("");
                    if members.split(',').any(|m| m == name) {
                        if let Ok(gid) = f[2].parse::<u32>() {
                            if gid != eu.gid && !eu.additional_gids.contains(&gid) {
                                eu.additional_gids.push(gid);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(eu)
}

/// Reads a small file inside `rootfs` without following links out of it (`openat2` with
/// `RESOLVE_IN_ROOT`); `None` when it does not exist.
pub fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut f = std::fs::File::from(fd);
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    f.by_ref().take(4 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Inputs of the spec that do not come from the record.
#[derive(Debug)]
pub struct SpecInputs<'a> {
    /// The mounted rootfs.
    pub rootfs: &'a Path,
    /// Host path of hostname.
    pub hostname_path: &'a Path,
    /// Host path of hosts.
    pub hosts_path: &'a Path,
    /// Host path of resolv.conf.
    pub resolv_path: &'a Path,
}

/// Builds the OCI runtime spec (as JSON) for a container from Docker's defaults.
pub fn build_spec(rec: &Record, inp: &SpecInputs<'_>) -> Result<Value> {
    let base = berth_runtime::spec::docker_default_spec();
    let mut spec = serde_json::to_value(&base).map_err(|e| Error::internal(e.to_string()))?;
    let cfg = &rec.config;
    let user = resolve_user(
        &cfg.user,
        read_in_root(inp.rootfs, "/etc/passwd").as_deref(),
        read_in_root(inp.rootfs, "/etc/group").as_deref(),
    )?;
    let mut env: Vec<String> = Vec::new();
    if !cfg.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.push(format!("HOSTNAME={}", cfg.hostname));
    if cfg.tty {
        env.push("TERM=xterm".into());
    }
    for e in &cfg.env {
        let key = e.split('=').next().unwrap_or("");
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let mut args = vec![rec.path.clone()];
    args.extend(rec.args.iter().cloned());
    let cwd = if cfg.working_dir.is_empty() {
        "/".to_string()
    } else {
        cfg.working_dir.clone()
    };
    let obj = spec
        .as_object_mut()
        .ok_or_else(|| Error::internal("default spec is not an object"))?;
    let process = obj.entry("process").or_insert_with(|| json!({}));
    process["args"] = json!(args);
    process["env"] = json!(env);
    process["cwd"] = json!(cwd);
    process["terminal"] = json!(cfg.tty);
    let mut u = json!({"uid": user.uid, "gid": user.gid});
    if !user.additional_gids.is_empty() {
        u["additionalGids"] = json!(user.additional_gids);
    }
    process["user"] = u;
    if let Some([h, w]) = rec.host_config.console_size {
        if h > 0 && w > 0 {
            process["consoleSize"] = json!({"height": h, "width": w});
        }
    }
    obj.insert("hostname".into(), json!(cfg.hostname));
    obj.insert(
        "root".into(),
        json!({"path": inp.rootfs, "readonly": rec.host_config.readonly_rootfs}),
    );
    let mounts = obj.entry("mounts").or_insert_with(|| json!([]));
    if let Some(arr) = mounts.as_array_mut() {
        if let Some(shm) = rec.host_config.shm_size.filter(|s| *s > 0) {
            for m in arr.iter_mut() {
                if m["destination"] == "/dev/shm" {
                    if let Some(opts) = m["options"].as_array_mut() {
                        opts.retain(|o| !o.as_str().unwrap_or("").starts_with("size="));
                        opts.push(json!(format!("size={shm}")));
                    }
                }
            }
        }
        for (dst, src) in [
            ("/etc/resolv.conf", inp.resolv_path),
            ("/etc/hostname", inp.hostname_path),
            ("/etc/hosts", inp.hosts_path),
        ] {
            arr.retain(|m| m["destination"] != dst);
            arr.push(json!({
                "destination": dst, "type": "bind", "source": src,
                "options": ["rbind", "rprivate"]
            }));
        }
    }
    let linux = obj.entry("linux").or_insert_with(|| json!({}));
    linux["cgroupsPath"] = json!(format!("/berth/{}", rec.id));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nwww:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nusers:x:100:www,nobody\n";

    #[test]
    fn users() {
        let r = resolve_user("", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let r = resolve_user("www", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (33, 33));
        assert_eq!(r.additional_gids, vec![100]);
        let r = resolve_user("1234:5", None, None).unwrap();
        assert_eq!((r.uid, r.gid), (1234, 5));
        let r = resolve_user("nobody:www-data", Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 33));
        assert_eq!(
            resolve_user("x", Some(PASSWD), None)
                .unwrap_err()
                .to_string(),
            "unable to find user x: no matching entries in passwd file"
        );
        assert!(resolve_user("root:nogroup", Some(PASSWD), Some(GROUP)).is_err());
    }

    #[test]
    fn resolv() {
        let host = "# c\nnameserver 127.0.0.53\noptions edns0\nsearch lan\n";
        let s = resolv_conf(host, &[], &[], &[]);
        assert!(s.contains("nameserver 8.8.8.8"));
        assert!(!s.contains("127.0.0.53"));
        assert!(s.contains("search lan"));
        let s = resolv_conf("nameserver 10.0.0.1\n", &[], &[], &[]);
        assert_eq!(s, "nameserver 10.0.0.1\n");
        let s = resolv_conf("nameserver 10.0.0.1\n", &["1.1.1.1".into()], &[], &[]);
        assert_eq!(s, "nameserver 1.1.1.1\n");
    }

    #[test]
    fn hosts() {
        let h = hosts_file("abc", &["db:10.0.0.2".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.0.0.2\tdb\n"));
    }
}
