//! Command-line flags (named as dockerd names them) merged with the JSON config file.

use std::path::PathBuf;

use clap::Parser;
use serde_json::Value;

use crate::daemon::Settings;

/// berthd's flags.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "berthd",
    version,
    about = "The Berth daemon: a Docker-compatible container engine"
)]
pub struct Flags {
    /// Daemon socket(s) to listen on (unix:///path).
    #[arg(short = 'H', long = "host")]
    pub hosts: Vec<String>,
    /// Root directory of persistent state.
    #[arg(long = "data-root")]
    pub data_root: Option<PathBuf>,
    /// Root directory of runtime state.
    #[arg(long = "exec-root")]
    pub exec_root: Option<PathBuf>,
    /// Daemon configuration file (JSON).
    #[arg(long = "config-file")]
    pub config_file: Option<PathBuf>,
    /// Path of the PID file.
    #[arg(short = 'p', long = "pidfile")]
    pub pidfile: Option<PathBuf>,
    /// Enable debug mode.
    #[arg(short = 'D', long = "debug")]
    pub debug: bool,
    /// A registry to speak plain HTTP to (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// User namespace remapping: `default` (user `berthremap`) or `user[:group]`.
    #[arg(long = "userns-remap")]
    pub userns_remap: Option<String>,
    /// Set the kernel's `favordynmods` cgroup option for fast container starts (berth's own flag).
    #[arg(long = "cgroup-favor-dynmods", num_args = 0..=1, default_missing_value = "true")]
    pub cgroup_favor_dynmods: Option<bool>,
}

/// Default socket.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
/// Default config file, read when it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

const KNOWN_KEYS: &[&str] = &[
    "bridge",
    "bip",
    "default-address-pools",
    "nft-table",
    "hosts",
    "data-root",
    "exec-root",
    "debug",
    "pidfile",
    "insecure-registries",
    "runtimes",
    "userns-remap",
    "cgroup-favor-dynmods",
];

/// An OCI runtime of the config file's `runtimes` map (as dockerd's).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct RuntimeConf {
    /// The runtime binary (absolute, or looked up in `PATH`).
    pub path: String,
    /// Arguments given before the command (`runc --systemd-cgroup create …`).
    #[serde(rename = "runtimeArgs", default)]
    pub runtime_args: Vec<String>,
}

/// The runtimes known without configuration: Debian's `runc` when installed.
fn default_runtimes() -> std::collections::BTreeMap<String, RuntimeConf> {
    let mut m = std::collections::BTreeMap::new();
    for p in [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/bin/runc",
        "/usr/local/sbin/runc",
    ] {
        if std::path::Path::new(p).exists() {
            m.insert(
                "runc".to_string(),
                RuntimeConf {
                    path: p.to_string(),
                    runtime_args: Vec::new(),
                },
            );
            break;
        }
    }
    m
}

/// Turns `unix:///path` (or a bare absolute path) into a socket path.
pub fn parse_host(h: &str) -> Result<PathBuf, String> {
    if let Some(p) = h.strip_prefix("unix://") {
        if p.is_empty() {
            return Ok(PathBuf::from("/run/berth/berth.sock"));
        }
        return Ok(PathBuf::from(p));
    }
    if h.starts_with('/') {
        return Ok(PathBuf::from(h));
    }
    Err(format!(
        "invalid host {h:?}: only unix sockets (unix:///path) are supported"
    ))
}

