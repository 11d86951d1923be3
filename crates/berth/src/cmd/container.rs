//! `ps`, `stop`, `restart`, `kill`, `rm`, `logs`, `inspect` and `wait`.

use berth_api::Filters;
use berth_api::container::{ContainerSummary, WaitResponse};
use berth_api::stdcopy::{Demuxer, StreamType};
use tokio::io::AsyncWriteExt;

use super::{CliError, CmdResult, Ctx, for_each};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{ClientError, decode, next_chunk, q, read_body};
use crate::format::{Formatter, ago, ellipsis, go_quote, go_time_string, human_size, short_id};
use crate::template::Template;
use crate::value::Value;

/// `ps`'s grammar.
pub const PS: Command = Command {
    path: "ps",
    usage: "[OPTIONS]",
    about: "List containers",
    flags: &[
        b(
            "all",
            Some('a'),
            "Show all containers (default shows just running)",
        ),
        l(
            "filter",
            Some('f'),
            "Filter output based on conditions provided",
        ),
        v("format", None, "Format output using a custom template"),
        v(
            "last",
            Some('n'),
            "Show n last created containers (includes all states)",
        ),
        b(
            "latest",
            Some('l'),
            "Show the latest created container (includes all states)",
        ),
        b("no-trunc", None, "Don't truncate output"),
        b("quiet", Some('q'), "Only display container IDs"),
        b("size", Some('s'), "Display total file sizes"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// `stop`'s grammar.
pub const STOP: Command = Command {
    path: "stop",
    usage: "[OPTIONS] CONTAINER [CONTAINER...]",
    about: "Stop one or more running containers",
    flags: &[
        v("signal", Some('s'), "Signal to send to the container"),
        v(
            "time",
            Some('t'),
            "Seconds to wait before killing the container",
        ),
    ],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `restart`'s grammar.
pub const RESTART: Command = Command {
    path: "restart",
    about: "Restart one or more containers",
    ..STOP
};

/// `kill`'s grammar.
pub const KILL: Command = Command {
    path: "kill",
    usage: "[OPTIONS] CONTAINER [CONTAINER...]",
    about: "Kill one or more running containers",
    flags: &[v("signal", Some('s'), "Signal to send to the container")],
    ..STOP
};

/// `rm`'s grammar.
pub const RM: Command = Command {
    path: "rm",
    usage: "[OPTIONS] CONTAINER [CONTAINER...]",
    about: "Remove one or more containers",
    flags: &[
        b(
            "force",
            Some('f'),
            "Force the removal of a running container (uses SIGKILL)",
        ),
        b("link", Some('l'), "Remove the specified link"),
        b(
            "volumes",
            Some('v'),
            "Remove anonymous volumes associated with the container",
        ),
    ],
    ..STOP
};

/// `logs`'s grammar.
pub const LOGS: Command = Command {
    path: "logs",
    usage: "[OPTIONS] CONTAINER",
    about: "Fetch the logs of a container",
    flags: &[
        b("details", None, "Show extra details provided to logs"),
        b("follow", Some('f'), "Follow log output"),
        v(
            "since",
            None,
            "Show logs since timestamp (e.g. \"2013-01-02T13:23:37Z\") or relative (e.g. \"42m\" for 42 minutes)",
        ),
        v(
            "tail",
            Some('n'),
            "Number of lines to show from the end of the logs (default \"all\")",
        ),
        b("timestamps", Some('t'), "Show timestamps"),
        v(
            "until",
            None,
            "Show logs before a timestamp (e.g. \"2013-01-02T13:23:37Z\") or relative (e.g. \"42m\" for 42 minutes)",
        ),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

/// `inspect`'s grammar.
pub const INSPECT: Command = Command {
    path: "inspect",
    usage: "[OPTIONS] NAME|ID [NAME|ID...]",
    about: "Return low-level information on Docker objects",
    flags: &[
        v("format", Some('f'), "Format output using a custom template"),
        b(
            "size",
            Some('s'),
            "Display total file sizes if the type is container",
        ),
        v("type", None, "Only inspect objects of the given type"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `container inspect`'s grammar.
pub const CONTAINER_INSPECT: Command = Command {
    usage: "[OPTIONS] CONTAINER [CONTAINER...]",
    about: "Display detailed information on one or more containers",
    flags: &[
        v("format", Some('f'), "Format output using a custom template"),
        b("size", Some('s'), "Display total file sizes"),
    ],
    ..INSPECT
};

/// `wait`'s grammar.
pub const WAIT: Command = Command {
    path: "wait",
    usage: "CONTAINER [CONTAINER...]",
    about: "Block until one or more containers stop, then print their exit codes",
    flags: &[],
    ..STOP
};

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

fn ps_header() -> Value {
    Value::object(
        [
            ("Command", "COMMAND"),
            ("CreatedAt", "CREATED AT"),
            ("ID", "CONTAINER ID"),
            ("Image", "IMAGE"),
            ("Labels", "LABELS"),
            ("LocalVolumes", "LOCAL VOLUMES"),
            ("Mounts", "MOUNTS"),
            ("Names", "NAMES"),
            ("Networks", "NETWORKS"),
            ("Ports", "PORTS"),
            ("RunningFor", "CREATED"),
            ("Size", "SIZE"),
            ("State", "STATE"),
            ("Status", "STATUS"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    )
}

/// docker's `DisplayablePorts`: consecutive ports grouped into ranges, then host mappings
/// (`80-81/tcp, 0.0.0.0:8080->80/tcp`).
pub fn display_ports(ports: &[berth_api::container::Port]) -> String {
    let mut ports = ports.to_vec();
    ports.sort_by(|a, b| {
        (
            a.private_port,
            a.ip.as_deref().unwrap_or(""),
            a.public_port.unwrap_or(0),
            &a.kind,
        )
            .cmp(&(
                b.private_port,
                b.ip.as_deref().unwrap_or(""),
                b.public_port.unwrap_or(0),
                &b.kind,
            ))
    });
    let form = |key: &str, first: u16, last: u16| {
        let (ip, kind) = match key.rsplit_once('/') {
            Some((ip, k)) => (ip, k),
            None => ("", key),
        };
        let mut g = first.to_string();
        if first != last {
            g = format!("{g}-{last}");
        }
        if !ip.is_empty() {
            g = format!("{ip}:{g}->{g}");
        }
        format!("{g}/{kind}")
    };
    let mut groups: Vec<(String, u16, u16)> = Vec::new();
    let mut result = Vec::new();
    let mut host_mappings = Vec::new();
    for p in &ports {
        let cur = p.private_port;
        let mut key = p.kind.clone();
        let ip = p.ip.as_deref().unwrap_or("");
        if !ip.is_empty() {
            let public = p.public_port.unwrap_or(0);
            if public != cur {
                let host = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                host_mappings.push(format!("{host}:{public}->{cur}/{}", p.kind));
                continue;
            }
            key = format!("{ip}/{}", p.kind);
        }
        match groups.iter_mut().find(|g| g.0 == key) {
            None => groups.push((key, cur, cur)),
            Some(g) if cur == g.2.wrapping_add(1) => g.2 = cur,
            Some(g) => {
                result.push(form(&g.0, g.1, g.2));
                g.1 = cur;
                g.2 = cur;
            }
        }
    }
    for g in &groups {
        result.push(form(&g.0, g.1, g.2));
    }
    result.extend(host_mappings);
    result.join(", ")
}

/// The values docker's container formatter exposes to `--format`.
pub fn ps_row(c: &ContainerSummary, trunc: bool) -> Value {
    let names: Vec<String> = c
        .names
        .iter()
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let names = if trunc {
        names
            .iter()
            .find(|n| !n.contains('/'))
            .cloned()
            .map(|n| vec![n])
            .unwrap_or(names)
    } else {
        names
    };
    let command = if trunc {
        ellipsis(&c.command, 20)
    } else {
        c.command.clone()
    };
    let image = if trunc && c.image.starts_with("sha256:") {
        short_id(&c.image)
    } else {
        c.image.clone()
    };
    let mut labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let mounts: Vec<String> = c
        .mounts
        .iter()
        .map(|m| {
            let name = m["Name"].as_str().unwrap_or("");
            if name.is_empty() {
                m["Source"].as_str().unwrap_or("").to_string()
            } else if trunc {
                ellipsis(name, 15)
            } else {
                name.to_string()
            }
        })
        .collect();
    let local_volumes = c
        .mounts
        .iter()
        .filter(|m| m["Driver"].as_str() == Some("local"))
        .count();
    let mut networks: Vec<String> = c
        .network_settings
        .get("Networks")
        .and_then(|n| n.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    let size = match (c.size_rw, c.size_root_fs) {
        (None, None) => String::new(),
        (rw, root) => {
            let rw = human_size(rw.unwrap_or(0) as f64);
            match root {
                Some(r) if r > 0 => format!("{rw} (virtual {})", human_size(r as f64)),
                _ => rw,
            }
        }
    };
    Value::object([
        ("Command", Value::from(go_quote(&command))),
        ("CreatedAt", Value::from(go_time_string(c.created))),
        (
            "ID",
            Value::from(if trunc { short_id(&c.id) } else { c.id.clone() }),
        ),
        ("Image", Value::from(image)),
        ("Labels", Value::from(labels.join(","))),
        ("LocalVolumes", Value::from(local_volumes.to_string())),
        ("Mounts", Value::from(mounts.join(","))),
        ("Names", Value::from(names.join(","))),
        ("Networks", Value::from(networks.join(","))),
        ("Ports", Value::from(display_ports(&c.ports))),
        ("RunningFor", Value::from(ago(c.created))),
        ("Size", Value::from(size)),
        ("State", Value::from(c.state.clone())),
        ("Status", Value::from(c.status.clone())),
        (
            "\0Label",
            Value::Object(
                c.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
        ),
    ])
}

/// `berth ps`.
pub async fn ps(ctx: &Ctx, m: Matches) -> CmdResult {
    let mut filters = Filters::default();
    for f in m.values("filter") {
        let Some((k, val)) = f.split_once('=') else {
            return Err(CliError::Msg(
                format!(
                    "invalid argument \"{f}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"
                ),
                125,
            ));
        };
        filters.add(k, val);
    }
    let format = m.value("format").unwrap_or("");
    let format = if m.flag("quiet") && format.is_empty() {
        "{{.ID}}"
    } else {
        format
    };
    let fmt = Formatter::new(format, PS_TABLE)?;
    let client = ctx.client().await?;
    let mut path = format!("/containers/json?all={}", u8::from(m.flag("all")));
    if let Some(n) = m.int("last")? {
        path.push_str(&format!("&limit={n}"));
    } else if m.flag("latest") {
        path.push_str("&limit=1");
    }
    if m.flag("size") || format.contains(".Size") {
        path.push_str("&size=1");
    }
    if !filters.is_empty() {
        path.push_str(&format!("&filters={}", q(&filters.to_json())));
    }
    let list: Vec<ContainerSummary> = client.get(&path).await?;
    let trunc = !m.flag("no-trunc");
    let rows: Vec<Value> = list.iter().map(|c| ps_row(c, trunc)).collect();
    let mut header = ps_header();
    if m.flag("size") && format.is_empty() {
        let f = Formatter::new(&format!("{PS_TABLE}\t{{{{.Size}}}}"), "")?;
        print!("{}", f.render(&rows, &header)?);
        return Ok(0);
    }
    if let Value::Object(h) = &mut header {
        h.sort_by(|a, b| a.0.cmp(&b.0));
    }
    print!("{}", fmt.render(&rows, &header)?);
    Ok(0)
}

/// `berth stop`.
pub async fn stop(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let mut qs = Vec::new();
    if let Some(t) = m.int("time")? {
        qs.push(format!("t={t}"));
    }
    if let Some(s) = m.value("signal") {
        qs.push(format!("signal={}", q(s)));
    }
    let qs = if qs.is_empty() {
        String::new()
    } else {
        format!("?{}", qs.join("&"))
    };
    let c = &client;
    let qs = &qs;
    for_each(&m.args, |a| async move {
        c.post_empty(&format!("/containers/{}/stop{qs}", q(&a)))
            .await?;
        Ok(Some(a))
    })
    .await
}

/// `berth restart`.
pub async fn restart(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let t = m
        .int("time")?
        .map(|t| format!("?t={t}"))
        .unwrap_or_default();
    let c = &client;
    let t = &t;
    for_each(&m.args, |a| async move {
        c.post_empty(&format!("/containers/{}/restart{t}", q(&a)))
            .await?;
        Ok(Some(a))
    })
    .await
}

/// `berth kill`.
pub async fn kill(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let sig = m
        .value("signal")
        .map(|s| format!("?signal={}", q(s)))
        .unwrap_or_default();
    let c = &client;
    let sig = &sig;
    for_each(&m.args, |a| async move {
        c.post_empty(&format!("/containers/{}/kill{sig}", q(&a)))
            .await?;
        Ok(Some(a))
    })
    .await
}

/// `berth rm`.
pub async fn rm(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let qs = format!(
        "?force={}&v={}&link={}",
        u8::from(m.flag("force")),
        u8::from(m.flag("volumes")),
        u8::from(m.flag("link"))
    );
    let c = &client;
    let qs = &qs;
    for_each(&m.args, |a| async move {
        let name = a.trim_matches('/').to_string();
        if name.is_empty() {
            return Err(CliError::Msg("Container name cannot be empty".into(), 1));
        }
        let resp = c.delete(&format!("/containers/{}{qs}", q(&name))).await?;
        read_body(resp).await?;
        Ok(Some(name))
    })
    .await
}

/// `berth wait`.
pub async fn wait(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let c = &client;
    for_each(&m.args, |a| async move {
        let resp = c
            .post::<()>(&format!("/containers/{}/wait", q(&a)), None)
            .await?;
        let w: WaitResponse = decode(resp).await?;
        Ok(Some(w.status_code.to_string()))
    })
    .await
}

/// `berth logs`.
pub async fn logs(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let id = &m.args[0];
    let info: serde_json::Value = client.get(&format!("/containers/{}/json", q(id))).await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&details={}",
        q(id),
        u8::from(m.flag("follow")),
        u8::from(m.flag("timestamps")),
        u8::from(m.flag("details"))
    );
    if let Some(t) = m.value("tail") {
        path.push_str(&format!("&tail={}", q(t)));
    }
    for key in ["since", "until"] {
        if let Some(s) = m.value(key) {
            let ts = parse_timestamp(s).map_err(|e| CliError::Msg(e, 1))?;
            path.push_str(&format!("&{key}={}", q(&ts)));
        }
    }
    let resp = client
        .send(http::Method::GET, &path, crate::client::empty(), None)
        .await?;
    let mut body = resp.into_body();
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut demux = Demuxer::default();
    while let Some(chunk) = next_chunk(&mut body).await? {
        if tty {
            out.write_all(&chunk).await?;
            out.flush().await?;
            continue;
        }
        demux.feed(&chunk);
        while let Some((st, data)) = demux.next_frame().map_err(|e| CliError::Msg(e, 1))? {
            if st == StreamType::Stderr {
                err.write_all(&data).await?;
                err.flush().await?;
            } else {
                out.write_all(&data).await?;
                out.flush().await?;
            }
        }
    }
    Ok(0)
}

/// docker's `GetTimestamp`: RFC 3339 dates, Unix seconds, or a relative duration ("42m") before now.
pub fn parse_timestamp(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    if let Some(d) = parse_go_duration(s) {
        let t = chrono::Utc::now() - chrono::Duration::nanoseconds(d);
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Ok(s.to_string());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"] {
        let parsed = if fmt == "%Y-%m-%d" {
            chrono::NaiveDate::parse_from_str(s, fmt)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        } else {
            chrono::NaiveDateTime::parse_from_str(s, fmt).ok()
        };
        if let Some(t) = parsed {
            return Ok(format!("{}.000000000", t.and_utc().timestamp()));
        }
    }
    Err(format!(
        "invalid value for \"since\": failed to parse value as time or duration: \"{s}\""
    ))
}

/// Go's `time.ParseDuration` in nanoseconds ("1h30m", "42m", "10s", "1.5h").
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if n_end == 0 {
            return None;
        }
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mul = match &rest[..u_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mul;
        rest = &rest[u_end..];
    }
    Some(total as i64)
}

/// `berth inspect` (containers, then images), `container inspect` and `image inspect`.
pub async fn inspect(ctx: &Ctx, m: Matches, forced: Option<&str>) -> CmdResult {
    let kind = forced.or(m.value("type"));
    if let Some(k) = kind
        && !["container", "image"].contains(&k)
    {
        return Err(CliError::Msg(
            format!("\"{k}\" is not a valid value for --type"),
            1,
        ));
    }
    let tmpl = match m.value("format") {
        Some(f) if !f.is_empty() && f != "json" => Some(Template::parse(f)?),
        _ => None,
    };
    let client = ctx.client().await?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &m.args {
        let mut got = None;
        if kind != Some("image") {
            let size = if m.flag("size") { "?size=1" } else { "" };
            match client
                .get_value(&format!("/containers/{}/json{size}", q(name)))
                .await
            {
                Ok(v) => got = Some(v),
                Err(e) if e.is_not_found() => {}
                Err(e @ ClientError::Connect(_)) => return Err(e.into()),
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            }
        }
        let mut image_404 = None;
        if got.is_none() && kind != Some("container") {
            match client.get_value(&format!("/images/{}/json", q(name))).await {
                Ok(v) => got = Some(v),
                Err(e) if e.is_not_found() => image_404 = Some(e.to_string()),
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            }
        }
        match got {
            Some(v) => found.push(v),
            None => errors.push(match (kind, forced) {
                (Some("container"), _) => {
                    format!("Error response from daemon: No such container: {name}")
                }
                (Some("image"), _) => image_404.unwrap_or_else(|| {
                    format!("Error response from daemon: No such image: {name}")
                }),
                _ => format!("Error: No such object: {name}"),
            }),
        }
    }
    match tmpl {
        Some(t) => {
            for v in &found {
                match t.execute(v) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(1);
                    }
                }
            }
        }
        None => println!("{}", Value::Array(found).to_json_indent("    ")),
    }
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::container::Port;

    #[test]
    fn ps_row_like_docker() {
        let c = ContainerSummary {
            id: "0123456789abcdef0123".into(),
            names: vec!["/web".into()],
            image: "busybox:local".into(),
            command: "sh -c 'while true; do date; sleep 1; done'".into(),
            created: chrono::Utc::now().timestamp() - 3,
            state: "running".into(),
            status: "Up 2 seconds".into(),
            ports: vec![Port {
                ip: Some("0.0.0.0".into()),
                private_port: 80,
                public_port: Some(8080),
                kind: "tcp".into(),
            }],
            ..Default::default()
        };
        let r = ps_row(&c, true);
        assert_eq!(r.get("ID").unwrap().as_str(), "0123456789ab");
        assert_eq!(
            r.get("Command").unwrap().as_str(),
            "\"sh -c 'while true; …\""
        );
        assert_eq!(r.get("Names").unwrap().as_str(), "web");
        assert_eq!(r.get("RunningFor").unwrap().as_str(), "3 seconds ago");
        assert_eq!(r.get("Ports").unwrap().as_str(), "0.0.0.0:8080->80/tcp");
        let f = Formatter::new("", PS_TABLE).unwrap();
        let out = f.render(&[r], &ps_header()).unwrap();
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap(),
            "CONTAINER ID   IMAGE           COMMAND                  CREATED         STATUS         PORTS                  NAMES"
        );
        assert_eq!(
            lines.next().unwrap(),
            "0123456789ab   busybox:local   \"sh -c 'while true; …\"   3 seconds ago   Up 2 seconds   0.0.0.0:8080->80/tcp   web"
        );
        let full = ps_row(&c, false);
        assert_eq!(full.get("ID").unwrap().as_str(), "0123456789abcdef0123");
    }

    #[test]
    fn ports_like_docker() {
        let p = |ip: Option<&str>, private: u16, public: Option<u16>, kind: &str| Port {
            ip: ip.map(String::from),
            private_port: private,
            public_port: public,
            kind: kind.into(),
        };
        assert_eq!(
            display_ports(&[
                p(None, 81, None, "tcp"),
                p(None, 80, None, "tcp"),
                p(None, 53, None, "udp"),
                p(Some("0.0.0.0"), 80, Some(8080), "tcp"),
                p(Some("::"), 80, Some(8080), "tcp"),
            ]),
            "53/udp, 80-81/tcp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
        );
        assert_eq!(display_ports(&[]), "");
    }

    #[test]
    fn durations_and_timestamps() {
        assert_eq!(parse_go_duration("42m"), Some(42 * 60 * 1_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5400 * 1_000_000_000));
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(
            parse_timestamp("2013-01-02T13:23:37Z").unwrap(),
            "1357133017.000000000"
        );
        assert_eq!(parse_timestamp("1357133017").unwrap(), "1357133017");
        assert!(parse_timestamp("garbage").is_err());
    }
}
