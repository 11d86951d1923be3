//! `pause`, `unpause`, `rename`, `top`, `port`, `update`, `diff`, `export`, `commit`, `stats` and
//! `events`, with docker's output.

use std::io::Write as _;

use serde_json::Value as J;
use tokio::io::AsyncWriteExt;

use super::{CliError, CmdResult, Ctx, for_each};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{Client, decode, next_chunk, q};
use crate::format::{Formatter, bytes_size, human_size, short_id, tabwrite};
use crate::template::Template;
use crate::value::Value;

const fn simple(path: &'static str, usage: &'static str, about: &'static str) -> Command {
    Command {
        path,
        usage,
        about,
        flags: &[],
        interspersed: true,
        min_args: 1,
        max_args: None,
    }
}

/// `pause`'s grammar.
pub const PAUSE: Command = simple(
    "pause",
    "CONTAINER [CONTAINER...]",
    "Pause all processes within one or more containers",
);
/// `unpause`'s grammar.
pub const UNPAUSE: Command = simple(
    "unpause",
    "CONTAINER [CONTAINER...]",
    "Unpause all processes within one or more containers",
);
/// `rename`'s grammar.
pub const RENAME: Command = Command {
    min_args: 2,
    max_args: Some(2),
    ..simple("rename", "CONTAINER NEW_NAME", "Rename a container")
};
/// `top`'s grammar (everything after the container goes to ps).
pub const TOP: Command = Command {
    interspersed: false,
    ..simple(
        "top",
        "CONTAINER [ps OPTIONS]",
        "Display the running processes of a container",
    )
};
/// `port`'s grammar.
pub const PORT: Command = Command {
    max_args: Some(2),
    ..simple(
        "port",
        "CONTAINER [PRIVATE_PORT[/PROTO]]",
        "List port mappings or a specific mapping for the container",
    )
};
/// `diff`'s grammar.
pub const DIFF: Command = Command {
    max_args: Some(1),
    ..simple(
        "diff",
        "CONTAINER",
        "Inspect changes to files or directories on a container's filesystem",
    )
};
/// `export`'s grammar.
pub const EXPORT: Command = Command {
    flags: &[v("output", Some('o'), "Write to a file, instead of STDOUT")],
    max_args: Some(1),
    ..simple(
        "export",
        "[OPTIONS] CONTAINER",
        "Export a container's filesystem as a tar archive",
    )
};
/// `commit`'s grammar.
pub const COMMIT: Command = Command {
    flags: &[
        v(
            "author",
            Some('a'),
            "Author (e.g., \"John Hannibal Smith <hannibal@a-team.com>\")",
        ),
        l(
            "change",
            Some('c'),
            "Apply Dockerfile instruction to the created image",
        ),
        v("message", Some('m'), "Commit message"),
        b(
            "pause",
            Some('p'),
            "Pause container during commit (default true)",
        ),
    ],
    max_args: Some(2),
    ..simple(
        "commit",
        "[OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
        "Create a new image from a container's changes",
    )
};
/// `update`'s grammar.
pub const UPDATE: Command = Command {
    flags: &[
        v(
            "blkio-weight",
            None,
            "Block IO (relative weight), between 10 and 1000, or 0 to disable (default 0)",
        ),
        v(
            "cpu-period",
            None,
            "Limit CPU CFS (Completely Fair Scheduler) period",
        ),
        v(
            "cpu-quota",
            None,
            "Limit CPU CFS (Completely Fair Scheduler) quota",
        ),
        v(
            "cpu-rt-period",
            None,
            "Limit the CPU real-time period in microseconds",
        ),
        v(
            "cpu-rt-runtime",
            None,
            "Limit the CPU real-time runtime in microseconds",
        ),
        v("cpu-shares", Some('c'), "CPU shares (relative weight)"),
        v("cpus", None, "Number of CPUs"),
        v(
            "cpuset-cpus",
            None,
            "CPUs in which to allow execution (0-3, 0,1)",
        ),
        v(
            "cpuset-mems",
            None,
            "MEMs in which to allow execution (0-3, 0,1)",
        ),
        v("memory", Some('m'), "Memory limit"),
        v("memory-reservation", None, "Memory soft limit"),
        v(
            "memory-swap",
            None,
            "Swap limit equal to memory plus swap: -1 to enable unlimited swap",
        ),
        v(
            "pids-limit",
            None,
            "Tune container pids limit (set -1 for unlimited)",
        ),
        v(
            "restart",
            None,
            "Restart policy to apply when a container exits",
        ),
    ],
    ..simple(
        "update",
        "[OPTIONS] CONTAINER [CONTAINER...]",
        "Update configuration of one or more containers",
    )
};
/// `stats`'s grammar.
pub const STATS: Command = Command {
    flags: &[
        b(
            "all",
            Some('a'),
            "Show all containers (default shows just running)",
        ),
        v("format", None, "Format output using a custom template"),
        b(
            "no-stream",
            None,
            "Disable streaming stats and only pull the first result",
        ),
        b("no-trunc", None, "Do not truncate output"),
    ],
    min_args: 0,
    ..simple(
        "stats",
        "[OPTIONS] [CONTAINER...]",
        "Display a live stream of container(s) resource usage statistics",
    )
};
/// `events`'s grammar.
pub const EVENTS: Command = Command {
    flags: &[
        l(
            "filter",
            Some('f'),
            "Filter output based on conditions provided",
        ),
        v("format", None, "Format output using a custom template"),
        v("since", None, "Show all events created since timestamp"),
        v("until", None, "Stream events until this timestamp"),
    ],
    min_args: 0,
    max_args: Some(0),
    ..simple(
        "events",
        "[OPTIONS]",
        "Get real time events from the server",
    )
};

