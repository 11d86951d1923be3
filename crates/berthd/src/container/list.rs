//! `GET /containers/json` and `GET /containers/{id}/json`.

use berth_api::Filters;
use berth_api::container::{ContainerInspect, ContainerSummary};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::merge::command_string;
use super::{CtrPaths, Record};
use crate::error::{Error, Result};

/// Docker's human status (`Up 3 seconds`, `Exited (0) 5 seconds ago`, `Created`).
pub fn status_string(rec: &Record, now: DateTime<Utc>) -> String {
    let st = &rec.state;
    if st.restarting {
        let ago = crate::util::parse_time(&st.finished_at)
            .map(|f| (now - f).num_seconds())
            .unwrap_or(0);
        return format!(
            "Restarting ({}) {} ago",
            st.exit_code,
            crate::util::human_duration(ago)
        );
    }
    if st.running {
        let since = crate::util::parse_time(&st.started_at)
            .map(|t| (now - t).num_seconds())
            .unwrap_or(0);
        let mut s = format!("Up {}", crate::util::human_duration(since));
        if st.paused {
            s.push_str(" (Paused)");
        } else {
            s.push_str(&super::health::status_suffix(st.health.as_ref()));
        }
        return s;
    }
    if st.status == "removing" {
        return "Removal In Progress".into();
    }
    if st.dead {
        return "Dead".into();
    }
    let Some(_) = crate::util::parse_time(&st.started_at) else {
        return "Created".into();
    };
    let Some(fin) = crate::util::parse_time(&st.finished_at) else {
        return String::new();
    };
    format!(
        "Exited ({}) {} ago",
        st.exit_code,
        crate::util::human_duration((now - fin).num_seconds())
    )
}

/// Bytes used by the files under `dir` (not following links, each inode once per walk).
pub fn dir_size(dir: &std::path::Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0i64;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.nlink() <= 1 || seen.insert((md.dev(), md.ino())) {
                total += md.len() as i64;
            }
        }
    }
    total
}

/// The list entry of a container.
pub fn summary(rec: &Record, volumes_root: &std::path::Path) -> ContainerSummary {
    ContainerSummary {
        id: rec.id.clone(),
        names: vec![rec.name.clone()],
        image: rec.config.image.clone(),
        image_id: rec.image.clone(),
        command: command_string(&rec.path, &rec.args),
        created: crate::util::parse_time(&rec.created)
            .map(|t| t.timestamp())
            .unwrap_or(0),
        ports: crate::networks::summary_ports(rec),
        labels: rec.config.labels.clone(),
        state: rec.state.status.clone(),
        status: status_string(rec, Utc::now()),
        host_config: json!({"NetworkMode": rec.host_config.network_mode}),
        network_settings: crate::networks::summary_settings(rec),
        mounts: mount_points(rec, volumes_root),
        size_rw: None,
        size_root_fs: None,
    }
}

/// The `Mounts` entries of a container, as inspect and list show them.
pub fn mount_points(rec: &Record, volumes_root: &std::path::Path) -> Vec<serde_json::Value> {
    super::spec::user_mounts(rec, volumes_root)
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let rw = !m.options.iter().any(|o| o == "ro");
            match (&m.volume, m.kind.as_str()) {
                (Some(name), _) => json!({
                    "Type": "volume", "Name": name, "Source": m.source,
                    "Destination": m.destination, "Driver": "local", "Mode": "z",
                    "RW": rw, "Propagation": ""
                }),
                (None, "tmpfs") => json!({
                    "Type": "tmpfs", "Source": "", "Destination": m.destination,
                    "Mode": "", "RW": rw, "Propagation": ""
                }),
                (None, _) => json!({
                    "Type": "bind", "Source": m.source, "Destination": m.destination,
                    "Mode": "", "RW": rw,
                    "Propagation": m.options.get(1).cloned().unwrap_or_default()
                }),
            }
        })
        .collect()
}

/// The inspect output of a container.
pub fn inspect(rec: &Record, p: &CtrPaths, volumes_root: &std::path::Path) -> ContainerInspect {
    let l = &rec.layer;
    let lowers: Vec<String> = l.lowers.iter().map(|x| x.display().to_string()).collect();
    ContainerInspect {
        id: rec.id.clone(),
        created: rec.created.clone(),
        path: rec.path.clone(),
        args: rec.args.clone(),
        state: rec.state.clone(),
        image: rec.image.clone(),
        resolv_conf_path: p.data.join("resolv.conf").display().to_string(),
        hostname_path: p.data.join("hostname").display().to_string(),
        hosts_path: p.data.join("hosts").display().to_string(),
        log_path: p.log().display().to_string(),
        name: rec.name.clone(),
        restart_count: rec.restart_count,
        driver: "overlay2".into(),
        platform: "linux".into(),
        mount_label: String::new(),
        process_label: String::new(),
        app_armor_profile: String::new(),
        exec_ids: None,
        host_config: rec.host_config.clone(),
        graph_driver: json!({
            "Name": "overlay2",
            "Data": {
                "LowerDir": lowers.join(":"),
                "UpperDir": l.upper.display().to_string(),
                "MergedDir": p.rootfs().display().to_string(),
                "WorkDir": l.work.display().to_string(),
            }
        }),
        mounts: mount_points(rec, volumes_root),
        config: rec.config.clone(),
        network_settings: crate::networks::settings_json(rec),
    }
}

