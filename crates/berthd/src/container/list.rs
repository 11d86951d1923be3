//! `GET /containers/json` and `GET /containers/{id}/json`.
//!
//! `ps` is served from a per-container [`Entry`]: the entry's JSON without its time-dependent
//! `Status`, built once per change of the record (see [`Ctr::summary`]), so listing 1000
//! containers copies no records and builds no JSON trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_api::Filters;
use berth_api::container::{ContainerInspect, ContainerSummary, State};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::merge::command_string;
use super::{Ctr, CtrPaths, Record};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::http::{Query, Resp};

/// Docker's human status (`Up 3 seconds`, `Exited (0) 5 seconds ago`, `Created`).
pub fn status_string(rec: &Record, now: DateTime<Utc>) -> String {
    let st = &rec.state;
    let t = |s: &str| crate::util::parse_time(s);
    status_of(st, t(&st.started_at), t(&st.finished_at), now)
}

/// [`status_string`] from a state whose times are parsed.
fn status_of(
    st: &State,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let ago = |t: Option<DateTime<Utc>>| {
        crate::util::human_duration(t.map(|t| (now - t).num_seconds()).unwrap_or(0))
    };
    if st.restarting {
        return format!("Restarting ({}) {} ago", st.exit_code, ago(finished));
    }
    if st.running {
        let mut s = format!("Up {}", ago(started));
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
    if started.is_none() {
        return "Created".into();
    }
    if finished.is_none() {
        return String::new();
    }
    format!("Exited ({}) {} ago", st.exit_code, ago(finished))
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

/// `State` as the Engine API shows it: dockerd keeps `Running` true while a restart is pending
/// (its `SetRestarting`), with `Pid` 0; berthd's record says whether a process runs.
pub fn api_state(st: &State) -> State {
    let mut s = st.clone();
    if s.restarting {
        s.running = true;
        s.paused = false;
        s.pid = 0;
    }
    s
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
        state: api_state(&rec.state),
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

/// A container's `ps` entry as of one version of its record.
#[derive(Debug)]
pub struct Entry {
    /// Creation time in nanoseconds; with the ID, the sort key.
    created: i64,
    id: String,
    name: String,
    image_id: String,
    upper: PathBuf,
    /// What the status line is made of, its times parsed.
    state: State,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    /// The entry's JSON object without `Status` and without its closing `}`, ending in `,`.
    head: String,
}

impl Entry {
    /// Builds the entry of `rec`.
    pub fn new(rec: &Record, volumes_root: &Path) -> Self {
        let mut v = serde_json::to_value(summary(rec, volumes_root)).unwrap_or_default();
        if let Value::Object(m) = &mut v {
            m.remove("Status");
        }
        let mut head = v.to_string();
        head.pop();
        head.push(',');
        let st = &rec.state;
        Entry {
            created: created_nanos(rec),
            id: rec.id.clone(),
            name: rec.name.clone(),
            image_id: rec.image.clone(),
            upper: rec.layer.upper.clone(),
            started: crate::util::parse_time(&st.started_at),
            finished: crate::util::parse_time(&st.finished_at),
            state: st.clone(),
            head,
        }
    }

    /// The full ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends the entry's JSON, with `SizeRw`/`SizeRootFs` when given.
    fn write(&self, out: &mut Vec<u8>, sizes: Option<(i64, i64)>, now: DateTime<Utc>) {
        out.extend_from_slice(self.head.as_bytes());
        if let Some((rw, root)) = sizes {
            out.extend_from_slice(format!("\"SizeRw\":{rw},\"SizeRootFs\":{root},").as_bytes());
        }
        out.extend_from_slice(b"\"Status\":");
        let status = status_of(&self.state, self.started, self.finished, now);
        let _ = serde_json::to_writer(&mut *out, &status);
        out.push(b'}');
    }
}

fn created_nanos(r: &Record) -> i64 {
    crate::util::parse_time(&r.created)
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

/// The entry of `c`'s current record, `rec` (whose lock the caller holds), built if missing.
fn entry_of(c: &Ctr, rec: &Record, volumes_root: &Path) -> Arc<Entry> {
    let mut slot = c.summary.lock().expect("summary lock");
    slot.get_or_insert_with(|| Arc::new(Entry::new(rec, volumes_root)))
        .clone()
}

/// The JSON array of `entries`, with the sizes of `size=1` when given (one per entry).
pub fn render(entries: &[Arc<Entry>], sizes: Option<&[(i64, i64)]>, now: DateTime<Utc>) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.head.len() + 64).sum::<usize>() + 3);
    out.push(b'[');
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        e.write(&mut out, sizes.and_then(|s| s.get(i).copied()), now);
    }
    out.extend_from_slice(b"]\n");
    out
}

