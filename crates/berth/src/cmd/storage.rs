//! `container/image/volume/system prune`, `system df`, `volume create/ls/inspect/rm`, `history`,
//! `save` and `load`, with docker's output.

use std::io::{BufRead as _, Write as _};

use bytes::Bytes;
use serde_json::Value as J;
use tokio::io::AsyncReadExt;

use super::image::show_progress;
use super::{CliError, CmdResult, Ctx, for_each};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{Client, channel_body, decode, q};
use crate::format::{Formatter, ago, ellipsis, go_fmt_g, human_size, short_id};
use crate::value::Value;

const fn prune_cmd(
    path: &'static str,
    about: &'static str,
    flags: &'static [crate::cli::Flag],
) -> Command {
    Command {
        path,
        usage: "[OPTIONS]",
        about,
        flags,
        interspersed: true,
        min_args: 0,
        max_args: Some(0),
    }
}

/// `container prune`'s grammar.
pub const CONTAINER_PRUNE: Command = prune_cmd(
    "container prune",
    "Remove all stopped containers",
    &[
        l(
            "filter",
            None,
            "Provide filter values (e.g. \"until=<timestamp>\")",
        ),
        b("force", Some('f'), "Do not prompt for confirmation"),
    ],
);

/// `image prune`'s grammar.
pub const IMAGE_PRUNE: Command = prune_cmd(
    "image prune",
    "Remove unused images",
    &[
        b(
            "all",
            Some('a'),
            "Remove all unused images, not just dangling ones",
        ),
        l(
            "filter",
            None,
            "Provide filter values (e.g. \"until=<timestamp>\")",
        ),
        b("force", Some('f'), "Do not prompt for confirmation"),
    ],
);

/// `volume prune`'s grammar.
pub const VOLUME_PRUNE: Command = prune_cmd(
    "volume prune",
    "Remove unused local volumes",
    &[
        b(
            "all",
            Some('a'),
            "Remove all unused volumes, not just anonymous ones",
        ),
        l(
            "filter",
            None,
            "Provide filter values (e.g. \"label=<label>\")",
        ),
        b("force", Some('f'), "Do not prompt for confirmation"),
    ],
);

/// `system prune`'s grammar.
pub const SYSTEM_PRUNE: Command = prune_cmd(
    "system prune",
    "Remove unused data",
    &[
        b(
            "all",
            Some('a'),
            "Remove all unused images not just dangling ones",
        ),
        l(
            "filter",
            None,
            "Provide filter values (e.g. \"label=<key>=<value>\")",
        ),
        b("force", Some('f'), "Do not prompt for confirmation"),
        b("volumes", None, "Prune anonymous volumes"),
    ],
);

