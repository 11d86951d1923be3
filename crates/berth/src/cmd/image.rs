//! `images`, `rmi`, `tag`, `import` and `pull`, with docker's JSON progress display.

use std::io::Write as _;

use berth_api::Filters;
use berth_api::image::{DeleteItem, ImageSummary};
use berth_api::progress::JsonMessage;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::{CliError, CmdResult, Ctx, for_each};
use crate::cli::{Command, Matches, b, l, v};
use crate::client::{Client, channel_body, decode, next_chunk, q};
use crate::format::{Formatter, ago, go_time_string, human_size, short_id};
use crate::value::Value;

/// `images`'s grammar.
pub const IMAGES: Command = Command {
    path: "images",
    usage: "[OPTIONS] [REPOSITORY[:TAG]]",
    about: "List images",
    flags: &[
        b(
            "all",
            Some('a'),
            "Show all images (default hides intermediate images)",
        ),
        b("digests", None, "Show digests"),
        l(
            "filter",
            Some('f'),
            "Filter output based on conditions provided",
        ),
        v("format", None, "Format output using a custom template"),
        b("no-trunc", None, "Don't truncate output"),
        b("quiet", Some('q'), "Only show image IDs"),
    ],
    interspersed: true,
    min_args: 0,
    max_args: Some(1),
};