/// Whether a record passes the filters of a list request other than `before`, `since` and
/// `limit` (which depend on the order). `names` are the compiled `name` filters.
fn matches(
    r: &Record,
    f: &Filters,
    names: &[regex::Regex],
    image_matches: &dyn Fn(&str, &Record) -> bool,
) -> bool {
    let ids = f.get("id");
    if !ids.is_empty() && !ids.iter().any(|i| r.id.starts_with(i.as_str())) {
        return false;
    }
    if !names.is_empty() {
        let bare = r.name.trim_start_matches('/');
        if !names
            .iter()
            .any(|re| re.is_match(&r.name) || re.is_match(bare))
        {
            return false;
        }
    }
    if !labels_match(f.get("label"), &r.config.labels) {
        return false;
    }
    let st = f.get("status");
    if !st.is_empty() && !st.contains(&r.state.status) {
        return false;
    }
    let ex = f.get("exited");
    if !ex.is_empty()
        && (r.state.status != "exited"
            || !ex
                .iter()
                .any(|e| e.parse::<i64>().ok() == Some(r.state.exit_code)))
    {
        return false;
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
            return false;
        }
    }
    let nets = f.get("network");
    if !nets.is_empty() && !nets.contains(&r.host_config.network_mode) {
        return false;
    }
    if !f.get("publish").is_empty() || !f.get("expose").is_empty() {
        // No published ports yet.
        return false;
    }
    if f.get("is-task").iter().any(|v| v == "true") {
        return false;
    }
    let vols = f.get("volume");
    if !vols.is_empty() {
        let mounts = super::spec::user_mounts(r, Path::new("/")).unwrap_or_default();
        let hit = mounts.iter().any(|m| {
            vols.iter().any(|v| {
                m.volume.as_deref() == Some(v.as_str()) || m.destination == *v || m.source == *v
            })
        });
        if !hit {
            return false;
        }
    }
    let anc = f.get("ancestor");
    anc.is_empty() || anc.iter().any(|a| image_matches(a, r))
}

/// Prune's `until` filter (a timestamp or a Go duration before now), as dockerd parses it.
pub fn prune_until(f: &Filters, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
    match f.get("until") {
        [] => Ok(None),
        [u] => crate::util::parse_until(u, now).map(Some).ok_or_else(|| {
            Error::invalid(format!(
                "failed to parse value as time or duration: \"{u}\""
            ))
        }),
        _ => Err(Error::invalid("more than one until filter specified")),
    }
}

/// Selects and orders containers for `GET /containers/json`, newest first. `image_matches(ancestor,
/// rec)` tells whether a container descends from an image reference.
pub fn select(
    ctrs: &[Arc<Ctr>],
    opts: &ListOptions,
    image_matches: &dyn Fn(&str, &Record) -> bool,
    volumes_root: &Path,
) -> Vec<Arc<Entry>> {
    let f = &opts.filters;
    let names: Vec<regex::Regex> = f
        .get("name")
        .iter()
        .filter_map(|n| regex::Regex::new(n).ok())
        .collect();
    let all =
        opts.all || opts.limit > 0 || !f.get("status").is_empty() || !f.get("exited").is_empty();
    let mut cands: Vec<(Arc<Entry>, bool)> = ctrs
        .iter()
        .map(|c| {
            let rec = c.rec.lock().expect("record lock");
            let pass = (all || rec.state.running || rec.state.restarting)
                && matches(&rec, f, &names, image_matches);
            (entry_of(c, &rec, volumes_root), pass)
        })
        .collect();
    cands.sort_unstable_by(|(a, _), (b, _)| (b.created, &b.id).cmp(&(a.created, &a.id)));
    let find = |k: &str| {
        cands
            .iter()
            .map(|(e, _)| e)
            .find(|e| {
                e.id == k
                    || e.name.strip_prefix('/') == Some(k)
                    || e.name == k
                    || e.id.starts_with(k)
            })
            .map(|e| e.created)
    };
    let before = f.get("before").first().and_then(|k| find(k));
    let since = f.get("since").first().and_then(|k| find(k));
    let mut out = Vec::new();
    for (e, pass) in &cands {
        if !pass || before.is_some_and(|b| e.created >= b) || since.is_some_and(|s| e.created <= s)
        {
            continue;
        }
        out.push(e.clone());
        if opts.limit > 0 && out.len() as i64 >= opts.limit {
            break;
        }
    }
    out
}