/// `berth pause` / `berth unpause`.
pub async fn pause(ctx: &Ctx, m: Matches, verb: &str) -> CmdResult {
    let client = ctx.client().await?;
    let c = &client;
    for_each(&m.args, |a| async move {
        c.post_empty(&format!("/containers/{}/{verb}", q(&a)))
            .await?;
        Ok(Some(a))
    })
    .await
}

/// `berth rename`.
pub async fn rename(ctx: &Ctx, m: Matches) -> CmdResult {
    let (old, new) = (m.args[0].trim(), m.args[1].trim());
    if old.is_empty() || new.is_empty() {
        return Err(CliError::Msg(
            "Error: Neither old nor new names may be empty".into(),
            1,
        ));
    }
    let client = ctx.client().await?;
    match client
        .post_empty(&format!("/containers/{}/rename?name={}", q(old), q(new)))
        .await
    {
        Ok(()) => Ok(0),
        Err(e @ crate::client::ClientError::Connect(_)) => Err(e.into()),
        Err(e) => Err(CliError::Msg(
            format!("{e}\nError: failed to rename container named {old}"),
            1,
        )),
    }
}

/// `berth top`.
pub async fn top(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let mut path = format!("/containers/{}/top", q(&m.args[0]));
    if m.args.len() > 1 {
        path.push_str(&format!("?ps_args={}", q(&m.args[1..].join(" "))));
    }
    let v: J = client.get(&path).await?;
    let strs = |a: &J| -> Vec<String> {
        a.as_array()
            .map(|x| {
                x.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut text = strs(&v["Titles"]).join("\t");
    text.push('\n');
    for p in v["Processes"].as_array().into_iter().flatten() {
        text.push_str(&strs(p).join("\t"));
        text.push('\n');
    }
    print!("{}", tabwrite(&text, 20, 3));
    Ok(0)
}

/// Formats a host binding like Go's `net.JoinHostPort`.
fn join_host_port(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `port`'s output lines from inspect's `NetworkSettings.Ports`, or docker's error for `spec`.
pub fn port_lines(ports: &J, name: &str, spec: Option<&str>) -> Result<Vec<String>, String> {
    let ports = ports.as_object().cloned().unwrap_or_default();
    let bindings = |k: &str| -> Vec<String> {
        ports
            .get(k)
            .and_then(J::as_array)
            .map(|a| {
                a.iter()
                    .map(|b| {
                        join_host_port(
                            b["HostIp"].as_str().unwrap_or(""),
                            b["HostPort"].as_str().unwrap_or(""),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(spec) = spec {
        let (p, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        if p.parse::<u16>().is_err() {
            return Err(format!(
                "Error: invalid port ({p}): strconv.ParseUint: parsing \"{p}\": invalid syntax"
            ));
        }
        let b = bindings(&format!("{p}/{proto}"));
        if b.is_empty() {
            return Err(format!(
                "Error: No public port '{spec}' published for {name}"
            ));
        }
        return Ok(b);
    }
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        let (p, proto) = k.split_once('/').unwrap_or((k, ""));
        (p.parse::<u32>().unwrap_or(0), proto.to_string())
    });
    Ok(keys
        .into_iter()
        .flat_map(|k| bindings(k).into_iter().map(move |x| format!("{k} -> {x}")))
        .collect())
}

/// `berth port`.
pub async fn port(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let name = &m.args[0];
    let info: J = client.get(&format!("/containers/{}/json", q(name))).await?;
    let lines = port_lines(
        &info["NetworkSettings"]["Ports"],
        name,
        m.args.get(1).map(String::as_str),
    )
    .map_err(|e| CliError::Msg(e, 1))?;
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

/// `berth diff`.
pub async fn diff(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let v: J = client
        .get(&format!("/containers/{}/changes", q(&m.args[0])))
        .await?;
    for c in v.as_array().into_iter().flatten() {
        let kind = match c["Kind"].as_i64() {
            Some(0) => "C",
            Some(1) => "A",
            Some(2) => "D",
            _ => "?",
        };
        println!("{kind} {}", c["Path"].as_str().unwrap_or(""));
    }
    Ok(0)
}

/// Streams a GET body to `-o FILE` or stdout; refuses a terminal like docker.
pub async fn download(client: &Client, path: &str, output: Option<&str>) -> CmdResult {
    if output.is_none() && crate::tty::stdout_is_tty() {
        return Err(CliError::Msg(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            1,
        ));
    }
    let resp = client
        .send(http::Method::GET, path, crate::client::empty(), None)
        .await?;
    let mut body = resp.into_body();
    // Write to a temp file next to the target and rename, so a failure leaves no half archive.
    let (mut w, tmp): (
        Box<dyn tokio::io::AsyncWrite + Unpin>,
        Option<(String, String)>,
    ) = match output {
        Some(o) => {
            let tmp = format!("{o}.berth-tmp-{}", std::process::id());
            let f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| CliError::Msg(format!("failed to save: open {o}: {e}"), 1))?;
            (Box::new(f), Some((tmp, o.to_string())))
        }
        None => (Box::new(tokio::io::stdout()), None),
    };
    let res: Result<(), CliError> = async {
        while let Some(chunk) = next_chunk(&mut body).await? {
            w.write_all(&chunk).await?;
        }
        w.flush().await?;
        Ok(())
    }
    .await;
    drop(w);
    match (res, tmp) {
        (Ok(()), Some((tmp, o))) => {
            tokio::fs::rename(&tmp, &o).await?;
            Ok(0)
        }
        (Ok(()), None) => Ok(0),
        (Err(e), Some((tmp, _))) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// `berth export`.
pub async fn export(ctx: &Ctx, m: Matches) -> CmdResult {
    if m.value("output").is_none() && crate::tty::stdout_is_tty() {
        return Err(CliError::Msg(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            1,
        ));
    }
    let client = ctx.client().await?;
    download(
        &client,
        &format!("/containers/{}/export", q(&m.args[0])),
        m.value("output"),
    )
    .await
}

/// `berth commit`.
pub async fn commit(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let (repo, tag) = match m.args.get(1) {
        Some(r) => {
            let (r, t) = super::image::split_tag(r);
            (r.to_string(), t.to_string())
        }
        None => (String::new(), String::new()),
    };
    let pause = !m.has("pause") || m.flag("pause");
    let mut path = format!(
        "/commit?container={}&repo={}&tag={}&pause={}",
        q(&m.args[0]),
        q(&repo),
        q(&tag),
        pause
    );
    if let Some(a) = m.value("author") {
        path.push_str(&format!("&author={}", q(a)));
    }
    if let Some(c) = m.value("message") {
        path.push_str(&format!("&comment={}", q(c)));
    }
    for c in m.values("change") {
        path.push_str(&format!("&changes={}", q(c)));
    }
    let resp = client.post(&path, Some(&serde_json::json!({}))).await?;
    let v: J = decode(resp).await?;
    println!("{}", v["Id"].as_str().unwrap_or(""));
    Ok(0)
}

/// `berth update`.
pub async fn update(ctx: &Ctx, m: Matches) -> CmdResult {
    let mut body = serde_json::Map::new();
    let int = |name: &str| m.int(name);
    for (flag, key) in [
        ("blkio-weight", "BlkioWeight"),
        ("cpu-period", "CpuPeriod"),
        ("cpu-quota", "CpuQuota"),
        ("cpu-rt-period", "CpuRealtimePeriod"),
        ("cpu-rt-runtime", "CpuRealtimeRuntime"),
        ("cpu-shares", "CpuShares"),
        ("pids-limit", "PidsLimit"),
    ] {
        if let Some(n) = int(flag)? {
            body.insert(key.into(), n.into());
        }
    }
    for (flag, key) in [("cpuset-cpus", "CpusetCpus"), ("cpuset-mems", "CpusetMems")] {
        if let Some(s) = m.value(flag) {
            body.insert(key.into(), s.into());
        }
    }
    for (flag, key) in [
        ("memory", "Memory"),
        ("memory-reservation", "MemoryReservation"),
    ] {
        if let Some(s) = m.value(flag) {
            let n = crate::format::ram_in_bytes(s).map_err(|e| m.bad_value(flag, s, &e))?;
            body.insert(key.into(), n.into());
        }
    }
    if let Some(s) = m.value("memory-swap") {
        let n = if s == "-1" {
            -1
        } else {
            crate::format::ram_in_bytes(s).map_err(|e| m.bad_value("memory-swap", s, &e))?
        };
        body.insert("MemorySwap".into(), n.into());
    }
    if let Some(s) = m.value("cpus") {
        let f: f64 = s
            .parse()
            .map_err(|_| m.bad_value("cpus", s, "failed to parse"))?;
        body.insert("NanoCpus".into(), ((f * 1e9).round() as i64).into());
    }
    if let Some(r) = m.value("restart") {
        let (name, count) = r.split_once(':').unwrap_or((r, ""));
        let mut p = serde_json::Map::new();
        p.insert("Name".into(), name.into());
        if !count.is_empty() {
            let n: i64 = count.parse().map_err(|_| {
                CliError::Msg(
                    "invalid restart policy format: maximum retry count must be an integer"
                        .to_string(),
                    125,
                )
            })?;
            p.insert("MaximumRetryCount".into(), n.into());
        }
        body.insert("RestartPolicy".into(), J::Object(p));
    }
    if body.is_empty() {
        return Err(CliError::Msg(
            "You must provide one or more flags when using this command.".into(),
            1,
        ));
    }
    let client = ctx.client().await?;
    let c = &client;
    let body = &J::Object(body);
    for_each(&m.args, |a| async move {
        let resp = c
            .post(&format!("/containers/{}/update", q(&a)), Some(body))
            .await?;
        let v: J = decode(resp).await.unwrap_or(J::Null);
        for w in v["Warnings"].as_array().into_iter().flatten() {
            if let Some(w) = w.as_str() {
                eprintln!("{w}");
            }
        }
        Ok(Some(a))
    })
    .await
}

/// One row of `stats`, computed from an Engine API stats object as the docker CLI does.
pub fn stats_row(id: &str, name: &str, s: &J, trunc: bool) -> Value {
    let u = |v: &J| v.as_u64().unwrap_or(0) as f64;
    let cpu = &s["cpu_stats"];
    let pre = &s["precpu_stats"];
    let cpu_delta = u(&cpu["cpu_usage"]["total_usage"]) - u(&pre["cpu_usage"]["total_usage"]);
    let sys_delta = u(&cpu["system_cpu_usage"]) - u(&pre["system_cpu_usage"]);
    let mut online = u(&cpu["online_cpus"]);
    if online == 0.0 {
        online = cpu["cpu_usage"]["percpu_usage"]
            .as_array()
            .map_or(0, Vec::len) as f64;
    }
    let cpu_pct = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let mem = &s["memory_stats"];
    let mut usage = u(&mem["usage"]);
    let st = &mem["stats"];
    let cache = if st.get("total_inactive_file").is_some() {
        u(&st["total_inactive_file"])
    } else {
        u(&st["inactive_file"])
    };
    if cache < usage {
        usage -= cache;
    }
    let limit = u(&mem["limit"]);
    let mem_pct = if limit > 0.0 {
        usage / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    if let Some(n) = s["networks"].as_object() {
        for v in n.values() {
            rx += u(&v["rx_bytes"]);
            tx += u(&v["tx_bytes"]);
        }
    }
    let (mut rd, mut wr) = (0.0, 0.0);
    for e in s["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .into_iter()
        .flatten()
    {
        match e["op"].as_str().unwrap_or("").to_ascii_lowercase().as_str() {
            "read" => rd += u(&e["value"]),
            "write" => wr += u(&e["value"]),
            _ => {}
        }
    }
    let shown_id = if trunc { short_id(id) } else { id.to_string() };
    Value::object([
        (
            "BlockIO",
            Value::from(format!("{} / {}", human_size(rd), human_size(wr))),
        ),
        ("CPUPerc", Value::from(format!("{cpu_pct:.2}%"))),
        ("Container", Value::from(name)),
        ("ID", Value::from(shown_id)),
        ("MemPerc", Value::from(format!("{mem_pct:.2}%"))),
        (
            "MemUsage",
            Value::from(format!("{} / {}", bytes_size(usage), bytes_size(limit))),
        ),
        ("Name", Value::from(name)),
        (
            "NetIO",
            Value::from(format!("{} / {}", human_size(rx), human_size(tx))),
        ),
        (
            "PIDs",
            Value::from(s["pids_stats"]["current"].as_i64().unwrap_or(0)),
        ),
    ])
}

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn stats_header() -> Value {
    Value::object(
        [
            ("BlockIO", "BLOCK I/O"),
            ("CPUPerc", "CPU %"),
            ("Container", "CONTAINER"),
            ("ID", "CONTAINER ID"),
            ("MemPerc", "MEM %"),
            ("MemUsage", "MEM USAGE / LIMIT"),
            ("Name", "NAME"),
            ("NetIO", "NET I/O"),
            ("PIDs", "PIDS"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    )
}

/// `berth stats`.
pub async fn stats(ctx: &Ctx, m: Matches) -> CmdResult {
    let fmt = Formatter::new(m.value("format").unwrap_or(""), STATS_TABLE)?;
    let client = ctx.client().await?;
    let trunc = !m.flag("no-trunc");
    let stream = !m.flag("no-stream");
    let tty = crate::tty::stdout_is_tty();
    let mut first = true;
    loop {
        let round = std::time::Instant::now();
        // (id, name shown, given) for this round: listed anew each time, as containers come and go.
        let targets: Vec<(String, String)> = if m.args.is_empty() {
            let list: J = client
                .get(&format!("/containers/json?all={}", u8::from(m.flag("all"))))
                .await?;
            list.as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = c["Names"][0].as_str().unwrap_or("").trim_start_matches('/');
                    (c["Id"].as_str().unwrap_or("").to_string(), name.to_string())
                })
                .collect()
        } else {
            m.args.iter().map(|a| (a.clone(), a.clone())).collect()
        };
        let futs = targets.iter().map(|(id, name)| {
            let c = client.clone();
            let (id, name) = (id.clone(), name.clone());
            async move {
                let s: Result<J, _> = c
                    .get(&format!("/containers/{}/stats?stream=false", q(&id)))
                    .await;
                (id, name, s)
            }
        });
        let results = join_all(futs).await;
        let mut rows = Vec::new();
        let mut errors = Vec::new();
        for (id, name, s) in results {
            match s {
                Ok(s) => {
                    let full_id = s["id"].as_str().filter(|x| !x.is_empty()).unwrap_or(&id);
                    let shown = s["name"]
                        .as_str()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .filter(|n| !n.is_empty())
                        .unwrap_or(name);
                    rows.push(stats_row(full_id, &shown, &s, trunc));
                }
                Err(e) if !m.args.is_empty() => errors.push(e.to_string()),
                Err(_) => {}
            }
        }
        if first && !errors.is_empty() {
            return Err(CliError::Msg(errors.join("\n"), 1));
        }
        first = false;
        let text = fmt.render(&rows, &stats_header())?;
        if stream && tty {
            print!("{}", redraw(&text));
        } else {
            print!("{text}");
        }
        let _ = std::io::stdout().flush();
        if !stream {
            return Ok(0);
        }
        // One redraw a second, as docker: a round's one-shot stats already take about that long.
        let spent = round.elapsed();
        if spent < std::time::Duration::from_secs(1) {
            tokio::time::sleep(std::time::Duration::from_secs(1) - spent).await;
        }
    }
}

/// One redraw of the streaming `stats` table on a terminal, byte for byte as docker 28 writes it: cursor
/// home and the table, then cursor home again and every line followed by an erase-to-end-of-line (so a
/// shorter line leaves nothing behind), then erase below (fewer containers than before).
pub fn redraw(text: &str) -> String {
    let mut s = format!("\x1b[H{text}\x1b[H");
    for line in text.split('\n') {
        s.push_str(line);
        s.push_str(" \x1b[K\n");
    }
    s.push_str("\x1b[J");
    s
}

/// Awaits all futures concurrently (a tiny `join_all` without a futures dependency).
async fn join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// docker's default event line: `time type action id (k=v, ...)` with `RFC3339NanoFixed` local time.
pub fn event_line(e: &J) -> String {
    let nano = e["timeNano"].as_i64().unwrap_or(0);
    let t = chrono::DateTime::from_timestamp(nano / 1_000_000_000, (nano % 1_000_000_000) as u32)
        .unwrap_or_default()
        .with_timezone(&chrono::Local);
    let ts = t.format("%Y-%m-%dT%H:%M:%S%.9f%:z").to_string();
    let ts = ts
        .strip_suffix("+00:00")
        .map_or(ts.clone(), |s| format!("{s}Z"));
    let mut line = format!(
        "{ts} {} {} {}",
        e["Type"].as_str().unwrap_or(""),
        e["Action"].as_str().unwrap_or(""),
        e["Actor"]["ID"].as_str().unwrap_or("")
    );
    if let Some(attrs) = e["Actor"]["Attributes"].as_object()
        && !attrs.is_empty()
    {
        let mut kv: Vec<String> = attrs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        kv.sort();
        line.push_str(&format!(" ({})", kv.join(", ")));
    }
    line
}

/// `berth events`.
pub async fn events(ctx: &Ctx, m: Matches) -> CmdResult {
    let mut filters = berth_api::Filters::default();
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
    let mut path = "/events?".to_string();
    for key in ["since", "until"] {
        if let Some(s) = m.value(key) {
            // docker's events reports the bare parse error (logs prefixes the flag name).
            let ts = super::container::parse_timestamp(s)
                .map_err(|e| CliError::Msg(e.replace("invalid value for \"since\": ", ""), 1))?;
            path.push_str(&format!("{key}={}&", q(&ts)));
        }
    }
    if !filters.is_empty() {
        path.push_str(&format!("filters={}", q(&filters.to_json())));
    }
    let tmpl = match m.value("format") {
        None | Some("") => None,
        Some("json") => Some(Template::parse("{{json .}}")?),
        Some(f) => Some(Template::parse(f)?),
    };
    let client = ctx.client().await?;
    let resp = client
        .send(
            http::Method::GET,
            path.trim_end_matches(['&', '?']),
            crate::client::empty(),
            None,
        )
        .await?;
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut out = tokio::io::stdout();
    while let Some(chunk) = next_chunk(&mut body).await? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            let shown = match &tmpl {
                Some(t) => t.execute(&Value::from_json(text).unwrap_or_default())?,
                None => event_line(&serde_json::from_str(text).unwrap_or(J::Null)),
            };
            out.write_all(format!("{shown}\n").as_bytes()).await?;
            out.flush().await?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_like_docker() {
        let s: J = serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000u64}, "system_cpu_usage": 10_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000u64}, "system_cpu_usage": 0u64},
            "memory_stats": {"usage": 2_097_152u64, "limit": 8_388_608u64, "stats": {"total_inactive_file": 1_048_576u64}},
            "networks": {"eth0": {"rx_bytes": 1500u64, "tx_bytes": 0u64}},
            "pids_stats": {"current": 3}
        });
        let r = stats_row("0123456789abcdef", "web", &s, true);
        let t = |k: &str| match r.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_json(),
            None => String::new(),
        };
        assert_eq!(t("ID"), "0123456789ab");
        assert_eq!(t("CPUPerc"), "20.00%");
        assert_eq!(t("MemUsage"), "1MiB / 8MiB");
        assert_eq!(t("MemPerc"), "12.50%");
        assert_eq!(t("NetIO"), "1.5kB / 0B");
        assert_eq!(t("BlockIO"), "0B / 0B");
        assert_eq!(t("PIDs"), "3");
        // Block I/O: v1's `Read`/`Write` (not `Total`) and v2's `read`/`write`, summed.
        let mut s = s;
        s["blkio_stats"] = serde_json::json!({"io_service_bytes_recursive": [
            {"major": 254, "minor": 0, "op": "Read", "value": 1_200_000u64},
            {"major": 254, "minor": 0, "op": "Write", "value": 5_242_880u64},
            {"major": 254, "minor": 0, "op": "Total", "value": 6_442_880u64},
            {"major": 8, "minor": 0, "op": "write", "value": 1_000u64},
        ]});
        let r = stats_row("0123456789abcdef", "web", &s, true);
        assert_eq!(
            r.get("BlockIO"),
            Some(&Value::from("1.2MB / 5.24MB".to_string()))
        );
    }

    #[test]
    fn event_lines_like_docker() {
        let e: J = serde_json::json!({"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"x","image":"busybox"}},"timeNano":1_700_000_000_123_456_789i64});
        let l = event_line(&e);
        assert!(
            l.ends_with(" container start abc (image=busybox, name=x)"),
            "{l}"
        );
        assert_eq!(join_host_port("::", "80"), "[::]:80");
    }

    #[test]
    fn stats_redraw_like_docker() {
        assert_eq!(
            redraw("A\nB\n"),
            "\x1b[HA\nB\n\x1b[HA \x1b[K\nB \x1b[K\n \x1b[K\n\x1b[J"
        );
    }

    #[test]
    fn ports_like_docker() {
        let p: J = serde_json::json!({
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
            "9000/tcp": null
        });
        assert_eq!(
            port_lines(&p, "web", None).unwrap(),
            [
                "53/udp -> 127.0.0.1:5353",
                "80/tcp -> 0.0.0.0:8080",
                "80/tcp -> [::]:8080"
            ]
        );
        assert_eq!(
            port_lines(&p, "web", Some("80")).unwrap(),
            ["0.0.0.0:8080", "[::]:8080"]
        );
        assert_eq!(
            port_lines(&p, "web", Some("9000")).unwrap_err(),
            "Error: No public port '9000' published for web"
        );
        assert_eq!(
            port_lines(&p, "web", Some("x/tcp")).unwrap_err(),
            "Error: invalid port (x): strconv.ParseUint: parsing \"x\": invalid syntax"
        );
    }
}
