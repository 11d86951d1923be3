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
    /// `<data-root>/volumes`, where named volumes live.
    pub volumes_root: &'a Path,
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
    // `--runtime`: the shim reads which OCI runtime to drive from these annotations.
    if let Some(rt) = rec.host_config.extra.get("BerthRuntime") {
        let args = rt["args"].as_array().cloned().unwrap_or_default();
        obj.insert(
            "annotations".into(),
            json!({
                "io.berth.runtime.path": rt["path"].as_str().unwrap_or_default(),
                "io.berth.runtime.args": Value::Array(args).to_string(),
            }),
        );
    }
    let linux = obj.entry("linux").or_insert_with(|| json!({}));
    linux["cgroupsPath"] = json!(format!("/berth/{}", rec.id));
    apply_host_config(&mut spec, rec, inp.volumes_root, inp.rootfs)?;
    if let Some(r) = crate::userns::for_host_config(&rec.host_config) {
        crate::userns::apply_spec(&mut spec, r);
    }
    Ok(spec)
}

/// A mount asked for with `-v`/`--mount`/`--tmpfs`, as an OCI mount.
#[derive(Debug, Clone, PartialEq)]
pub struct UserMount {
    /// Path in the container.
    pub destination: String,
    /// `bind` or `tmpfs`.
    pub kind: String,
    /// Host path (bind) or `tmpfs`.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
    /// For a named volume: its name.
    pub volume: Option<String>,
}

fn bind_options(ro: bool, propagation: Option<&str>) -> Vec<String> {
    let mut o = vec![
        "rbind".to_string(),
        propagation.unwrap_or("rprivate").to_string(),
    ];
    if ro {
        o.push("ro".into());
    }
    o
}

/// Parses one `-v` spec: `/host:/ctr[:opts]` or `name:/ctr[:opts]`.
pub fn parse_bind(spec: &str, volumes_root: &Path) -> Result<UserMount> {
    let bad = || Error::invalid(format!("invalid volume specification: '{spec}'"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, o] => (*s, *d, *o),
        _ => return Err(bad()),
    };
    if !dst.starts_with('/') {
        return Err(Error::invalid(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"bind\": invalid mount path: '{dst}' mount path must be absolute"
        )));
    }
    let mut ro = false;
    let mut propagation = None;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" | "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated" => {}
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                propagation = Some(o)
            }
            _ => return Err(bad()),
        }
    }
    if src.is_empty() {
        return Err(Error::invalid(format!(
            "invalid volume specification: '{spec}': a bind needs a source (anonymous volumes go in Config.Volumes)"
        )));
    }
    if src.starts_with('/') {
        return Ok(UserMount {
            destination: dst.into(),
            kind: "bind".into(),
            source: src.into(),
            options: bind_options(ro, propagation),
            volume: None,
        });
    }
    volume_mount(src, dst, ro, volumes_root)
}

fn volume_mount(name: &str, dst: &str, ro: bool, volumes_root: &Path) -> Result<UserMount> {
    crate::names::validate(name).map_err(|_| {
        Error::invalid(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        ))
    })?;
    Ok(UserMount {
        destination: dst.into(),
        kind: "bind".into(),
        source: volumes_root.join(name).join("_data").display().to_string(),
        options: bind_options(ro, None),
        volume: Some(name.into()),
    })
}