const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// Options of a list request.
#[derive(Debug, Default)]
pub struct ListOptions {
    /// Include stopped containers.
    pub all: bool,
    /// The newest `limit` only (0 or less: no limit).
    pub limit: i64,
    /// Filters.
    pub filters: Filters,
}

/// Checks the filters of a list request.
pub fn validate_filters(f: &Filters) -> Result<()> {
    f.validate(&[
        "id", "name", "label", "status", "ancestor", "exited", "before", "since", "health",
        "volume", "network", "publish", "expose", "is-task",
    ])
    .map_err(Error::Invalid)?;
    for s in f.get("status") {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::invalid(format!("Invalid filter 'status={s}'")));
        }
    }
    for h in f.get("health") {
        if !["starting", "healthy", "unhealthy", "none"].contains(&h.as_str()) {
            return Err(Error::invalid(format!(
                "Unrecognised filter value for health: {h}"
            )));
        }
    }
    for e in f.get("exited") {
        if e.parse::<i64>().is_err() {
            return Err(Error::invalid(format!("invalid filter 'exited={e}'")));
        }
    }
    for n in f.get("name") {
        regex::Regex::new(n).map_err(|e| Error::invalid(format!("invalid filter: {e}")))?;
    }
    Ok(())
}

/// Whether `label` filters (`key` or `key=value`) match.
pub fn labels_match(
    filters: &[String],
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
        None => labels.contains_key(f.as_str()),
    })
}

/// Prune's label filters: every `label` must match and no `label!` may (`key` or `key=value`).
pub fn prune_labels_match(
    f: &Filters,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let one = |x: &String| match x.split_once('=') {
        Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
        None => labels.contains_key(x.as_str()),
    };
    f.get("label").iter().all(one) && !f.get("label!").iter().any(one)
}