/// `system df`'s grammar.
pub const SYSTEM_DF: Command = Command {
    path: "system df",
    usage: "[OPTIONS]",
    about: "Show docker disk usage",
    flags: &[
        v("format", None, "Format output using a custom template"),
        b(
            "verbose",
            Some('v'),
            "Show detailed information on space usage",
        ),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// `volume create`'s grammar.
pub const VOLUME_CREATE: Command = Command {
    path: "volume create",
    usage: "[OPTIONS] [VOLUME]",
    about: "Create a volume",
    flags: &[
        v("driver", Some('d'), "Specify volume driver name"),
        l("label", None, "Set metadata for a volume"),
        l("opt", Some('o'), "Set driver specific options"),
        v("name", None, "Specify volume name"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(1),
};

/// `volume ls`'s grammar.
pub const VOLUME_LS: Command = Command {
    path: "volume ls",
    usage: "[OPTIONS]",
    about: "List volumes",
    flags: &[
        l(
            "filter",
            Some('f'),
            "Provide filter values (e.g. \"dangling=true\")",
        ),
        v("format", None, "Format output using a custom template"),
        b("quiet", Some('q'), "Only display volume names"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// `volume inspect`'s grammar.
pub const VOLUME_INSPECT: Command = Command {
    path: "volume inspect",
    usage: "[OPTIONS] VOLUME [VOLUME...]",
    about: "Display detailed information on one or more volumes",
    flags: &[v(
        "format",
        Some('f'),
        "Format output using a custom template",
    )],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `volume rm`'s grammar.
pub const VOLUME_RM: Command = Command {
    path: "volume rm",
    usage: "[OPTIONS] VOLUME [VOLUME...]",
    about: "Remove one or more volumes",
    flags: &[b(
        "force",
        Some('f'),
        "Force the removal of one or more volumes",
    )],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `history`'s grammar.
pub const HISTORY: Command = Command {
    path: "history",
    usage: "[OPTIONS] IMAGE",
    about: "Show the history of an image",
    flags: &[
        v("format", None, "Format output using a custom template"),
        b(
            "human",
            Some('H'),
            "Print sizes and dates in human readable format (default true)",
        ),
        b("no-trunc", None, "Don't truncate output"),
        v("platform", None, "Show history for the given platform"),
        b("quiet", Some('q'), "Only show image IDs"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

/// `save`'s grammar.
pub const SAVE: Command = Command {
    path: "save",
    usage: "[OPTIONS] IMAGE [IMAGE...]",
    about: "Save one or more images to a tar archive (streamed to STDOUT by default)",
    flags: &[
        v("output", Some('o'), "Write to a file, instead of STDOUT"),
        l("platform", None, "Save only the given platform(s)"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `load`'s grammar.
pub const LOAD: Command = Command {
    path: "load",
    usage: "[OPTIONS]",
    about: "Load an image from a tar archive or STDIN",
    flags: &[
        v(
            "input",
            Some('i'),
            "Read from tar archive file, instead of STDIN",
        ),
        l("platform", None, "Load only the given platform(s)"),
        b("quiet", Some('q'), "Suppress the load output"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(0),
};

/// go-units `HumanSize` (4 significant digits), used by `system df`.
fn human_size4(size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut s = size;
    let mut i = 0;
    while s >= 1000.0 && i < UNITS.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_fmt_g(s, 4), UNITS[i])
}

/// Docker's `PromptForConfirmation`: true for "y"/"yes".
fn confirm(warning: &str) -> bool {
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
}

fn filters_query(m: &Matches) -> Result<berth_api::Filters, CliError> {
    let mut f = berth_api::Filters::default();
    for s in m.values("filter") {
        let Some((k, val)) = s.split_once('=') else {
            return Err(CliError::Msg(
                format!(
                    "invalid argument \"{s}\" for \"--filter\" flag: bad format of filter (expected name=value)"
                ),
                125,
            ));
        };
        f.add(k, val);
    }
    Ok(f)
}

fn filter_qs(f: &berth_api::Filters) -> String {
    if f.is_empty() {
        String::new()
    } else {
        format!("?filters={}", q(&f.to_json()))
    }
}

/// Runs one prune endpoint; returns (printed text, bytes reclaimed).
async fn prune_call(
    client: &Client,
    what: &str,
    f: &berth_api::Filters,
) -> Result<(String, u64), CliError> {
    let resp = client
        .post::<()>(&format!("/{what}/prune{}", filter_qs(f)), None)
        .await?;
    let v: J = decode(resp).await?;
    let space = v["SpaceReclaimed"].as_u64().unwrap_or(0);
    let mut out = String::new();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    match what {
        "containers" => {
            let ids = list("ContainersDeleted");
            if !ids.is_empty() {
                out.push_str("Deleted Containers:\n");
                for i in ids {
                    out.push_str(&format!("{i}\n"));
                }
                out.push('\n');
            }
        }
        "volumes" => {
            let ids = list("VolumesDeleted");
            if !ids.is_empty() {
                out.push_str("Deleted Volumes:\n");
                for i in ids {
                    out.push_str(&format!("{i}\n"));
                }
                out.push('\n');
            }
        }
        "networks" => {
            let ids = list("NetworksDeleted");
            if !ids.is_empty() {
                out.push_str("Deleted Networks:\n");
                for i in ids {
                    out.push_str(&format!("{i}\n"));
                }
                out.push('\n');
            }
        }
        _ => {
            let items = v["ImagesDeleted"].as_array().cloned().unwrap_or_default();
            if !items.is_empty() {
                out.push_str("Deleted Images:\n");
                for i in items {
                    if let Some(u) = i["Untagged"].as_str() {
                        out.push_str(&format!("untagged: {u}\n"));
                    }
                    if let Some(d) = i["Deleted"].as_str() {
                        out.push_str(&format!("deleted: {d}\n"));
                    }
                }
                out.push('\n');
            }
        }
    }
    Ok((out, space))
}

/// `berth container prune` / `image prune` / `volume prune`.
pub async fn prune(ctx: &Ctx, m: Matches, what: &str) -> CmdResult {
    let mut f = filters_query(&m)?;
    let warning = match what {
        "containers" => "WARNING! This will remove all stopped containers.",
        "volumes" if m.flag("all") => {
            "WARNING! This will remove all local volumes not used by at least one container."
        }
        "volumes" => {
            "WARNING! This will remove anonymous local volumes not used by at least one container."
        }
        _ if m.flag("all") => {
            "WARNING! This will remove all images without at least one container associated to them."
        }
        _ => "WARNING! This will remove all dangling images.",
    };
    match what {
        "images" => f.add("dangling", if m.flag("all") { "false" } else { "true" }),
        "volumes" if m.flag("all") => f.add("all", "true"),
        _ => {}
    }
    if !m.flag("force") && !confirm(warning) {
        return Ok(0);
    }
    let client = ctx.client().await?;
    let (out, space) = prune_call(&client, what, &f).await?;
    print!("{out}");
    println!("Total reclaimed space: {}", human_size(space as f64));
    Ok(0)
}

/// `berth system prune`.
pub async fn system_prune(ctx: &Ctx, m: Matches) -> CmdResult {
    let f = filters_query(&m)?;
    let mut warning = String::from(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
    );
    if m.flag("volumes") {
        warning.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    if m.flag("all") {
        warning.push_str("  - all images without at least one container associated to them\n");
        warning.push_str("  - all build cache\n");
    } else {
        warning.push_str("  - all dangling images\n  - unused build cache\n");
    }
    if !m.flag("force") && !confirm(&warning) {
        return Ok(0);
    }
    let client = ctx.client().await?;
    let mut total = 0;
    let mut steps = vec!["containers", "networks"];
    if m.flag("volumes") {
        steps.push("volumes");
    }
    steps.push("images");
    for what in steps {
        let mut f = f.clone();
        if what == "images" {
            f.add("dangling", if m.flag("all") { "false" } else { "true" });
        }
        match prune_call(&client, what, &f).await {
            Ok((out, space)) => {
                print!("{out}");
                total += space;
            }
            // A daemon without networks (404) has nothing to prune there.
            Err(CliError::Client(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    println!("Total reclaimed space: {}", human_size(total as f64));
    Ok(0)
}

fn pct(part: i64, total: i64) -> String {
    if total > 0 {
        format!("{} ({}%)", human_size4(part as f64), part * 100 / total)
    } else {
        human_size4(part as f64)
    }
}

/// The summary rows of `system df`, computed as the docker CLI's disk-usage formatter.
pub fn df_rows(v: &J) -> Vec<Value> {
    let i = |x: &J| x.as_i64().unwrap_or(0);
    let arr = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let images = arr("Images");
    let total = i(&v["LayersSize"]);
    let used: i64 = images
        .iter()
        .filter(|im| {
            i(&im["Containers"]) != 0 && i(&im["Size"]) != -1 && i(&im["SharedSize"]) != -1
        })
        .map(|im| i(&im["Size"]) - i(&im["SharedSize"]))
        .sum();
    let img_active = images.iter().filter(|im| i(&im["Containers"]) > 0).count();
    let containers = arr("Containers");
    let active = |c: &J| {
        matches!(
            c["State"].as_str(),
            Some("running" | "paused" | "restarting")
        )
    };
    let c_size: i64 = containers.iter().map(|c| i(&c["SizeRw"])).sum();
    let c_recl: i64 = containers
        .iter()
        .filter(|c| !active(c))
        .map(|c| i(&c["SizeRw"]))
        .sum();
    let vols = arr("Volumes");
    let vsize = |x: &J| i(&x["UsageData"]["Size"]).max(0);
    let v_size: i64 = vols.iter().map(vsize).sum();
    let v_recl: i64 = vols
        .iter()
        .filter(|x| i(&x["UsageData"]["RefCount"]) == 0)
        .map(vsize)
        .sum();
    let cache = arr("BuildCache");
    let b_size: i64 = cache
        .iter()
        .filter(|x| !x["Shared"].as_bool().unwrap_or(false))
        .map(|x| i(&x["Size"]))
        .sum();
    let b_recl: i64 = cache
        .iter()
        .filter(|x| {
            !x["InUse"].as_bool().unwrap_or(false) && !x["Shared"].as_bool().unwrap_or(false)
        })
        .map(|x| i(&x["Size"]))
        .sum();
    let row = |t: &str, n: usize, a: usize, size: String, recl: String| {
        Value::object([
            ("Active", Value::from(a.to_string())),
            ("Reclaimable", Value::from(recl)),
            ("Size", Value::from(size)),
            ("TotalCount", Value::from(n.to_string())),
            ("Type", Value::from(t)),
        ])
    };
    vec![
        row(
            "Images",
            images.len(),
            img_active,
            human_size4(total as f64),
            pct(total - used, total),
        ),
        row(
            "Containers",
            containers.len(),
            containers.iter().filter(|c| active(c)).count(),
            human_size4(c_size as f64),
            pct(c_recl, c_size),
        ),
        row(
            "Local Volumes",
            vols.len(),
            vols.iter()
                .filter(|x| i(&x["UsageData"]["RefCount"]) > 0)
                .count(),
            human_size4(v_size as f64),
            pct(v_recl, v_size),
        ),
        row(
            "Build Cache",
            cache.len(),
            cache
                .iter()
                .filter(|x| x["InUse"].as_bool().unwrap_or(false))
                .count(),
            human_size4(b_size as f64),
            human_size4(b_recl as f64),
        ),
    ]
}

/// `berth system df`.
pub async fn system_df(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let v: J = client.get("/system/df").await?;
    if m.flag("verbose") && m.value("format").is_none() {
        return df_verbose(&v);
    }
    let fmt = Formatter::new(
        m.value("format").unwrap_or(""),
        "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
    )?;
    let header = Value::object(
        [
            ("Active", "ACTIVE"),
            ("Reclaimable", "RECLAIMABLE"),
            ("Size", "SIZE"),
            ("TotalCount", "TOTAL"),
            ("Type", "TYPE"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    );
    print!("{}", fmt.render(&df_rows(&v), &header)?);
    Ok(0)
}

/// A shared size, or "N/A" when the daemon did not compute it (-1).
fn shared_str(n: i64) -> String {
    if n == -1 {
        "N/A".into()
    } else {
        human_size(n as f64)
    }
}

fn df_verbose(v: &J) -> CmdResult {
    let i = |x: &J| x.as_i64().unwrap_or(0);
    let s = |x: &J| x.as_str().unwrap_or("").to_string();
    let mut t = String::from(
        "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE\tCONTAINERS\n",
    );
    for im in v["Images"].as_array().into_iter().flatten() {
        let tags: Vec<String> = im["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect();
        let tags = if tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            tags
        };
        for tag in tags {
            let (r, tg) = super::image::split_tag(&tag);
            t.push_str(&format!(
                "{r}\t{tg}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                short_id(&s(&im["Id"])),
                ago(i(&im["Created"])),
                human_size(i(&im["Size"]) as f64),
                shared_str(i(&im["SharedSize"])),
                if i(&im["SharedSize"]) == -1 {
                    "N/A".to_string()
                } else {
                    human_size((i(&im["Size"]) - i(&im["SharedSize"])) as f64)
                },
                i(&im["Containers"]),
            ));
        }
    }
    println!("Images space usage:\n");
    print!("{}", crate::format::tabwrite(&t, 10, 3));
    let mut t =
        String::from("CONTAINER ID\tIMAGE\tCOMMAND\tLOCAL VOLUMES\tSIZE\tCREATED\tSTATUS\tNAMES\n");
    for c in v["Containers"].as_array().into_iter().flatten() {
        let name = c["Names"][0].as_str().unwrap_or("").trim_start_matches('/');
        t.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{name}\n",
            short_id(&s(&c["Id"])),
            s(&c["Image"]),
            crate::format::go_quote(&ellipsis(&s(&c["Command"]), 20)),
            c["Mounts"].as_array().map_or(0, Vec::len),
            human_size(i(&c["SizeRw"]) as f64),
            ago(i(&c["Created"])),
            s(&c["Status"]),
        ));
    }
    println!("\nContainers space usage:\n");
    print!("{}", crate::format::tabwrite(&t, 10, 3));
    let mut t = String::from("VOLUME NAME\tLINKS\tSIZE\n");
    for x in v["Volumes"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "{}\t{}\t{}\n",
            s(&x["Name"]),
            i(&x["UsageData"]["RefCount"]),
            human_size(i(&x["UsageData"]["Size"]).max(0) as f64)
        ));
    }
    println!("\nLocal Volumes space usage:\n");
    print!("{}", crate::format::tabwrite(&t, 10, 3));
    let cache: i64 = v["BuildCache"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| i(&x["Size"]))
        .sum();
    println!("\nBuild cache usage: {}\n", human_size(cache as f64));
    print!(
        "{}",
        crate::format::tabwrite(
            "CACHE ID\tCACHE TYPE\tSIZE\tCREATED\tLAST USED\tUSAGE\tSHARED\n",
            10,
            3
        )
    );
    Ok(0)
}

/// `berth volume create`.
pub async fn volume_create(ctx: &Ctx, m: Matches) -> CmdResult {
    let name = match (m.value("name"), m.args.first()) {
        (Some(a), Some(b)) if a != b => {
            return Err(CliError::Msg(
                "conflicting options: cannot specify a volume-name through both --name and as a positional arg".to_string(),
                1,
            ));
        }
        (Some(a), _) => a.to_string(),
        (None, Some(b)) => b.clone(),
        (None, None) => String::new(),
    };
    let kv = |vals: &[String]| -> serde_json::Map<String, J> {
        vals.iter()
            .map(|s| {
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), J::from(v))
            })
            .collect()
    };
    let body = serde_json::json!({
        "Name": name,
        "Driver": m.value("driver").unwrap_or("local"),
        "DriverOpts": kv(m.values("opt")),
        "Labels": kv(m.values("label")),
    });
    let client = ctx.client().await?;
    let resp = client.post("/volumes/create", Some(&body)).await?;
    let v: J = decode(resp).await?;
    println!("{}", v["Name"].as_str().unwrap_or(""));
    Ok(0)
}

/// `berth volume ls`.
pub async fn volume_ls(ctx: &Ctx, m: Matches) -> CmdResult {
    let f = filters_query(&m)?;
    let client = ctx.client().await?;
    let v: J = client.get(&format!("/volumes{}", filter_qs(&f))).await?;
    let mut vols = v["Volumes"].as_array().cloned().unwrap_or_default();
    vols.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    if m.flag("quiet") && m.value("format").is_none() {
        for x in &vols {
            println!("{}", x["Name"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    let rows: Vec<Value> = vols
        .iter()
        .map(|x| {
            let labels = x["Labels"]
                .as_object()
                .map(|l| {
                    let mut kv: Vec<String> = l
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect();
                    kv.sort();
                    kv.join(",")
                })
                .unwrap_or_default();
            let s = |k: &str| Value::from(x[k].as_str().unwrap_or(""));
            Value::object([
                ("Availability", Value::from("N/A")),
                ("Driver", s("Driver")),
                ("Group", Value::from("N/A")),
                ("Labels", Value::from(labels)),
                ("Links", Value::from("N/A")),
                ("Mountpoint", s("Mountpoint")),
                ("Name", s("Name")),
                ("Scope", s("Scope")),
                ("Size", Value::from("N/A")),
                ("Status", Value::from("N/A")),
            ])
        })
        .collect();
    let header = Value::object(
        [
            ("Availability", "AVAILABILITY"),
            ("Driver", "DRIVER"),
            ("Group", "GROUP"),
            ("Labels", "LABELS"),
            ("Links", "LINKS"),
            ("Mountpoint", "MOUNTPOINT"),
            ("Name", "VOLUME NAME"),
            ("Scope", "SCOPE"),
            ("Size", "SIZE"),
            ("Status", "STATUS"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    );
    let fmt = Formatter::new(
        m.value("format").unwrap_or(""),
        "table {{.Driver}}\t{{.Name}}",
    )?;
    print!("{}", fmt.render(&rows, &header)?);
    Ok(0)
}

/// `berth volume inspect`.
pub async fn volume_inspect(ctx: &Ctx, m: Matches) -> CmdResult {
    super::inspect_each(ctx, &m, "/volumes/").await
}

/// `berth volume rm`.
pub async fn volume_rm(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let c = &client;
    let force = u8::from(m.flag("force"));
    for_each(&m.args, |a| async move {
        let resp = c
            .delete(&format!("/volumes/{}?force={force}", q(&a)))
            .await?;
        crate::client::read_body(resp).await?;
        Ok(Some(a))
    })
    .await
}

/// One `history` row as docker's history formatter shows it.
pub fn history_row(h: &J, trunc: bool, human: bool) -> Value {
    let id = h["Id"].as_str().unwrap_or("");
    let id = if trunc { short_id(id) } else { id.to_string() };
    let created = h["Created"].as_i64().unwrap_or(0);
    let rfc = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .with_timezone(&chrono::Local)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let by = h["CreatedBy"].as_str().unwrap_or("").replace('\t', " ");
    let by = if trunc { ellipsis(&by, 45) } else { by };
    let size = h["Size"].as_i64().unwrap_or(0);
    let tags: Vec<&str> = h["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(J::as_str)
        .collect();
    Value::object([
        ("Comment", Value::from(h["Comment"].as_str().unwrap_or(""))),
        ("CreatedAt", Value::from(rfc(created))),
        ("CreatedBy", Value::from(by)),
        (
            "CreatedSince",
            Value::from(if human { ago(created) } else { rfc(created) }),
        ),
        ("ID", Value::from(id)),
        (
            "Size",
            Value::from(if human {
                human_size(size as f64)
            } else {
                size.to_string()
            }),
        ),
        ("Tags", Value::from(tags.join(", "))),
    ])
}

/// `berth history`.
pub async fn history(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let mut path = format!("/images/{}/history", q(&m.args[0]));
    if let Some(p) = m.value("platform") {
        path.push_str(&format!("?platform={}", q(&serde_json::json!({"os": p.split('/').next(), "architecture": p.split('/').nth(1)}).to_string())));
    }
    let v: J = client.get(&path).await?;
    let trunc = !m.flag("no-trunc");
    let human = !m.has("human") || m.flag("human");
    let items = v.as_array().cloned().unwrap_or_default();
    if m.flag("quiet") && m.value("format").is_none() {
        for h in &items {
            let id = h["Id"].as_str().unwrap_or("");
            println!("{}", if trunc { short_id(id) } else { id.to_string() });
        }
        return Ok(0);
    }
    let rows: Vec<Value> = items.iter().map(|h| history_row(h, trunc, human)).collect();
    let header = Value::object(
        [
            ("Comment", "COMMENT"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedBy", "CREATED BY"),
            ("CreatedSince", "CREATED"),
            ("ID", "IMAGE"),
            ("Size", "SIZE"),
            ("Tags", "TAGS"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    );
    let default = if human {
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    } else {
        "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    };
    let fmt = Formatter::new(m.value("format").unwrap_or(""), default)?;
    print!("{}", fmt.render(&rows, &header)?);
    Ok(0)
}

/// `berth save`.
pub async fn save(ctx: &Ctx, m: Matches) -> CmdResult {
    if m.value("output").is_none() && crate::tty::stdout_is_tty() {
        return Err(CliError::Msg(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
            1,
        ));
    }
    let client = ctx.client().await?;
    let names: Vec<String> = m.args.iter().map(|n| format!("names={}", q(n))).collect();
    super::lifecycle::download(
        &client,
        &format!("/images/get?{}", names.join("&")),
        m.value("output"),
    )
    .await
}

/// `berth load`.
pub async fn load(ctx: &Ctx, m: Matches) -> CmdResult {
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match m.value("input") {
        Some(p) => Box::new(tokio::fs::File::open(p).await.map_err(|e| {
            CliError::Msg(
                format!(
                    "open {p}: {}",
                    if e.kind() == std::io::ErrorKind::NotFound {
                        "no such file or directory".to_string()
                    } else {
                        e.to_string()
                    }
                ),
                1,
            )
        })?),
        None => {
            if crate::tty::stdin_is_tty() {
                return Err(CliError::Msg(
                    "requested load from stdin, but stdin is empty".into(),
                    1,
                ));
            }
            Box::new(tokio::io::stdin())
        }
    };
    let client = ctx.client().await?;
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    let quiet = m.flag("quiet");
    let resp = client
        .send(
            http::Method::POST,
            &format!("/images/load?quiet={}", u8::from(quiet)),
            body,
            Some("application/x-tar"),
        )
        .await?;
    let mut body = resp.into_body();
    show_progress(&mut body, false, false).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_like_docker() {
        let v = serde_json::json!({
            "LayersSize": 4_261_000,
            "Images": [{"Containers": 1, "Size": 4_261_000, "SharedSize": 0}],
            "Containers": [{"State": "exited", "SizeRw": 5}],
            "Volumes": [],
            "BuildCache": []
        });
        let rows = df_rows(&v);
        let s = |r: &Value, k: &str| match r.get(k) {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        assert_eq!(s(&rows[0], "Size"), "4.261MB");
        assert_eq!(s(&rows[0], "Reclaimable"), "0B (0%)");
        assert_eq!(s(&rows[1], "Reclaimable"), "5B (100%)");
        assert_eq!(s(&rows[2], "Size"), "0B");
    }

    #[test]
    fn history_rows() {
        let h = serde_json::json!({"Id": "<missing>", "Created": 0, "CreatedBy": "/bin/sh -c #(nop)\tCMD [\"sh\"] and a long tail of words", "Size": 4_261_000, "Comment": ""});
        let r = history_row(&h, true, true);
        assert_eq!(r.get("ID"), Some(&Value::from("<missing>")));
        assert_eq!(r.get("Size"), Some(&Value::from("4.26MB")));
        assert_eq!(
            r.get("CreatedBy"),
            Some(&Value::from(
                "/bin/sh -c #(nop) CMD [\"sh\"] and a long tail…"
            ))
        );
    }
}