/// The mounts of `Binds`, `Mounts` (`--mount`) and `Tmpfs`.
pub fn user_mounts(rec: &Record, volumes_root: &Path) -> Result<Vec<UserMount>> {
    let hc = &rec.host_config;
    let mut out = Vec::new();
    for b in &hc.binds {
        out.push(parse_bind(b, volumes_root)?);
    }
    if let Some(Value::Array(ms)) = hc.extra.get("Mounts") {
        for m in ms {
            let kind = m["Type"].as_str().unwrap_or("volume");
            let dst = m["Target"].as_str().unwrap_or("");
            let src = m["Source"].as_str().unwrap_or("");
            let ro = m["ReadOnly"].as_bool().unwrap_or(false);
            if !dst.starts_with('/') {
                return Err(Error::invalid(format!(
                    "invalid mount config for type \"{kind}\": invalid mount path: '{dst}' mount path must be absolute"
                )));
            }
            match kind {
                "bind" => {
                    if !Path::new(src).exists() {
                        return Err(Error::invalid(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                        )));
                    }
                    let prop = m["BindOptions"]["Propagation"]
                        .as_str()
                        .filter(|p| !p.is_empty());
                    out.push(UserMount {
                        destination: dst.into(),
                        kind: "bind".into(),
                        source: src.into(),
                        options: bind_options(ro, prop),
                        volume: None,
                    });
                }
                "volume" if !src.is_empty() => out.push(volume_mount(src, dst, ro, volumes_root)?),
                "tmpfs" => {
                    let mut options = vec![
                        "nosuid".to_string(),
                        "nodev".to_string(),
                        "noexec".to_string(),
                    ];
                    if let Some(sz) = m["TmpfsOptions"]["SizeBytes"].as_i64().filter(|s| *s > 0) {
                        options.push(format!("size={sz}"));
                    }
                    if let Some(mode) = m["TmpfsOptions"]["Mode"].as_u64().filter(|m| *m > 0) {
                        options.push(format!("mode={mode:o}"));
                    }
                    out.push(UserMount {
                        destination: dst.into(),
                        kind: "tmpfs".into(),
                        source: "tmpfs".into(),
                        options,
                        volume: None,
                    });
                }
                other => {
                    return Err(Error::invalid(format!(
                        "mount type {other:?} is not supported"
                    )));
                }
            }
        }
    }
    if let Some(Value::Object(t)) = hc.extra.get("Tmpfs") {
        for (dst, opts) in t {
            let mut options = vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "noexec".to_string(),
            ];
            options.extend(
                opts.as_str()
                    .unwrap_or("")
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            );
            out.push(UserMount {
                destination: dst.clone(),
                kind: "tmpfs".into(),
                source: "tmpfs".into(),
                options,
                volume: None,
            });
        }
    }
    // Anonymous volumes (image `VOLUME`s and `-v /path`), named at create.
    if let Some(Value::Object(anon)) = hc.extra.get(ANON_KEY) {
        for (dst, name) in anon {
            let Some(name) = name.as_str() else { continue };
            if out.iter().any(|m| m.destination == *dst) {
                continue;
            }
            out.push(volume_mount(name, dst, false, volumes_root)?);
        }
    }
    Ok(out)
}

/// Where a record keeps its anonymous volumes (`{"/path": "<name>"}`) in `HostConfig`.
pub const ANON_KEY: &str = "BerthAnonymousVolumes";

/// Names the anonymous volumes a container needs: each `Config.Volumes` path that no bind, mount
/// or tmpfs covers.
pub fn assign_anonymous_volumes(rec: &mut Record, volumes_root: &Path) -> Result<()> {
    let Some(vols) = rec.config.volumes.clone() else {
        return Ok(());
    };
    let taken: Vec<String> = user_mounts(rec, volumes_root)?
        .into_iter()
        .map(|m| m.destination)
        .collect();
    let mut anon = serde_json::Map::new();
    for dst in vols.keys() {
        if !dst.starts_with('/') {
            return Err(Error::invalid(format!(
                "invalid volume specification: '{dst}': mount path must be absolute"
            )));
        }
        if !taken.contains(dst) {
            anon.insert(dst.clone(), json!(crate::util::random_hex(32)));
        }
    }
    if !anon.is_empty() {
        rec.host_config
            .extra
            .insert(ANON_KEY.into(), Value::Object(anon));
    }
    Ok(())
}

/// Fills a new, empty volume with what the image has at its mount point (Docker's copy-up).
fn copy_up(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = match std::fs::symlink_metadata(src) {
        Ok(md) if md.is_dir() => md,
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    let _ = std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()));
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let m = std::fs::symlink_metadata(&s)?;
        let ft = m.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&d)?;
            copy_up(&s, &d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            std::fs::copy(&s, &d)?;
        } else {
            continue;
        }
        if !ft.is_symlink() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
        let _ = std::os::unix::fs::lchown(&d, Some(m.uid()), Some(m.gid()));
    }
    Ok(())
}