/// `rmi`'s grammar.
pub const RMI: Command = Command {
    path: "rmi",
    usage: "[OPTIONS] IMAGE [IMAGE...]",
    about: "Remove one or more images",
    flags: &[
        b("force", Some('f'), "Force removal of the image"),
        b("no-prune", None, "Do not delete untagged parents"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `image inspect`'s grammar.
pub const IMAGE_INSPECT: Command = Command {
    path: "image inspect",
    usage: "[OPTIONS] IMAGE [IMAGE...]",
    about: "Display detailed information on one or more images",
    flags: &[v(
        "format",
        Some('f'),
        "Format output using a custom template",
    )],
    interspersed: true,
    min_args: 1,
    max_args: None,
};

/// `tag`'s grammar.
pub const TAG: Command = Command {
    path: "tag",
    usage: "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
    about: "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE",
    flags: &[],
    interspersed: true,
    min_args: 2,
    max_args: Some(2),
};

/// `import`'s grammar.
pub const IMPORT: Command = Command {
    path: "import",
    usage: "[OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
    about: "Import the contents from a tarball to create a filesystem image",
    flags: &[
        l(
            "change",
            Some('c'),
            "Apply Dockerfile instruction to the created image",
        ),
        v(
            "message",
            Some('m'),
            "Set commit message for imported image",
        ),
        v(
            "platform",
            None,
            "Set platform if server is multi-platform capable",
        ),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(2),
};

/// `pull`'s grammar.
pub const PULL: Command = Command {
    path: "pull",
    usage: "[OPTIONS] NAME[:TAG|@DIGEST]",
    about: "Download an image from a registry",
    flags: &[
        b(
            "all-tags",
            Some('a'),
            "Download all tagged images in the repository",
        ),
        v(
            "platform",
            None,
            "Set platform if server is multi-platform capable",
        ),
        b("quiet", Some('q'), "Suppress verbose output"),
    ],
    interspersed: true,
    min_args: 1,
    max_args: Some(1),
};

const IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
const IMAGES_DIGEST_TABLE: &str =
    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";

fn images_header() -> Value {
    Value::object(
        [
            ("Containers", "CONTAINERS"),
            ("CreatedAt", "CREATED AT"),
            ("CreatedSince", "CREATED"),
            ("Digest", "DIGEST"),
            ("ID", "IMAGE ID"),
            ("Repository", "REPOSITORY"),
            ("SharedSize", "SHARED SIZE"),
            ("Size", "SIZE"),
            ("Tag", "TAG"),
            ("UniqueSize", "UNIQUE SIZE"),
            ("VirtualSize", "VIRTUAL SIZE"),
        ]
        .map(|(k, v)| (k, Value::from(v))),
    )
}

/// Splits `repo:tag` (a port in the registry host is not a tag).
pub fn split_tag(r: &str) -> (&str, &str) {
    let slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[slash..].rfind(':') {
        Some(i) => (&r[..slash + i], &r[slash + i + 1..]),
        None => (r, ""),
    }
}

/// One row per tag (or `<none>`), as docker's image formatter does.
pub fn image_rows(list: &[ImageSummary], trunc: bool) -> Vec<Value> {
    let mut rows = Vec::new();
    for i in list {
        let id = if trunc { short_id(&i.id) } else { i.id.clone() };
        let digest_for = |repo: &str| {
            i.repo_digests
                .iter()
                .find(|d| d.split('@').next() == Some(repo))
                .and_then(|d| d.split('@').nth(1))
                .unwrap_or("<none>")
                .to_string()
        };
        let mut pairs: Vec<(String, String, String)> = i
            .repo_tags
            .iter()
            .filter(|t| t.as_str() != "<none>:<none>")
            .map(|t| {
                let (r, tag) = split_tag(t);
                (r.to_string(), tag.to_string(), digest_for(r))
            })
            .collect();
        if pairs.is_empty() {
            match i.repo_digests.first() {
                Some(d) if d != "<none>@<none>" => {
                    let (r, dg) = d.split_once('@').unwrap_or((d, ""));
                    pairs.push((r.to_string(), "<none>".into(), dg.to_string()));
                }
                _ => pairs.push(("<none>".into(), "<none>".into(), "<none>".into())),
            }
        }
        for (repo, tag, digest) in pairs {
            rows.push(Value::object([
                (
                    "Containers",
                    Value::from(if i.containers < 0 {
                        "N/A".to_string()
                    } else {
                        i.containers.to_string()
                    }),
                ),
                ("CreatedAt", Value::from(go_time_string(i.created))),
                ("CreatedSince", Value::from(ago(i.created))),
                ("Digest", Value::from(digest)),
                ("ID", Value::from(id.clone())),
                ("Repository", Value::from(repo)),
                (
                    "SharedSize",
                    Value::from(if i.shared_size < 0 {
                        "N/A".to_string()
                    } else {
                        human_size(i.shared_size as f64)
                    }),
                ),
                ("Size", Value::from(human_size(i.size as f64))),
                ("Tag", Value::from(tag)),
                (
                    "UniqueSize",
                    Value::from(if i.shared_size < 0 {
                        "N/A".to_string()
                    } else {
                        human_size((i.size - i.shared_size) as f64)
                    }),
                ),
                ("VirtualSize", Value::from(human_size(i.size as f64))),
            ]));
        }
    }
    rows
}

/// `berth images`.
pub async fn images(ctx: &Ctx, m: Matches) -> CmdResult {
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
    if let Some(r) = m.args.first() {
        filters.add("reference", r);
    }
    let client = ctx.client().await?;
    let mut path = format!("/images/json?all={}", u8::from(m.flag("all")));
    if !filters.is_empty() {
        path.push_str(&format!("&filters={}", q(&filters.to_json())));
    }
    let list: Vec<ImageSummary> = client.get(&path).await?;
    let trunc = !m.flag("no-trunc");
    if m.flag("quiet") && m.value("format").is_none() {
        let mut seen = Vec::new();
        for i in &list {
            let id = if trunc { short_id(&i.id) } else { i.id.clone() };
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(0);
    }
    let default = if m.flag("digests") {
        IMAGES_DIGEST_TABLE
    } else {
        IMAGES_TABLE
    };
    let fmt = Formatter::new(m.value("format").unwrap_or(""), default)?;
    print!(
        "{}",
        fmt.render(&image_rows(&list, trunc), &images_header())?
    );
    Ok(0)
}

/// `berth rmi`.
pub async fn rmi(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let qs = format!(
        "?force={}&noprune={}",
        u8::from(m.flag("force")),
        u8::from(m.flag("no-prune"))
    );
    let c = &client;
    let qs = &qs;
    for_each(&m.args, |a| async move {
        let resp = c.delete(&format!("/images/{}{qs}", q(&a))).await?;
        let items: Vec<DeleteItem> = decode(resp).await?;
        let lines: Vec<String> = items
            .iter()
            .filter_map(|i| {
                i.untagged
                    .as_ref()
                    .map(|u| format!("Untagged: {u}"))
                    .or_else(|| i.deleted.as_ref().map(|d| format!("Deleted: {d}")))
            })
            .collect();
        Ok(if lines.is_empty() {
            None
        } else {
            Some(lines.join("\n"))
        })
    })
    .await
}

/// `berth tag`.
pub async fn tag(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let (repo, tag) = split_tag(&m.args[1]);
    let tag = if tag.is_empty() { "latest" } else { tag };
    client
        .post_empty(&format!(
            "/images/{}/tag?repo={}&tag={}",
            q(&m.args[0]),
            q(repo),
            q(tag)
        ))
        .await?;
    Ok(0)
}

/// Renders JSON progress messages like docker's `DisplayJSONMessagesStream`: on a terminal, lines with
/// an ID are updated in place; elsewhere progress bars are left out.
#[derive(Debug, Default)]
pub struct ProgressDisplay {
    ids: std::collections::HashMap<String, usize>,
    tty: bool,
}

impl ProgressDisplay {
    /// A display for a terminal (`tty`) or a plain stream.
    pub fn new(tty: bool) -> Self {
        ProgressDisplay {
            ids: Default::default(),
            tty,
        }
    }

    /// The text to write for one message.
    pub fn render(&mut self, m: &JsonMessage) -> String {
        let mut out = String::new();
        let has_prog = m.progress_detail.is_some();
        let pmsg = m.progress.clone().unwrap_or_default();
        let detail_str = m
            .progress_detail
            .as_ref()
            .filter(|d| d.current.unwrap_or(0) > 0 || d.total.unwrap_or(0) > 0)
            .map(|d| {
                if pmsg.is_empty() {
                    let cur = human_size(d.current.unwrap_or(0) as f64);
                    match d.total {
                        Some(t) if t > 0 => format!("{cur}/{}", human_size(t as f64)),
                        _ => cur,
                    }
                } else {
                    pmsg.clone()
                }
            })
            .unwrap_or_default();
        let mut diff = 0;
        match &m.id {
            Some(id) if has_prog || !pmsg.is_empty() => {
                let line = match self.ids.get(id) {
                    Some(l) => *l,
                    None => {
                        let l = self.ids.len();
                        self.ids.insert(id.clone(), l);
                        if self.tty {
                            out.push('\n');
                        }
                        l
                    }
                };
                diff = self.ids.len() - line;
                if self.tty {
                    out.push_str(&format!("\x1b[{diff}A"));
                }
            }
            _ => self.ids.clear(),
        }
        let status = m.status.as_deref().unwrap_or("");
        let mut endl = "";
        if self.tty && m.stream.is_none() && has_prog {
            out.push_str("\x1b[2K\r");
            endl = "\r";
        } else if has_prog && !detail_str.is_empty() {
            return out;
        }
        if let Some(id) = &m.id {
            out.push_str(&format!("{id}: "));
        }
        if has_prog && self.tty {
            out.push_str(&format!("{status} {detail_str}{endl}"));
        } else if !pmsg.is_empty() {
            out.push_str(&format!("{status} {pmsg}{endl}"));
        } else if let Some(s) = &m.stream {
            out.push_str(&format!("{s}{endl}"));
        } else {
            out.push_str(&format!("{status}{endl}\n"));
        }
        if m.id.is_some() && self.tty && diff > 0 {
            out.push_str(&format!("\x1b[{diff}B"));
        }
        out
    }
}

/// Prints a JSON progress stream the way docker does; fails on an error message.
pub(crate) async fn show_progress(
    body: &mut hyper::body::Incoming,
    to_stderr: bool,
    quiet: bool,
) -> Result<Vec<JsonMessage>, CliError> {
    let tty = if to_stderr {
        rustix::termios::isatty(std::io::stderr())
    } else {
        crate::tty::stdout_is_tty()
    };
    let mut display = ProgressDisplay::new(tty);
    let mut buf = Vec::new();
    let mut all = Vec::new();
    let mut emit = |msg: &JsonMessage| -> Result<(), CliError> {
        if let Some(e) = &msg.error_detail {
            return Err(CliError::Msg(e.message.clone(), 1));
        }
        if let Some(e) = &msg.error {
            return Err(CliError::Msg(e.clone(), 1));
        }
        if quiet || msg.aux.is_some() {
            return Ok(());
        }
        let text = display.render(msg);
        if to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        Ok(())
    };
    while let Some(chunk) = next_chunk(body).await? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if let Ok(msg) = serde_json::from_str::<JsonMessage>(text) {
                emit(&msg)?;
                all.push(msg);
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).trim().to_string();
    if !text.is_empty()
        && let Ok(msg) = serde_json::from_str::<JsonMessage>(&text)
    {
        emit(&msg)?;
        all.push(msg);
    }
    Ok(all)
}

/// Pulls `image` (`name:tag`), showing progress on stderr (for `run`) or stdout (for `pull`).
pub async fn pull_image(
    client: &Client,
    image: &str,
    platform: Option<&str>,
    to_stderr: bool,
    quiet: bool,
) -> Result<(), CliError> {
    let (name, tag) = match image.split_once('@') {
        Some((n, d)) => (n, d),
        None => split_tag(image),
    };
    let mut path = format!("/images/create?fromImage={}&tag={}", q(name), q(tag));
    if let Some(p) = platform {
        path.push_str(&format!("&platform={}", q(p)));
    }
    let auth = super::registry::registry_auth_header(name);
    let resp = client
        .send_headers(
            http::Method::POST,
            &path,
            crate::client::empty(),
            None,
            &[("X-Registry-Auth", auth)],
        )
        .await?;
    let mut body = resp.into_body();
    show_progress(&mut body, to_stderr, quiet).await?;
    Ok(())
}

/// `berth pull`.
pub async fn pull(ctx: &Ctx, m: Matches) -> CmdResult {
    let client = ctx.client().await?;
    let all = m.flag("all-tags");
    let given_tag = match m.args[0].split_once('@') {
        Some(_) => "@",
        None => split_tag(&m.args[0]).1,
    };
    if all && !given_tag.is_empty() {
        return Err(CliError::Msg(
            "tag can't be used with --all-tags/-a".into(),
            1,
        ));
    }
    let image = if all {
        split_tag(&m.args[0]).0.to_string()
    } else {
        if given_tag.is_empty() && !m.flag("quiet") {
            println!("Using default tag: latest");
        }
        super::run::familiar_ref(&m.args[0])
    };
    // An error before the stream is the daemon's ("Error response from daemon: ..."); one inside the
    // stream is printed as is, as docker does.
    pull_image(&client, &image, m.value("platform"), false, m.flag("quiet")).await?;
    println!("{}", super::registry::full_ref(&image));
    Ok(0)
}

/// `berth import`.
pub async fn import(ctx: &Ctx, m: Matches) -> CmdResult {
    let src = m.args[0].clone();
    let reference = m.args.get(1).cloned().unwrap_or_default();
    let client = ctx.client().await?;
    let mut path = format!("/images/create?fromSrc=-&repo={}&tag=", q(&reference));
    if let Some(msg) = m.value("message") {
        path.push_str(&format!("&message={}", q(msg)));
    }
    if let Some(p) = m.value("platform") {
        path.push_str(&format!("&platform={}", q(p)));
    }
    for c in m.values("change") {
        path.push_str(&format!("&changes={}", q(c)));
    }
    if src.contains("://") {
        path = path.replacen("fromSrc=-", &format!("fromSrc={}", q(&src)), 1);
        let resp = client.post::<()>(&path, None).await?;
        let mut body = resp.into_body();
        show_progress(&mut body, false, false).await?;
        return Ok(0);
    }
    let mut reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if src == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(tokio::fs::File::open(&src).await.map_err(|e| {
            CliError::Msg(
                format!(
                    "open {src}: {}",
                    e.kind()
                        .to_string()
                        .to_lowercase()
                        .replace("entity not found", "no such file or directory")
                ),
                1,
            )
        })?)
    };
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
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
    let resp = client
        .send(http::Method::POST, &path, body, Some("application/x-tar"))
        .await?;
    let mut body = resp.into_body();
    show_progress(&mut body, false, false).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_like_docker() {
        assert_eq!(split_tag("busybox:local"), ("busybox", "local"));
        assert_eq!(split_tag("busybox"), ("busybox", ""));
        assert_eq!(
            split_tag("localhost:5000/a/b:1"),
            ("localhost:5000/a/b", "1")
        );
        assert_eq!(split_tag("localhost:5000/a"), ("localhost:5000/a", ""));
    }

    #[test]
    fn progress_like_docker() {
        let msg = |j: &str| serde_json::from_str::<JsonMessage>(j).unwrap();
        let mut plain = ProgressDisplay::new(false);
        assert_eq!(
            plain.render(&msg(
                r#"{"status":"Pulling from library/busybox","id":"latest"}"#
            )),
            "latest: Pulling from library/busybox\n"
        );
        // Progress bars are dropped without a terminal; completion lines stay.
        assert_eq!(plain.render(&msg(r#"{"status":"Downloading","progressDetail":{"current":10,"total":100},"progress":"[=>  ]","id":"abc"}"#)), "");
        assert_eq!(
            plain.render(&msg(
                r#"{"status":"Pull complete","progressDetail":{},"id":"abc"}"#
            )),
            "abc: Pull complete\n"
        );
        assert_eq!(
            plain.render(&msg(r#"{"status":"Digest: sha256:x"}"#)),
            "Digest: sha256:x\n"
        );
        let mut tty = ProgressDisplay::new(true);
        assert_eq!(
            tty.render(&msg(r#"{"status":"Downloading","progressDetail":{"current":10,"total":100},"progress":"[=>  ]","id":"abc"}"#)),
            "\n\x1b[1A\x1b[2K\rabc: Downloading [=>  ]\r\x1b[1B"
        );
    }

    #[test]
    fn image_table() {
        let list = vec![
            ImageSummary {
                id: "sha256:abcdef0123456789".into(),
                repo_tags: vec!["busybox:local".into(), "b:latest".into()],
                created: chrono::Utc::now().timestamp() - 7200,
                size: 4_261_234,
                ..Default::default()
            },
            ImageSummary {
                id: "sha256:0000000000001111".into(),
                created: chrono::Utc::now().timestamp() - 30,
                size: 13_312,
                ..Default::default()
            },
        ];
        let f = Formatter::new("", IMAGES_TABLE).unwrap();
        let out = f
            .render(&image_rows(&list, true), &images_header())
            .unwrap();
        assert_eq!(
            out,
            "REPOSITORY   TAG       IMAGE ID       CREATED          SIZE\n\
             busybox      local     abcdef012345   2 hours ago      4.26MB\n\
             b            latest    abcdef012345   2 hours ago      4.26MB\n\
             <none>       <none>    000000000000   30 seconds ago   13.3kB\n"
        );
    }
}