/// Selects and orders containers for `GET /containers/json`. `image_matches(ancestor, rec)` tells
/// whether a container descends from an image reference.
pub fn select(
    mut recs: Vec<Record>,
    opts: &ListOptions,
    image_matches: &dyn Fn(&str, &Record) -> bool,
) -> Vec<Record> {
    let key = |r: &Record| {
        crate::util::parse_time(&r.created)
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(0)
    };
    // Newest first; each creation time parsed once (not once per comparison).
    recs.sort_by_cached_key(|r| (std::cmp::Reverse(key(r)), std::cmp::Reverse(r.id.clone())));
    let f = &opts.filters;
    let find = |k: &str| {
        recs.iter()
            .find(|r| r.id == k || r.name == format!("/{k}") || r.name == k || r.id.starts_with(k))
            .map(key)
    };
    let before: Option<i64> = f.get("before").first().and_then(|k| find(k));
    let since: Option<i64> = f.get("since").first().and_then(|k| find(k));
    let names: Vec<regex::Regex> = f
        .get("name")
        .iter()
        .filter_map(|n| regex::Regex::new(n).ok())
        .collect();
    let all =
        opts.all || opts.limit > 0 || !f.get("status").is_empty() || !f.get("exited").is_empty();
    let mut out = Vec::new();
    for r in recs {
        if !all && !r.state.running && !r.state.restarting {
            continue;
        }
        if let Some(b) = &before {
            if key(&r) >= *b {
                continue;
            }
        }
        if let Some(s) = &since {
            if key(&r) <= *s {
                continue;
            }
        }
        let ids = f.get("id");
        if !ids.is_empty() && !ids.iter().any(|i| r.id.starts_with(i.as_str())) {
            continue;
        }
        if !names.is_empty() {
            let bare = r.name.trim_start_matches('/');
            if !names
                .iter()
                .any(|re| re.is_match(&r.name) || re.is_match(bare))
            {
                continue;
            }
        }
        if !labels_match(f.get("label"), &r.config.labels) {
            continue;
        }
        let st = f.get("status");
        if !st.is_empty() && !st.contains(&r.state.status) {
            continue;
        }
        let ex = f.get("exited");
        if !ex.is_empty()
            && (r.state.status != "exited"
                || !ex
                    .iter()
                    .any(|e| e.parse::<i64>().ok() == Some(r.state.exit_code)))
        {
            continue;
        }
        let health = f.get("health");
        if !health.is_empty() {
            let h = r
                .state
                .health
                .as_ref()
                .and_then(|h| h["Status"].as_str())
                .unwrap_or("none");
            if !health.iter().any(|x| x == h) {
                continue;
            }
        }
        let nets = f.get("network");
        if !nets.is_empty() && !nets.contains(&r.host_config.network_mode) {
            continue;
        }
        if !f.get("publish").is_empty() || !f.get("expose").is_empty() {
            // No published ports yet.
            continue;
        }
        if f.get("is-task").iter().any(|v| v == "true") {
            continue;
        }
        let vols = f.get("volume");
        if !vols.is_empty() {
            let mounts =
                super::spec::user_mounts(&r, std::path::Path::new("/")).unwrap_or_default();
            let hit = mounts.iter().any(|m| {
                vols.iter().any(|v| {
                    m.volume.as_deref() == Some(v.as_str()) || m.destination == *v || m.source == *v
                })
            });
            if !hit {
                continue;
            }
        }
        let anc = f.get("ancestor");
        if !anc.is_empty() && !anc.iter().any(|a| image_matches(a, &r)) {
            continue;
        }
        out.push(r);
        if opts.limit > 0 && out.len() as i64 >= opts.limit {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, created: &str, running: bool, code: i64) -> Record {
        let mut r = Record {
            id: id.into(),
            name: name.into(),
            created: created.into(),
            state: Record::created_state(),
            ..Default::default()
        };
        if running {
            r.state.running = true;
            r.state.status = "running".into();
            r.state.started_at = "2024-01-01T00:00:00Z".into();
        } else if code >= 0 {
            r.state.status = "exited".into();
            r.state.exit_code = code;
            r.state.started_at = "2024-01-01T00:00:00Z".into();
            r.state.finished_at = "2024-01-01T00:00:10Z".into();
        }
        r
    }

    #[test]
    fn statuses() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T00:00:15Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            status_string(&rec("a", "/a", "", true, 0), now),
            "Up 15 seconds"
        );
        assert_eq!(
            status_string(&rec("a", "/a", "", false, 3), now),
            "Exited (3) 5 seconds ago"
        );
        assert_eq!(
            status_string(&rec("a", "/a", "", false, -1), now),
            "Created"
        );
    }

    #[test]
    fn filtering() {
        let recs = vec![
            rec("aaa", "/web", "2024-01-01T00:00:01Z", true, 0),
            rec("bbb", "/db", "2024-01-01T00:00:02Z", false, 3),
            rec("ccc", "/cache", "2024-01-01T00:00:03Z", false, -1),
        ];
        let no = |_: &str, _: &Record| false;
        let ids = |o: &ListOptions| -> Vec<String> {
            select(recs.clone(), o, &no)
                .into_iter()
                .map(|r| r.id)
                .collect()
        };
        assert_eq!(ids(&ListOptions::default()), ["aaa"]);
        let all = ListOptions {
            all: true,
            ..Default::default()
        };
        assert_eq!(ids(&all), ["ccc", "bbb", "aaa"]);
        let mut f = Filters::default();
        f.add("status", "exited");
        assert_eq!(
            ids(&ListOptions {
                filters: f,
                ..Default::default()
            }),
            ["bbb"]
        );
        let mut f = Filters::default();
        f.add("name", "ca");
        assert_eq!(
            ids(&ListOptions {
                all: true,
                filters: f,
                ..Default::default()
            }),
            ["ccc"]
        );
        let mut f = Filters::default();
        f.add("exited", "3");
        assert_eq!(
            ids(&ListOptions {
                all: true,
                filters: f,
                ..Default::default()
            }),
            ["bbb"]
        );
        let mut f = Filters::default();
        f.add("before", "cache");
        assert_eq!(
            ids(&ListOptions {
                all: true,
                filters: f,
                ..Default::default()
            }),
            ["bbb", "aaa"]
        );
        assert_eq!(
            ids(&ListOptions {
                all: true,
                limit: 1,
                ..Default::default()
            }),
            ["ccc"]
        );
        let mut f = Filters::default();
        f.add("status", "bogus");
        assert!(validate_filters(&f).is_err());
        let mut f = Filters::default();
        f.add("health", "none");
        assert!(validate_filters(&f).is_ok());
        assert_eq!(
            ids(&ListOptions {
                all: true,
                filters: f,
                ..Default::default()
            }),
            ["ccc", "bbb", "aaa"]
        );
        let mut f = Filters::default();
        f.add("health", "healthy");
        assert!(
            ids(&ListOptions {
                all: true,
                filters: f,
                ..Default::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn label_filters() {
        let labels = [("a".to_string(), "1".to_string())].into();
        assert!(labels_match(&["a".into()], &labels));
        assert!(labels_match(&["a=1".into()], &labels));
        assert!(!labels_match(&["a=2".into()], &labels));
        assert!(!labels_match(&["b".into()], &labels));
    }
}