/// All capabilities Docker knows, for `--privileged` and `--cap-add ALL`.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn normalize_cap(c: &str) -> Result<String> {
    let up = c.trim().to_ascii_uppercase();
    if up == "ALL" {
        return Ok(up);
    }
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::invalid(format!("unknown capability: \"{c}\"")))
    }
}

/// Docker's capability arithmetic: defaults, minus drops, plus adds (`ALL` allowed in both).
pub fn capabilities(defaults: &[String], add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let add: Vec<String> = add
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_>>()?;
    let drop: Vec<String> = drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_>>()?;
    if add.iter().any(|c| c == "ALL") {
        return Ok(ALL_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect());
    }
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        defaults
            .iter()
            .filter(|c| !drop.contains(c))
            .cloned()
            .collect()
    };
    for c in add {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// Applies the host configuration: mounts, namespaces modes, capabilities, resources.
fn apply_host_config(
    spec: &mut Value,
    rec: &Record,
    volumes_root: &Path,
    rootfs: &Path,
) -> Result<()> {
    let hc = &rec.host_config;
    // Mounts.
    let ums = user_mounts(rec, volumes_root)?;
    for um in &ums {
        if um.kind == "bind" {
            let p = Path::new(&um.source);
            if !p.exists() {
                std::fs::create_dir_all(p)
                    .map_err(|e| Error::io(format!("create mount source {}", p.display()), e))?;
                if let Some(name) = &um.volume {
                    let anonymous = rec
                        .host_config
                        .extra
                        .get(ANON_KEY)
                        .and_then(Value::as_object)
                        .is_some_and(|a| a.values().any(|v| v == name.as_str()));
                    let labels = if anonymous {
                        json!({"com.docker.volume.anonymous": ""})
                    } else {
                        json!({})
                    };
                    let meta = json!({"CreatedAt": crate::util::now_rfc3339(), "Labels": labels, "Options": {}});
                    let _ = crate::util::write_atomic(
                        &volumes_root.join(name).join("volume.json"),
                        meta.to_string().as_bytes(),
                    );
                    if let Ok(src) =
                        berth_runtime::path::secure_join(rootfs, Path::new(&um.destination))
                    {
                        copy_up(&src, p).map_err(|e| {
                            Error::io(format!("copy image data into volume {name}"), e)
                        })?;
                    }
                }
            }
        }
    }
    crate::volumes::apply_propagation(spec, &ums)?;
    if let Some(arr) = spec["mounts"].as_array_mut() {
        for um in ums {
            arr.retain(|m| m["destination"] != um.destination.as_str());
            arr.push(json!({
                "destination": um.destination, "type": um.kind,
                "source": um.source, "options": um.options
            }));
        }
    }
    // Namespace modes.
    let drop_ns = |spec: &mut Value, t: &str| {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != t);
        }
    };
    if hc.network_mode == "host" {
        drop_ns(spec, "network");
    } else if let Some(path) = hc.extra.get("BerthNetNsPath").and_then(Value::as_str) {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            for n in ns.iter_mut() {
                if n["type"] == "network" {
                    n["path"] = json!(path);
                }
            }
        }
    }
    if hc.pid_mode == "host" {
        drop_ns(spec, "pid");
    }
    if hc.ipc_mode == "host" {
        drop_ns(spec, "ipc");
    }
    if hc.uts_mode == "host" {
        drop_ns(spec, "uts");
        if let Some(o) = spec.as_object_mut() {
            o.remove("hostname");
        }
    }
    // Capabilities.
    let defaults: Vec<String> = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut caps = if hc.privileged {
        ALL_CAPS.iter().map(|c| c.to_string()).collect()
    } else {
        capabilities(&defaults, &hc.cap_add, &hc.cap_drop)?
    };
    if hc.privileged || hc.cap_add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        // "All" is all this host can give: capabilities outside the daemon's own bounding set
        // (a sandboxed host may lack some) would make capset fail.
        let bounding = host_bounding_set();
        caps.retain(|c| {
            let bit = ALL_CAPS.iter().position(|x| x == c).unwrap_or(63);
            bounding & (1u64 << bit) != 0
        });
    }
    spec["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps
    });
    if hc.privileged {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
        spec["linux"]["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
        if let Some(arr) = spec["mounts"].as_array_mut() {
            for m in arr.iter_mut() {
                if m["type"] == "sysfs" || m["type"] == "cgroup" {
                    if let Some(o) = m["options"].as_array_mut() {
                        o.retain(|x| x != "ro");
                    }
                }
            }
        }
    }
    let sec = security_opts(hc)?;
    if sec.no_new_privileges {
        spec["process"]["noNewPrivileges"] = json!(true);
    }
    if sec.unmask_system_paths {
        spec["linux"]["maskedPaths"] = json!([]);
        spec["linux"]["readonlyPaths"] = json!([]);
    }
    // Seccomp: Docker's profile (resolved for these capabilities) unless unconfined; a
    // privileged container is unconfined unless it names a profile, as with dockerd.
    let profile = match sec.seccomp {
        Seccomp::Unconfined => None,
        Seccomp::Default if hc.privileged => None,
        Seccomp::Default => Some(berth_runtime::seccomp_profile::docker_default(&caps)),
        Seccomp::Custom(text) => Some(
            berth_runtime::seccomp_profile::from_docker_json(&text, &caps)
                .map_err(Error::invalid)?,
        ),
    };
    if let Some(p) = profile {
        spec["linux"]["seccomp"] =
            serde_json::to_value(&p).map_err(|e| Error::internal(e.to_string()))?;
    }
    // Namespaces joined from other containers (paths found by start).
    for (key, t) in [("BerthIpcNsPath", "ipc"), ("BerthPidNsPath", "pid")] {
        if let Some(path) = hc.extra.get(key).and_then(Value::as_str) {
            if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
                for n in ns.iter_mut().filter(|n| n["type"] == t) {
                    n["path"] = json!(path);
                }
            }
        }
    }
    if hc.ipc_mode == "none" {
        if let Some(arr) = spec["mounts"].as_array_mut() {
            arr.retain(|m| m["destination"] != "/dev/shm");
        }
    }
    match extra_str(hc, "CgroupnsMode") {
        "host" => drop_ns(spec, "cgroup"),
        "" | "private" => {}
        m => {
            return Err(Error::invalid(format!(
                "invalid cgroup namespace mode: {m}"
            )));
        }
    }
    let parent = extra_str(hc, "CgroupParent");
    if !parent.is_empty() {
        let parent = parent.trim_end_matches('/');
        let parent = if parent.starts_with('/') {
            parent.to_string()
        } else {
            format!("/{parent}")
        };
        spec["linux"]["cgroupsPath"] = json!(format!("{parent}/{}", rec.id));
    }
    // Sysctls (namespaced only), ulimits, supplementary groups, devices.
    if let Some(Value::Object(m)) = hc.extra.get("Sysctls") {
        let mut out = serde_json::Map::new();
        for (k, v) in m {
            check_sysctl(k, hc)?;
            out.insert(k.clone(), json!(v.as_str().unwrap_or_default()));
        }
        if !out.is_empty() {
            spec["linux"]["sysctl"] = Value::Object(out);
        }
    }
    let rl = rlimits(hc)?;
    if !rl.is_empty() {
        spec["process"]["rlimits"] = json!(rl);
    }
    if let Some(adj) = hc.extra.get("OomScoreAdj").and_then(Value::as_i64) {
        if adj != 0 {
            spec["process"]["oomScoreAdj"] = json!(adj);
        }
    }
    let groups = extra_strs(hc, "GroupAdd");
    if !groups.is_empty() {
        let etc_group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
        let mut gids: Vec<u64> = spec["process"]["user"]["additionalGids"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        for g in groups {
            let gid = match g.parse::<u32>() {
                Ok(n) => u64::from(n),
                Err(_) => etc_group
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() > 2 && f[0] == g).then(|| f[2].parse::<u64>().ok())?
                    })
                    .ok_or_else(|| Error::invalid(format!("Unable to find group {g}")))?,
            };
            if !gids.contains(&gid) {
                gids.push(gid);
            }
        }
        spec["process"]["user"]["additionalGids"] = json!(gids);
    }
    if !hc.privileged {
        for d in host_devices(hc)? {
            let rule = json!({"allow": true, "type": d.kind, "major": d.major, "minor": d.minor,
                              "access": d.access});
            push(&mut spec["linux"]["resources"]["devices"], rule);
            push(
                &mut spec["linux"]["devices"],
                json!({"path": d.path, "type": d.kind, "major": d.major, "minor": d.minor,
                       "fileMode": d.mode, "uid": 0, "gid": 0}),
            );
        }
        for r in extra_strs(hc, "DeviceCgroupRules") {
            push(&mut spec["linux"]["resources"]["devices"], device_rule(&r)?);
        }
    } else {
        // All the host's devices, as dockerd does for --privileged.
        for d in all_host_devices() {
            push(
                &mut spec["linux"]["devices"],
                json!({"path": d.path, "type": d.kind, "major": d.major, "minor": d.minor,
                       "fileMode": d.mode, "uid": 0, "gid": 0}),
            );
        }
    }
    // Resources.
    set_resources(&mut spec["linux"]["resources"], hc);
    Ok(())
}

