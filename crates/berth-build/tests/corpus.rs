//! Runs every Dockerfile of `tests/dockerfiles/` against a shared context with the TEST backend.
//! Header comments say what to expect:
//! `# check: <sh>` (exits 0 in the final image), `# config: /json/pointer[=json]` (in the image
//! config; `HASH` in a string matches any hex), `# history: <created_by>`, `# stream: <text>`,
//! `# error: <text>` (the build fails with it), and inputs `# build-arg: K=V`, `# target: name`,
//! `# dockerignore: <line>`.

mod common;

use std::path::Path;

use common::*;

fn make_context(dir: &Path) {
    write_tree(
        dir,
        &[
            ("a.txt", "a"),
            ("b.txt", "b"),
            ("dir/x.txt", "x"),
            ("dir/sub/y.txt", "y"),
            ("skip.log", "s"),
            ("keep.log", "k"),
            ("docs/README.md", "r"),
            ("docs/other.md", "o"),
        ],
    );
    std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", dir.join("escape")).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "hello/world.txt", &b"world"[..])
        .unwrap();
    std::fs::write(
        dir.join("app.tar.gz"),
        b.into_inner().unwrap().finish().unwrap(),
    )
    .unwrap();
}

fn matches_hash(want: &serde_json::Value, got: &serde_json::Value) -> bool {
    match (want.as_str(), got.as_str()) {
        (Some(w), Some(g)) if w.contains("HASH") => {
            let (pre, post) = w.split_once("HASH").unwrap();
            g.starts_with(pre)
                && g.ends_with(post)
                && g[pre.len()..g.len() - post.len()]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit())
        }
        _ => want == got,
    }
}

fn run_one(env: &Env, name: &str, text: &str) -> Result<(), String> {
    let ctx = tempfile::tempdir().unwrap();
    make_context(ctx.path());
    std::fs::write(ctx.path().join("Dockerfile"), text).unwrap();
    let mut o = opts();
    let mut ignore = String::new();
    let mut checks = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((k, v)) = rest.split_once(": ") else {
            continue;
        };
        match k {
            "build-arg" => {
                let (a, b) = v.split_once('=').unwrap();
                o.build_args.insert(a.into(), Some(b.into()));
            }
            "target" => o.target = Some(v.into()),
            "dockerignore" => {
                ignore.push_str(v);
                ignore.push('\n');
            }
            _ => checks.push((k.to_string(), v.to_string())),
        }
    }
    std::fs::write(ctx.path().join(".dockerignore"), ignore).unwrap();
    o.tags = vec![format!(
        "corpus-{}:latest",
        name.trim_end_matches(".Dockerfile")
    )];
    let (r, msgs) = env.build_dir(ctx.path(), &o);
    let stream = text_of(&msgs);
    let want_err: Vec<&String> = checks
        .iter()
        .filter(|(k, _)| k == "error")
        .map(|(_, v)| v)
        .collect();
    let r = match (r, want_err.first()) {
        (Err(e), Some(w)) => {
            return if e.to_string().contains(w.as_str()) {
                Ok(())
            } else {
                Err(format!("error {e:?} does not contain {w:?}"))
            };
        }
        (Err(e), None) => return Err(format!("build failed: {e}\n{stream}")),
        (Ok(_), Some(w)) => return Err(format!("build succeeded, expected error {w:?}\n{stream}")),
        (Ok(r), None) => r,
    };
    let cfg_json = serde_json::to_value(env.store.config(&r.image_id).unwrap()).unwrap();
    for (k, v) in &checks {
        match k.as_str() {
            "check" => {
                let (code, out) = env.run_in(&r.image_id, v);
                if code != 0 {
                    return Err(format!("check {v:?} exited {code}: {out}\n{stream}"));
                }
            }
            "config" => {
                let (ptr, want) = match v.split_once('=') {
                    Some((p, w)) => (
                        p,
                        Some(
                            serde_json::from_str::<serde_json::Value>(w)
                                .map_err(|e| format!("bad expectation {w}: {e}"))?,
                        ),
                    ),
                    None => (v.as_str(), None),
                };
                let got = cfg_json.pointer(ptr);
                match (got, want) {
                    (None, Some(serde_json::Value::Null)) => {}
                    (None, _) => return Err(format!("config {ptr} missing in {cfg_json}")),
                    (Some(g), Some(w)) if !matches_hash(&w, g) => {
                        return Err(format!("config {ptr} = {g}, want {w}"));
                    }
                    _ => {}
                }
            }
            "history" => {
                let ok = cfg_json["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h["created_by"].as_str() == Some(v.as_str()));
                if !ok {
                    return Err(format!("no history entry {v:?} in {}", cfg_json["history"]));
                }
            }
            "stream" => {
                if !stream.contains(v.as_str()) {
                    return Err(format!("stream lacks {v:?}:\n{stream}"));
                }
            }
            "error" => {}
            other => return Err(format!("unknown expectation {other}")),
        }
    }
    Ok(())
}

fn text_of(msgs: &[berth_api::progress::JsonMessage]) -> String {
    text(msgs)
}

#[test]
fn dockerfile_corpus() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dockerfiles");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".Dockerfile"))
        .collect();
    names.sort();
    let only = std::env::var("CORPUS").ok();
    let mut failures = Vec::new();
    for n in &names {
        if only.as_deref().is_some_and(|o| !n.contains(o)) {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(n)).unwrap();
        if let Err(e) = run_one(&env, n, &text) {
            failures.push(format!("{n}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n")
    );
}