/// Merges flags with the config file's text (if any), as dockerd does.
pub fn merge(flags: &Flags, file: Option<(&str, &str)>) -> Result<Settings, String> {
    let mut hosts = flags.hosts.clone();
    let mut data_root = flags.data_root.clone();
    let mut exec_root = flags.exec_root.clone();
    let mut pidfile = flags.pidfile.clone();
    let mut debug = flags.debug;
    let mut insecure = flags.insecure_registries.clone();
    let mut network = crate::networks::NetSettings::default();
    let mut runtimes = default_runtimes();
    let mut userns_remap = flags.userns_remap.clone();
    let mut favor = flags.cgroup_favor_dynmods;
    if let Some((name, text)) = file {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("unable to configure the Docker daemon with file {name}: {e}"))?;
        let obj = v.as_object().ok_or_else(|| {
            format!("unable to configure the Docker daemon with file {name}: not a JSON object")
        })?;
        let unknown: Vec<&str> = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unable to configure the Docker daemon with file {name}: the following directives don't match any configuration option: {}",
                unknown.join(", ")
            ));
        }
        network = crate::networks::NetSettings::from_config(obj)
            .map_err(|e| format!("unable to configure the Docker daemon with file {name}: {e}"))?;
        let mut conflicts = Vec::new();
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(PathBuf::from);
        if let Some(h) = obj.get("hosts") {
            let list: Vec<String> = serde_json::from_value(h.clone())
                .map_err(|e| format!("invalid \"hosts\" in {name}: {e}"))?;
            if !flags.hosts.is_empty() {
                conflicts.push(format!(
                    "hosts: (from flag: {:?}, from file: {:?})",
                    flags.hosts, list
                ));
            }
            hosts = list;
        }
        for (key, flag, slot) in [
            ("data-root", &flags.data_root, &mut data_root),
            ("exec-root", &flags.exec_root, &mut exec_root),
            ("pidfile", &flags.pidfile, &mut pidfile),
        ] {
            if let Some(v) = s(key) {
                if let Some(f) = flag {
                    conflicts.push(format!(
                        "{key}: (from flag: {}, from file: {})",
                        f.display(),
                        v.display()
                    ));
                }
                *slot = Some(v);
            }
        }
        if let Some(v) = obj.get("insecure-registries") {
            let list: Vec<String> = serde_json::from_value(v.clone())
                .map_err(|e| format!("invalid \"insecure-registries\" in {name}: {e}"))?;
            if !flags.insecure_registries.is_empty() {
                conflicts.push(format!(
                    "insecure-registries: (from flag: {:?}, from file: {:?})",
                    flags.insecure_registries, list
                ));
            }
            insecure = list;
        }
        if let Some(v) = obj.get("runtimes") {
            let map: std::collections::BTreeMap<String, RuntimeConf> =
                serde_json::from_value(v.clone())
                    .map_err(|e| format!("invalid \"runtimes\" in {name}: {e}"))?;
            for (k, rt) in map {
                if k == "berth" {
                    return Err(format!(
                        "unable to configure the Docker daemon with file {name}: runtime name 'berth' is reserved"
                    ));
                }
                if rt.path.is_empty() {
                    return Err(format!(
                        "unable to configure the Docker daemon with file {name}: runtime {k} has no path"
                    ));
                }
                runtimes.insert(k, rt);
            }
        }
        if let Some(v) = obj.get("userns-remap") {
            let s = v
                .as_str()
                .ok_or_else(|| format!("invalid \"userns-remap\" in {name}: not a string"))?;
            if let Some(f) = &flags.userns_remap {
                conflicts.push(format!("userns-remap: (from flag: {f}, from file: {s})"));
            }
            userns_remap = Some(s.to_string());
        }
        if let Some(v) = obj.get("cgroup-favor-dynmods") {
            let b = v.as_bool().ok_or_else(|| {
                format!("invalid \"cgroup-favor-dynmods\" in {name}: not a boolean")
            })?;
            if let Some(f) = flags.cgroup_favor_dynmods {
                conflicts.push(format!(
                    "cgroup-favor-dynmods: (from flag: {f}, from file: {b})"
                ));
            }
            favor = Some(b);
        }
        if let Some(dv) = obj.get("debug") {
            let b = dv
                .as_bool()
                .ok_or_else(|| format!("invalid \"debug\" in {name}: not a boolean"))?;
            if flags.debug {
                conflicts.push(format!("debug: (from flag: true, from file: {b})"));
            }
            debug = b;
        }
        if !conflicts.is_empty() {
            return Err(format!(
                "unable to configure the Docker daemon with file {name}: the following directives are specified both as a flag and in the configuration file: {}",
                conflicts.join(", ")
            ));
        }
    }
    if hosts.is_empty() {
        hosts.push(DEFAULT_HOST.into());
    }
    for h in &hosts {
        parse_host(h)?;
    }
    let exec_root = exec_root.unwrap_or_else(|| PathBuf::from("/run/berth"));
    Ok(Settings {
        network,
        hosts,
        data_root: data_root.unwrap_or_else(|| PathBuf::from("/var/lib/berth")),
        pidfile: pidfile.unwrap_or_else(|| exec_root.join("berthd.pid")),
        exec_root,
        debug,
        insecure_registries: insecure,
        runtimes,
        userns_remap: userns_remap.filter(|s| !s.is_empty()),
        cgroup_favor_dynmods: favor.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = merge(&Flags::default(), None).unwrap();
        assert_eq!(s.hosts, [DEFAULT_HOST]);
        assert_eq!(s.data_root, PathBuf::from("/var/lib/berth"));
        assert_eq!(s.pidfile, PathBuf::from("/run/berth/berthd.pid"));
        assert!(s.cgroup_favor_dynmods);
        let off = merge(
            &Flags::default(),
            Some(("x.json", r#"{"cgroup-favor-dynmods":false}"#)),
        )
        .unwrap();
        assert!(!off.cgroup_favor_dynmods);
        let f = Flags::try_parse_from(["berthd", "--cgroup-favor-dynmods=false"]).unwrap();
        assert!(!merge(&f, None).unwrap().cgroup_favor_dynmods);
    }

    #[test]
    fn file_and_flags() {
        let f = Flags {
            data_root: Some("/d".into()),
            ..Default::default()
        };
        let s = merge(&f, Some(("x.json", r#"{"exec-root":"/e","debug":true}"#))).unwrap();
        assert_eq!(s.exec_root, PathBuf::from("/e"));
        assert_eq!(s.pidfile, PathBuf::from("/e/berthd.pid"));
        assert!(s.debug);
        let e = merge(&f, Some(("x.json", r#"{"data-root":"/other"}"#))).unwrap_err();
        assert!(
            e.contains("specified both as a flag and in the configuration file"),
            "{e}"
        );
        assert!(e.contains("data-root"));
        let e = merge(&f, Some(("x.json", r#"{"bogus":1}"#))).unwrap_err();
        assert!(e.contains("don't match any configuration option: bogus"));
        assert!(merge(&f, Some(("x.json", "{"))).is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("unix:///tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(parse_host("tcp://1.2.3.4:2375").is_err());
    }
}