/// The capability bounding set of this process (`CapBnd` of /proc/self/status).
fn host_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn push(v: &mut Value, item: Value) {
    if !v.is_array() {
        *v = json!([]);
    }
    if let Some(a) = v.as_array_mut() {
        a.push(item);
    }
}

fn extra_str<'a>(hc: &'a berth_api::container::HostConfig, key: &str) -> &'a str {
    hc.extra.get(key).and_then(Value::as_str).unwrap_or("")
}

fn extra_strs(hc: &berth_api::container::HostConfig, key: &str) -> Vec<String> {
    hc.extra
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Which seccomp profile a container gets.
#[derive(Debug, PartialEq)]
enum Seccomp {
    Default,
    Unconfined,
    /// A profile in Docker's format (the docker CLI sends the file's content).
    Custom(String),
}

/// The parsed `SecurityOpt` list.
#[derive(Debug)]
struct SecurityOpts {
    seccomp: Seccomp,
    no_new_privileges: bool,
    unmask_system_paths: bool,
}

/// Parses `SecurityOpt` as dockerd does (`key=value`, or the old `key:value`).
fn security_opts(hc: &berth_api::container::HostConfig) -> Result<SecurityOpts> {
    let mut out = SecurityOpts {
        seccomp: Seccomp::Default,
        no_new_privileges: false,
        unmask_system_paths: false,
    };
    for opt in &hc.security_opt {
        if opt == "no-new-privileges" {
            out.no_new_privileges = true;
            continue;
        }
        if opt == "disable" {
            continue; // label=disable's old spelling
        }
        let (k, v) = match opt.split_once('=') {
            Some(kv) => kv,
            None => opt
                .split_once(':')
                .ok_or_else(|| Error::invalid(format!("invalid --security-opt 1: {opt:?}")))?,
        };
        match k {
            "seccomp" => {
                out.seccomp = match v {
                    "unconfined" => Seccomp::Unconfined,
                    "" | "builtin" => Seccomp::Default,
                    text => Seccomp::Custom(text.to_string()),
                }
            }
            "no-new-privileges" => {
                out.no_new_privileges = match v {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(Error::invalid(format!("invalid --security-opt 2: {opt:?}"))),
                }
            }
            "systempaths" if v == "unconfined" => out.unmask_system_paths = true,
            // Linux security modules this host does not run: accepted, as dockerd does when
            // AppArmor/SELinux are disabled.
            "apparmor" | "label" => {}
            _ => return Err(Error::invalid(format!("invalid --security-opt 2: {opt:?}"))),
        }
    }
    Ok(out)
}

/// Refuses a sysctl that is not namespaced (it would change the host), as dockerd does.
fn check_sysctl(k: &str, hc: &berth_api::container::HostConfig) -> Result<()> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let ipc = IPC.contains(&k) || k.starts_with("fs.mqueue.");
    if ipc {
        if hc.ipc_mode == "host" {
            return Err(Error::invalid(format!(
                "sysctl {k:?} is not allowed in host IPC namespace"
            )));
        }
        return Ok(());
    }
    if k.starts_with("net.") {
        if hc.network_mode == "host" {
            return Err(Error::invalid(format!(
                "sysctl {k:?} not allowed in host network namespace"
            )));
        }
        return Ok(());
    }
    if k == "kernel.domainname" || k == "kernel.hostname" {
        if hc.uts_mode == "host" {
            return Err(Error::invalid(format!(
                "sysctl {k:?} is not allowed in host UTS namespace"
            )));
        }
        return Ok(());
    }
    Err(Error::invalid(format!(
        "sysctl {k:?} is not whitelisted: it is not namespaced"
    )))
}