/// `GET /containers/json`.
pub async fn handle(d: &Arc<Daemon>, q: &Query) -> Result<Resp> {
    let filters = q.filters()?;
    validate_filters(&filters)?;
    let opts = ListOptions {
        all: q.bool("all"),
        limit: q.int("limit")?.unwrap_or(-1),
        filters,
    };
    // `ancestor`: each reference resolved once to an image ID.
    let mut ancestors: Vec<(String, Option<String>)> = Vec::new();
    for a in opts.filters.get("ancestor") {
        ancestors.push((a.clone(), d.images.resolve(a).await.ok()));
    }
    let image_matches = |a: &str, r: &Record| {
        r.config.image == a
            || ancestors
                .iter()
                .any(|(name, id)| name == a && id.as_deref() == Some(r.image.as_str()))
    };
    let vr = d.settings.data_root.join("volumes");
    let sel = select(&d.all(), &opts, &image_matches, &vr);
    let mut sizes = None;
    if q.bool("size") {
        let uppers: Vec<_> = sel.iter().map(|e| e.upper.clone()).collect();
        let rw = tokio::task::spawn_blocking(move || {
            uppers.iter().map(|u| dir_size(u)).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?;
        let image_sizes: std::collections::HashMap<String, i64> = d
            .images
            .list(true, &Filters::default())
            .await?
            .into_iter()
            .map(|i| (i.id, i.size))
            .collect();
        let both: Vec<(i64, i64)> = sel
            .iter()
            .zip(rw)
            .map(|(e, rw)| (rw, rw + image_sizes.get(&e.image_id).copied().unwrap_or(0)))
            .collect();
        sizes = Some(both);
    }
    Ok(crate::http::json_bytes(
        200,
        render(&sel, sizes.as_deref(), Utc::now()),
    ))
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
        let ctrs: Vec<_> = recs.into_iter().map(Ctr::new).collect();
        let no = |_: &str, _: &Record| false;
        let ids = |o: &ListOptions| -> Vec<String> {
            select(&ctrs, o, &no, Path::new("/nonexistent"))
                .iter()
                .map(|e| e.id().to_string())
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
    fn rendered_entries_are_summaries_and_follow_updates() {
        let c = Ctr::new(rec("aaa", "/web", "2024-01-01T00:00:01Z", true, 0));
        let vr = Path::new("/nonexistent");
        let now = Utc::now();
        let list = |c: &Arc<Ctr>| {
            let opts = ListOptions {
                all: true,
                ..Default::default()
            };
            let sel = select(std::slice::from_ref(c), &opts, &|_, _| false, vr);
            serde_json::from_slice::<Vec<ContainerSummary>>(&render(&sel, None, now)).unwrap()
        };
        let mut want = summary(&c.snapshot(), vr);
        want.status = status_string(&c.snapshot(), now);
        assert_eq!(list(&c), [want]);
        // A change of the record shows in the next list (the cached entry is dropped).
        c.update(|r| {
            r.state.running = false;
            r.state.status = "exited".into();
            r.state.exit_code = 7;
            r.state.finished_at = "2024-01-01T00:00:10Z".into();
            r.config.labels.insert("k".into(), "v".into());
        });
        let got = list(&c);
        assert_eq!(got[0].state, "exited");
        assert!(
            got[0].status.starts_with("Exited (7) "),
            "{}",
            got[0].status
        );
        assert_eq!(got[0].labels.get("k").map(String::as_str), Some("v"));
        let sel = select(
            std::slice::from_ref(&c),
            &ListOptions {
                all: true,
                ..Default::default()
            },
            &|_, _| false,
            vr,
        );
        let sized: Vec<ContainerSummary> =
            serde_json::from_slice(&render(&sel, Some(&[(5, 12)]), now)).unwrap();
        assert_eq!(
            (sized[0].size_rw, sized[0].size_root_fs),
            (Some(5), Some(12))
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