/// `Ulimits` as OCI rlimits.
fn rlimits(hc: &berth_api::container::HostConfig) -> Result<Vec<Value>> {
    const NAMES: [&str; 16] = [
        "as",
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    let mut out = Vec::new();
    for u in hc
        .extra
        .get("Ulimits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = u["Name"].as_str().unwrap_or("");
        if !NAMES.contains(&name) {
            return Err(Error::invalid(format!("invalid ulimit type: {name}")));
        }
        let (soft, hard) = (
            u["Soft"].as_i64().unwrap_or(0),
            u["Hard"].as_i64().unwrap_or(0),
        );
        if soft > hard && hard >= 0 {
            return Err(Error::invalid(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )));
        }
        // -1 means unlimited (RLIM_INFINITY).
        let lim = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
        out.push(
            json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()),
                        "soft": lim(soft), "hard": lim(hard)}),
        );
    }
    Ok(out)
}

/// A host device given to the container.
#[derive(Debug, Clone, PartialEq)]
struct HostDevice {
    path: String,
    kind: &'static str,
    major: i64,
    minor: i64,
    mode: u32,
    access: String,
}

fn dev_of(path: &Path) -> Option<(&'static str, i64, i64, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(path).ok()?;
    let kind = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return None;
    };
    let r = md.rdev();
    let major = ((r >> 8) & 0xfff) | ((r >> 32) & !0xfff);
    let minor = (r & 0xff) | ((r >> 12) & !0xff);
    Some((kind, major as i64, minor as i64, md.mode() & 0o7777))
}

/// `Devices` (`--device host[:container][:perms]`), checked on the host.
fn host_devices(hc: &berth_api::container::HostConfig) -> Result<Vec<HostDevice>> {
    let mut out = Vec::new();
    for d in hc
        .extra
        .get("Devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let host = d["PathOnHost"].as_str().unwrap_or("");
        let inside = d["PathInContainer"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or(host);
        let access = d["CgroupPermissions"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or("rwm");
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(Error::invalid(format!(
                "invalid device permissions: {access}"
            )));
        }
        let (kind, major, minor, mode) = dev_of(Path::new(host)).ok_or_else(|| {
            Error::invalid(format!(
                "error gathering device information while adding custom device {host:?}: not a device node"
            ))
        })?;
        out.push(HostDevice {
            path: inside.to_string(),
            kind,
            major,
            minor,
            mode,
            access: access.to_string(),
        });
    }
    Ok(out)
}

/// Every device node under the host's /dev (for `--privileged`).
fn all_host_devices() -> Vec<HostDevice> {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                // Mounted elsewhere by the runtime (pts, shm, mqueue).
                if !matches!(p.to_str(), Some("/dev/pts" | "/dev/shm" | "/dev/mqueue")) {
                    stack.push(p);
                }
            } else if let Some((kind, major, minor, mode)) = dev_of(&p) {
                let path = p.to_string_lossy().into_owned();
                // The runtime makes the console and the default nodes itself.
                if matches!(path.as_str(), "/dev/console" | "/dev/ptmx" | "/dev/tty") {
                    continue;
                }
                out.push(HostDevice {
                    path,
                    kind,
                    major,
                    minor,
                    mode,
                    access: "rwm".into(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// A `--device-cgroup-rule` (`c 1:3 rwm`, `a *:* m`) as an OCI device rule.
fn device_rule(r: &str) -> Result<Value> {
    let bad = || Error::invalid(format!("invalid device cgroup rule format: '{r}'"));
    let f: Vec<&str> = r.split_whitespace().collect();
    if f.len() != 3 || !matches!(f[0], "a" | "b" | "c") {
        return Err(bad());
    }
    let (ma, mi) = f[1].split_once(':').ok_or_else(bad)?;
    let num = |s: &str| -> Result<Value> {
        if s == "*" {
            Ok(Value::Null)
        } else {
            s.parse::<i64>().map(|n| json!(n)).map_err(|_| bad())
        }
    };
    if f[2].is_empty() || !f[2].chars().all(|c| "rwm".contains(c)) {
        return Err(bad());
    }
    let mut o = json!({"allow": true, "type": f[0], "access": f[2]});
    if let Value::Number(n) = num(ma)? {
        o["major"] = json!(n);
    }
    if let Value::Number(n) = num(mi)? {
        o["minor"] = json!(n);
    }
    Ok(o)
}

/// Checks the host config's security and isolation options at create, so that bad input is a
/// 400 and nothing is stored.
pub fn validate_host_config(hc: &berth_api::container::HostConfig) -> Result<()> {
    let sec = security_opts(hc)?;
    if let Seccomp::Custom(text) = &sec.seccomp {
        berth_runtime::seccomp_profile::from_docker_json(text, &[]).map_err(Error::invalid)?;
    }
    if let Some(Value::Object(m)) = hc.extra.get("Sysctls") {
        for k in m.keys() {
            check_sysctl(k, hc)?;
        }
    }
    rlimits(hc)?;
    if !hc.privileged {
        host_devices(hc)?;
    }
    for r in extra_strs(hc, "DeviceCgroupRules") {
        device_rule(&r)?;
    }
    match extra_str(hc, "CgroupnsMode") {
        "" | "host" | "private" => {}
        m => {
            return Err(Error::invalid(format!(
                "invalid cgroup namespace mode: {m}"
            )));
        }
    }
    // User namespaces: the daemon's `userns-remap` one, or the host's (`--userns host`).
    match extra_str(hc, "UsernsMode") {
        "" | "host" => {}
        m => return Err(Error::invalid(format!("invalid USER mode: {m}"))),
    }
    crate::userns::validate(hc)?;
    for (what, mode) in [("IPC", &hc.ipc_mode), ("PID", &hc.pid_mode)] {
        let ok = matches!(
            mode.as_str(),
            "" | "host" | "private" | "shareable" | "none"
        ) || mode
            .strip_prefix("container:")
            .is_some_and(|c| !c.is_empty());
        if !ok || (what == "PID" && matches!(mode.as_str(), "shareable" | "none")) {
            return Err(Error::invalid(format!("invalid {what} mode: {mode}")));
        }
    }
    Ok(())
}

/// Writes the host config's limits into an OCI `linux.resources` object.
pub fn set_resources(res: &mut Value, hc: &berth_api::container::HostConfig) {
    if hc.memory > 0 {
        res["memory"]["limit"] = json!(hc.memory);
        // Unset swap: as much swap as memory (dockerd's default), -1: unlimited.
        let swap = if hc.memory_swap == 0 {
            hc.memory * 2
        } else {
            hc.memory_swap
        };
        res["memory"]["swap"] = json!(swap);
    }
    let x = |k: &str| hc.extra.get(k).and_then(Value::as_i64);
    if let Some(r) = x("MemoryReservation").filter(|r| *r > 0) {
        res["memory"]["reservation"] = json!(r);
    }
    if let Some(s) = x("MemorySwappiness").filter(|s| (0..=100).contains(s)) {
        res["memory"]["swappiness"] = json!(s);
    }
    if hc.extra.get("OomKillDisable").and_then(Value::as_bool) == Some(true) {
        res["memory"]["disableOOMKiller"] = json!(true);
    }
    if let Some(m) = hc.extra.get("CpusetMems").and_then(Value::as_str) {
        if !m.is_empty() {
            res["cpu"]["mems"] = json!(m);
        }
    }
    if let Some(w) = x("BlkioWeight").filter(|w| *w > 0) {
        res["blockIO"]["weight"] = json!(w);
    }
    for (key, oci) in [
        ("BlkioDeviceReadBps", "throttleReadBpsDevice"),
        ("BlkioDeviceWriteBps", "throttleWriteBpsDevice"),
        ("BlkioDeviceReadIOps", "throttleReadIOPSDevice"),
        ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice"),
    ] {
        let mut rules = Vec::new();
        for t in hc
            .extra
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let path = t["Path"].as_str().unwrap_or("");
            if let Some((_, major, minor, _)) = dev_of(Path::new(path)) {
                rules.push(json!({"major": major, "minor": minor,
                                  "rate": t["Rate"].as_u64().unwrap_or(0)}));
            }
        }
        if !rules.is_empty() {
            res["blockIO"][oci] = json!(rules);
        }
    }
    if let Some(p) = hc.pids_limit.filter(|p| *p > 0) {
        res["pids"] = json!({"limit": p});
    }
    if hc.nano_cpus > 0 {
        let period: u64 = 100_000;
        res["cpu"]["period"] = json!(period);
        res["cpu"]["quota"] = json!(hc.nano_cpus * period as i64 / 1_000_000_000);
    }
    if hc.cpu_quota > 0 {
        res["cpu"]["quota"] = json!(hc.cpu_quota);
    }
    if hc.cpu_period > 0 {
        res["cpu"]["period"] = json!(hc.cpu_period);
    }
    if hc.cpu_shares > 0 {
        res["cpu"]["shares"] = json!(hc.cpu_shares);
    }
    if !hc.cpuset_cpus.is_empty() {
        res["cpu"]["cpus"] = json!(hc.cpuset_cpus);
    }
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
    fn binds() {
        let v = Path::new("/var/lib/berth/volumes");
        let m = parse_bind("/src:/dst:ro", v).unwrap();
        assert_eq!(m.source, "/src");
        assert_eq!(m.destination, "/dst");
        assert_eq!(m.options, ["rbind", "rprivate", "ro"]);
        let m = parse_bind("data:/data", v).unwrap();
        assert_eq!(m.source, "/var/lib/berth/volumes/data/_data");
        assert_eq!(m.volume.as_deref(), Some("data"));
        assert!(parse_bind("/a:rel", v).is_err());
        assert!(parse_bind("/a:/b:bogus", v).is_err());
        assert!(parse_bind("/a:/b:c:d", v).is_err());
    }

    #[test]
    fn caps() {
        let d: Vec<String> = vec!["CAP_CHOWN".into(), "CAP_KILL".into()];
        let c = capabilities(&d, &["net_admin".into()], &["CHOWN".into()]).unwrap();
        assert_eq!(c, ["CAP_KILL", "CAP_NET_ADMIN"]);
        let c = capabilities(&d, &["KILL".into()], &["ALL".into()]).unwrap();
        assert_eq!(c, ["CAP_KILL"]);
        assert!(capabilities(&d, &["ALL".into()], &[]).unwrap().len() > 30);
        assert!(capabilities(&d, &["BOGUS".into()], &[]).is_err());
    }

    #[test]
    fn hosts() {
        let h = hosts_file("abc", &["db:10.0.0.2".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.0.0.2\tdb\n"));
    }
}
