//! Builds through a real private berthd: berth-build's Dockerfile corpus with `berth build` and with
//! `DOCKER_BUILDKIT=0 docker build`, each result checked by running it; the cache across rebuilds;
//! exactly-dependent invalidation; failing steps; bad input; `system df` / `builder prune`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Out, TestDaemon, can_run, run_with_timeout, tail};

fn berth_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_berthd")).with_file_name("berth");
    if !p.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "berth"])
            .status()
            .expect("cargo build -p berth");
        assert!(st.success(), "building berth failed");
    }
    p
}

/// Which client drives the build.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cli {
    Docker,
    Berth,
}

fn build_cmd(d: &TestDaemon, cli: Cli, args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> Out {
    let mut cmd = match cli {
        Cli::Docker => {
            let mut c = Command::new(common::docker_bin());
            c.arg("build").env("DOCKER_BUILDKIT", "0");
            c
        }
        Cli::Berth => {
            let mut c = Command::new(berth_bin());
            // The CLI's stat cache of the incremental context stays with the test.
            c.arg("build").env("XDG_CACHE_HOME", d.dir.join("cache"));
            c
        }
    };
    cmd.args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .env_remove("BERTH_HOST")
        .env("DOCKER_CONFIG", d.dir.join("docker-config"))
        .env_remove("DOCKER_CONTEXT");
    run_with_timeout(cmd, stdin, Duration::from_secs(120))
}

fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
}

/// The corpus' shared context (as crates/berth-build/tests/corpus.rs makes it).
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
    // app.tar.gz holding hello/world.txt, for ADD's auto-extraction.
    let src = dir.join(".mk");
    write_tree(&src, &[("hello/world.txt", "world")]);
    let st = Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(dir.join("app.tar.gz"))
        .arg("hello")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&src).unwrap();
}

/// A fresh directory inside the daemon's private dir (removed with it).
fn ctx_dir(d: &TestDaemon, name: &str) -> PathBuf {
    let p = d.dir.join("ctx").join(name);
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// `busybox:local` as berth-build's corpus expects it: users app (1000) and groups app, staff.
fn import_corpus_busybox(d: &TestDaemon) {
    let tar =
        berth_testkit::busybox_tar(&d.dir, "corpus-busybox.tar", berth_testkit::Users::Corpus);
    d.ok(&[
        "import",
        "-c",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        "busybox:local",
    ]);
}

/// `docker inspect`'s pointer for a pointer into the image config JSON.
fn inspect_pointer(ptr: &str) -> String {
    if let Some(rest) = ptr.strip_prefix("/config/") {
        return format!("/Config/{rest}");
    }
    if let Some(rest) = ptr.strip_prefix("/rootfs/diff_ids") {
        return format!("/RootFS/Layers{rest}");
    }
    let mut c = ptr[1..].chars();
    match c.next() {
        Some(f) => format!("/{}{}", f.to_ascii_uppercase(), c.as_str()),
        None => ptr.to_string(),
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../berth-build/tests/dockerfiles")
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

/// Builds one corpus Dockerfile with `cli` and checks its expectations by running the image.
fn run_one(d: &TestDaemon, cli: Cli, name: &str, text: &str) -> Result<(), String> {
    let ctx = ctx_dir(d, name);
    make_context(&ctx);
    std::fs::write(ctx.join("Dockerfile"), text).unwrap();
    let tag = format!(
        "corpus-{}-{:?}:latest",
        name.trim_end_matches(".Dockerfile"),
        cli
    )
    .to_lowercase();
    let mut args: Vec<String> = vec!["-t".into(), tag.clone()];
    let mut ignore = String::new();
    let mut checks = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.strip_prefix("# ").and_then(|r| r.split_once(": ")) else {
            continue;
        };
        match k {
            "build-arg" => args.extend(["--build-arg".into(), v.to_string()]),
            "target" => args.extend(["--target".into(), v.to_string()]),
            "dockerignore" => {
                ignore.push_str(v);
                ignore.push('\n');
            }
            _ => checks.push((k.to_string(), v.to_string())),
        }
    }
    std::fs::write(ctx.join(".dockerignore"), ignore).unwrap();
    args.push(".".into());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = build_cmd(d, cli, &a, &ctx, None);
    let all = format!("{}{}", o.stdout, o.stderr);
    let want_err = checks.iter().find(|(k, _)| k == "error").map(|(_, v)| v);
    match (o.code, want_err) {
        (0, Some(w)) => return Err(format!("build succeeded, expected error {w:?}\n{all}")),
        (0, None) => {}
        (_, Some(w)) => {
            return if o.stderr.contains(w.as_str()) {
                Ok(())
            } else {
                Err(format!("error output lacks {w:?}:\n{all}"))
            };
        }
        (c, None) => return Err(format!("build failed ({c}):\n{all}")),
    }
    let inspect: serde_json::Value =
        serde_json::from_str(&d.ok(&["image", "inspect", &tag])).map_err(|e| e.to_string())?;
    let inspect = &inspect[0];
    for (k, v) in &checks {
        match k.as_str() {
            "check" => {
                let r = d.docker(&["run", "--rm", &tag, "sh", "-c", v]);
                if r.code != 0 {
                    return Err(format!(
                        "check {v:?} exited {}: {}{}\n{all}",
                        r.code, r.stdout, r.stderr
                    ));
                }
            }
            // History is read through `docker history` (the `history` lines).
            "config" if v.starts_with("/history") => {}
            "config" => {
                let (ptr, want) = match v.split_once('=') {
                    Some((p, w)) => (
                        p,
                        Some(serde_json::from_str::<serde_json::Value>(w).unwrap()),
                    ),
                    None => (v.as_str(), None),
                };
                // The image config's `config` is `Config` in `docker inspect`.
                let ptr = inspect_pointer(ptr);
                let got = inspect.pointer(&ptr);
                match (got, want) {
                    (None | Some(serde_json::Value::Null), Some(serde_json::Value::Null)) => {}
                    (None, _) => return Err(format!("inspect lacks {ptr}: {inspect}")),
                    (Some(g), Some(w)) if !matches_hash(&w, g) => {
                        return Err(format!("inspect {ptr} = {g}, want {w}"));
                    }
                    _ => {}
                }
            }
            "history" => {
                let h = d.ok(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", &tag]);
                if !h.lines().any(|l| l == v) {
                    return Err(format!("docker history lacks {v:?}:\n{h}"));
                }
            }
            "stream" if !o.stdout.contains(v.as_str()) => {
                return Err(format!("output lacks {v:?}:\n{all}"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn corpus(cli: Cli) {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    import_corpus_busybox(&d);
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".Dockerfile"))
        .collect();
    names.sort();
    assert!(names.len() > 15, "corpus not found");
    let mut failures = Vec::new();
    for n in &names {
        let text = std::fs::read_to_string(corpus_dir().join(n)).unwrap();
        if let Err(e) = run_one(&d, cli, n, &text) {
            failures.push(format!("{n}: {e}"));
        }
    }
    // No build container, mount or layer is left behind by the successful and failed builds.
    let ps = d.ok(&["ps", "-aq"]);
    let leaked = mounts_left(&d);
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}\nberthd log:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n\n"),
        tail(&d.log(), 20)
    );
    assert!(leaked.is_empty(), "mounts left: {leaked:?}");
    // Failed RUN steps keep their container (as dockerd without --force-rm), exited.
    for id in ps.split_whitespace() {
        let st = d.ok(&["inspect", "-f", "{{.State.Status}}", id]);
        assert_eq!(st.trim(), "exited");
    }
}

#[test]
fn corpus_with_docker_cli() {
    corpus(Cli::Docker);
}

#[test]
fn corpus_with_berth_cli() {
    corpus(Cli::Berth);
}

fn count(s: &str, pat: &str) -> usize {
    s.matches(pat).count()
}

#[test]
fn cache_hits_and_exact_invalidation() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "c");
    write_tree(
        &ctx,
        &[
            ("one.txt", "1"),
            ("two.txt", "2"),
            (
                "Dockerfile",
                "FROM busybox:local AS base\nCOPY one.txt /one\nRUN cat /one > /one.copy\nCOPY two.txt /two\nRUN cat /two > /two.copy\nFROM busybox:local\nCOPY --from=base /one.copy /two.copy /out/\nCMD [\"cat\", \"/out/two.copy\"]\n",
            ),
        ],
    );
    for cli in [Cli::Docker, Cli::Berth] {
        let o = build_cmd(&d, cli, &["-t", "cached", "."], &ctx, None);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    }
    // The second build above was fully cached: run it again through both clients to be sure.
    for cli in [Cli::Docker, Cli::Berth] {
        let o = build_cmd(&d, cli, &["-t", "cached", "."], &ctx, None);
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        assert_eq!(count(&o.stdout, " ---> Using cache"), 6, "{}", o.stdout);
        assert_eq!(count(&o.stdout, " ---> Running in"), 0, "{}", o.stdout);
    }
    // Every history entry is named by an image of the local parent chain, as with dockerd.
    let ids = d.ok(&["history", "--format", "{{.ID}}", "cached"]);
    assert_eq!(ids.lines().count(), 3, "{ids}");
    assert!(!ids.contains("<missing>"), "{ids}");
    // Changing two.txt re-runs exactly COPY two.txt, the RUN after it and the final COPY --from.
    std::fs::write(ctx.join("two.txt"), "22").unwrap();
    let o = build_cmd(&d, Cli::Berth, &["-t", "cached", "."], &ctx, None);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(count(&o.stdout, " ---> Using cache"), 2, "{}", o.stdout);
    // The RUN, and CMD's commit (dockerd prints a container for metadata steps too).
    assert_eq!(count(&o.stdout, " ---> Running in"), 2, "{}", o.stdout);
    assert_eq!(d.ok(&["run", "--rm", "cached"]), "22");
    // A metadata-only change (mtime) does not invalidate.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("one.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let o = build_cmd(&d, Cli::Docker, &["-t", "cached", "."], &ctx, None);
    assert_eq!(count(&o.stdout, " ---> Using cache"), 6, "{}", o.stdout);
    // Build cache accounting and pruning.
    let df = d.ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    let n: usize = df
        .lines()
        .find_map(|l| l.strip_prefix("Build Cache "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(n >= 6, "system df: {df}");
    let o = d.docker(&["builder", "prune", "-f"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("Total reclaimed space"), "{}", o.stdout);
    let df = d.ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(df.contains("Build Cache 0"), "{df}");
    let o = build_cmd(&d, Cli::Berth, &["-t", "cached", "."], &ctx, None);
    assert_eq!(count(&o.stdout, " ---> Using cache"), 0, "{}", o.stdout);
}

#[test]
fn failing_run_reports_and_cleans_up() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "c");
    write_tree(
        &ctx,
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo about to fail; echo on-stderr >&2; exit 7\n",
        )],
    );
    for cli in [Cli::Docker, Cli::Berth] {
        let o = build_cmd(&d, cli, &["--force-rm", "."], &ctx, None);
        assert_eq!(o.code, 7, "{cli:?}: {}{}", o.stdout, o.stderr);
        assert!(o.stdout.contains("about to fail"), "{}", o.stdout);
        assert!(o.stdout.contains("on-stderr"), "{}", o.stdout);
        assert!(
            o.stderr.contains(
                "The command '/bin/sh -c echo about to fail; echo on-stderr >&2; exit 7' returned a non-zero code: 7"
            ),
            "{}",
            o.stderr
        );
        assert_eq!(d.ok(&["ps", "-aq"]).trim(), "", "{cli:?}: container left");
    }
    // Without --force-rm the failed step's container stays (exited, unmounted), as with dockerd.
    let o = build_cmd(&d, Cli::Docker, &["."], &ctx, None);
    assert_eq!(o.code, 7);
    let ids = d.ok(&["ps", "-aq"]);
    assert_eq!(ids.lines().count(), 1, "{ids}");
    d.ok(&["rm", ids.trim()]);
    let leaked = mounts_left(&d);
    assert!(
        leaked.is_empty(),
        "mounts left under {}: {leaked:?}",
        d.dir.display()
    );
    let layers = d.dir.join("data/build/layers");
    let left = std::fs::read_dir(&layers).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left, 0, "build layer markers left in {}", layers.display());
}

#[test]
fn bad_input_is_a_clear_error() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "c");
    let dir = ctx.as_path();
    write_tree(dir, &[("a.txt", "a")]);
    std::os::unix::fs::symlink("/etc", dir.join("hostetc")).unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "FROM busybox:local\nRUNN echo hi\n",
            "dockerfile parse error on line 2: unknown instruction: RUNN",
        ),
        ("FROM nosuchimage:v1\nRUN true\n", "nosuchimage"),
        (
            "FROM busybox:local\nCOPY --from=nosuchstage /x /x\n",
            "nosuchstage",
        ),
        (
            "FROM busybox:local\nCOPY hostetc/shadow /stolen\n",
            "not found in build context",
        ),
    ];
    for cli in [Cli::Docker, Cli::Berth] {
        for (df, want) in cases {
            std::fs::write(dir.join("Dockerfile"), df).unwrap();
            let o = build_cmd(&d, cli, &["."], dir, None);
            assert_ne!(o.code, 0, "{cli:?} {df:?} built");
            assert!(
                o.stderr.contains(want),
                "{cli:?} {df:?}: stderr lacks {want:?}: {}",
                o.stderr
            );
        }
    }
    // `COPY ../outside` stays inside the context: it reads the context's own a.txt.
    std::fs::write(dir.join("../outside-secret"), "secret").ok();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox:local\nCOPY ../a.txt /got\n",
    )
    .unwrap();
    let o = build_cmd(&d, Cli::Berth, &["-t", "dotdot", "."], dir, None);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(d.ok(&["run", "--rm", "dotdot", "cat", "/got"]), "a");
    let _ = std::fs::remove_file(dir.join("../outside-secret"));
}

#[test]
fn berth_cli_contexts_and_flags() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "c");
    let dir = ctx.as_path();
    write_tree(
        dir,
        &[
            ("keep.txt", "keep"),
            ("ignored.txt", "no"),
            ("sub/Dockerfile.web", "FROM busybox:local\nCOPY . /ctx/\n"),
            ("sub/Dockerfile.web.dockerignore", "*.txt\n!keep.txt\n"),
            (".dockerignore", "keep.txt\n"),
        ],
    );
    // -f inside the context, with its own <Dockerfile>.dockerignore (exceptions honoured).
    let o = build_cmd(
        &d,
        Cli::Berth,
        &[
            "-f",
            "sub/Dockerfile.web",
            "-t",
            "a1",
            "-t",
            "a2:v2",
            "--label",
            "team=x",
            ".",
        ],
        dir,
        None,
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("Successfully tagged a2:v2"),
        "{}",
        o.stdout
    );
    d.ok(&["run", "--rm", "a1", "test", "-f", "/ctx/keep.txt"]);
    let r = d.docker(&["run", "--rm", "a1", "test", "-e", "/ctx/ignored.txt"]);
    assert_eq!(r.code, 1, "ignored.txt was sent");
    let l = d.ok(&["inspect", "-f", "{{.Config.Labels.team}}", "a2:v2"]);
    assert_eq!(l.trim(), "x");
    // -f - (Dockerfile on stdin) with a directory context; -q and --iidfile.
    let iid = dir.join("iid");
    let o = build_cmd(
        &d,
        Cli::Berth,
        &[
            "-q",
            "--iidfile",
            iid.to_str().unwrap(),
            "--build-arg",
            "V=7",
            "-f",
            "-",
            ".",
        ],
        dir,
        Some(b"FROM busybox:local\nARG V\nRUN echo $V > /v\n"),
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let id = std::fs::read_to_string(&iid).unwrap();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(o.stdout.trim(), id);
    assert_eq!(d.ok(&["run", "--rm", &id, "cat", "/v"]), "7\n");
    // A Dockerfile alone on stdin; a tarball on stdin; a tarball path.
    let o = build_cmd(
        &d,
        Cli::Berth,
        &["-t", "stdin-df", "-"],
        dir,
        Some(b"FROM busybox:local\nRUN echo hi > /hi\n"),
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let tarball = dir.join("../ctx.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(dir.join("sub"))
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let data = std::fs::read(&tarball).unwrap();
    let o = build_cmd(
        &d,
        Cli::Berth,
        &["-t", "fromtar", "-f", "Dockerfile.web", "-"],
        dir,
        Some(&data),
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    d.ok(&[
        "run",
        "--rm",
        "fromtar",
        "test",
        "-f",
        "/ctx/Dockerfile.web",
    ]);
    let o = build_cmd(
        &d,
        Cli::Berth,
        &[
            "-t",
            "fromtar2",
            "-f",
            "Dockerfile.web",
            tarball.to_str().unwrap(),
        ],
        dir,
        None,
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let _ = std::fs::remove_file(&tarball);
    // --network none reaches RUN; the step view is the plain classic output when piped.
    let o = build_cmd(
        &d,
        Cli::Berth,
        &["--network", "none", "-f", "-", "."],
        dir,
        Some(b"FROM busybox:local\nRUN ! ip -o link | grep -v ' lo:'\n"),
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("Step 2/2 : RUN"), "{}", o.stdout);
    assert!(
        o.stdout
            .starts_with("Sending build context to Docker daemon"),
        "{}",
        o.stdout
    );
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn docker_compose_and_docker_py_build() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "compose");
    write_tree(
        &ctx,
        &[
            (
                "Dockerfile",
                "FROM busybox:local\nARG MSG=default\nRUN echo \"$MSG\" > /msg\nCMD [\"cat\", \"/msg\"]\n",
            ),
            (
                "docker-compose.yml",
                "version: \"3\"\nservices:\n  app:\n    build:\n      context: .\n      args:\n        MSG: from-compose\n    image: composed:latest\n",
            ),
        ],
    );
    let host = format!("unix://{}", d.sock.display());
    if have("docker-compose") {
        let mut c = Command::new("docker-compose");
        c.arg("build")
            .current_dir(&ctx)
            .env("DOCKER_HOST", &host)
            .env("DOCKER_CONFIG", d.dir.join("docker-config"));
        let o = run_with_timeout(c, None, Duration::from_secs(120));
        assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
        assert_eq!(d.ok(&["run", "--rm", "composed:latest"]), "from-compose\n");
    } else {
        eprintln!("docker-compose not installed: skipping that part");
    }
    let py = format!(
        "import docker\nc = docker.DockerClient(base_url={host:?})\nimg, logs = c.images.build(path={ctx:?}, tag='pybuilt:1', buildargs={{'MSG': 'from-py'}}, rm=True)\nprint(img.id)\nprint(''.join(l.get('stream', '') for l in logs))\n",
        ctx = ctx.display().to_string()
    );
    let mut c = Command::new("python3");
    c.args(["-c", &py]);
    let o = run_with_timeout(c, None, Duration::from_secs(120));
    if o.stderr.contains("No module named 'docker'") {
        eprintln!("docker-py not installed: skipping that part");
        return;
    }
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.starts_with("sha256:"), "{}", o.stdout);
    assert!(
        o.stdout.contains("Successfully tagged pybuilt:1"),
        "{}",
        o.stdout
    );
    assert_eq!(d.ok(&["run", "--rm", "pybuilt:1"]), "from-py\n");
}

/// A private Debian dockerd (no bridge, no iptables), stopped and cleaned on drop.
struct Dockerd {
    dir: PathBuf,
    sock: PathBuf,
    child: std::process::Child,
}

impl Dockerd {
    fn start(tag: &str) -> Option<Dockerd> {
        if !have("dockerd") {
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/bd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("d.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("x"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .ok()?;
        let d = Dockerd { dir, sock, child };
        for _ in 0..150 {
            if d.docker(&["version"]).code == 0 {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
        );
        None
    }

    fn docker(&self, args: &[&str]) -> Out {
        let mut c = Command::new(common::docker_bin());
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CONFIG", self.dir.join("cfg"))
            .env_remove("DOCKER_CONTEXT");
        run_with_timeout(c, None, Duration::from_secs(120))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let prefix = self.dir.display().to_string();
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut mps: Vec<String> = info
                .lines()
                .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
                .filter(|m| m.starts_with(&prefix))
                .collect();
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mps {
                let _ = berth_runtime::unmount(Path::new(&m));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `path mode uid:gid size sha` of every entry of a container export (mtimes differ by design).
fn tree_of(docker: &dyn Fn(&[&str]) -> Out, image: &str, scratch: &Path) -> Vec<String> {
    let id = docker(&["create", image, "true"]);
    assert_eq!(id.code, 0, "{}", id.stderr);
    let id = id.stdout.trim().to_string();
    let tar = scratch.join(format!("{}.tar", &id[..12]));
    let o = docker(&["export", "-o", tar.to_str().unwrap(), &id]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    docker(&["rm", &id]);
    let mut out = Vec::new();
    let mut a = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e.path().unwrap().display().to_string();
        let path = path.trim_end_matches('/').trim_start_matches("./");
        // The engines' container init layers (mount points, /etc files) are not the image.
        let init = [".", ".dockerenv", "dev", "proc", "sys"];
        let etc = ["etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"];
        if init.contains(&path) || path.starts_with("dev/") || etc.contains(&path) {
            continue;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        let link = h
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        out.push(format!(
            "{} {:o} {}:{} {} {:?} {} {}",
            path,
            h.mode().unwrap_or(0) & 0o7777,
            h.uid().unwrap_or(0),
            h.gid().unwrap_or(0),
            data.len(),
            h.entry_type(),
            link,
            data.iter().fold(0xcbf2_9ce4_8422_2325u64, |x, b| {
                (x ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            })
        ));
    }
    out.sort();
    out
}

#[test]
fn same_image_as_dockerd() {
    if !can_run() {
        return;
    }
    let Some(dd) = Dockerd::start("cmp") else {
        eprintln!("skipping: Debian's dockerd is not available or did not start");
        return;
    };
    let d = TestDaemon::start();
    let bb = common::busybox_tar(&d.dir);
    d.ok(&["import", bb.to_str().unwrap(), "busybox:local"]);
    let o = dd.docker(&["import", bb.to_str().unwrap(), "busybox:local"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let ctx = ctx_dir(&d, "cmp");
    write_tree(
        &ctx,
        &[
            ("app/main.txt", "main"),
            ("app/lib/util.txt", "util"),
            ("conf.ini", "[x]\n"),
            ("skip.log", "no"),
            (".dockerignore", "*.log\n"),
            (
                "Dockerfile",
                "FROM busybox:local AS build\nARG V=1\nWORKDIR /work\nCOPY app/ ./app/\nRUN echo \"v$V\" > /work/version && mkdir -p /work/out && cp -r app /work/out/\n\nFROM busybox:local\nLABEL org.example.name=\"demo\" version=2\nENV PATH=/opt/bin:$PATH APP_HOME=/srv\nWORKDIR $APP_HOME\nCOPY --from=build /work/out/ /srv/\nCOPY --from=build /work/version /srv/version\nCOPY --chown=65534:65534 conf.ini /etc/app/\nADD conf.ini /etc/app/added.ini\nRUN adduser -D -u 1234 svc 2>/dev/null || echo 'svc:x:1234:1234::/home/svc:/bin/sh' >> /etc/passwd\nUSER 1234\nEXPOSE 8080/tcp 53/udp\nVOLUME [\"/data\"]\nSTOPSIGNAL SIGTERM\nHEALTHCHECK --interval=5s --timeout=2s CMD true\nSHELL [\"/bin/sh\", \"-ec\"]\nONBUILD RUN echo child\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"cat /srv/version\"]\n",
            ),
        ],
    );
    let args = [
        "build",
        "--network",
        "none",
        "--build-arg",
        "V=7",
        "-t",
        "cmp:1",
        ctx.to_str().unwrap(),
    ];
    let o = dd.docker(&args);
    assert_eq!(o.code, 0, "dockerd build: {}{}", o.stdout, o.stderr);
    let ob = build_cmd(&d, Cli::Docker, &args[1..], &ctx, None);
    assert_eq!(ob.code, 0, "berthd build: {}{}", ob.stdout, ob.stderr);
    // Same classic-builder step lines (IDs aside).
    let steps = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("Step ") || l == &" ---> Using cache")
            .map(str::to_string)
            .collect()
    };
    assert_eq!(steps(&ob.stdout), steps(&o.stdout));
    let inspect = |out: Out| -> serde_json::Value {
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    };
    let di = inspect(dd.docker(&["image", "inspect", "cmp:1"]));
    let bi = inspect(d.docker(&["image", "inspect", "cmp:1"]));
    for k in [
        "Cmd",
        "Entrypoint",
        "Env",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
        "ArgsEscaped",
    ] {
        assert_eq!(bi["Config"][k], di["Config"][k], "Config.{k}");
    }
    for k in ["Architecture", "Os", "Author"] {
        assert_eq!(bi[k], di[k], "{k}");
    }
    assert_eq!(
        bi["RootFS"]["Layers"].as_array().map(Vec::len),
        di["RootFS"]["Layers"].as_array().map(Vec::len),
        "layer count"
    );
    // History: same created_by lines and empty/non-empty layers (sizes of metadata steps 0).
    let hist = |out: Out| -> Vec<String> {
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
            .lines()
            .map(|l| {
                let (cb, size) = l.rsplit_once('|').unwrap();
                format!("{cb} {}", size == "0B")
            })
            .collect()
    };
    let fmt = "{{.CreatedBy}}|{{.Size}}";
    let dh = hist(dd.docker(&["history", "--no-trunc", "--format", fmt, "cmp:1"]));
    let bh = hist(d.docker(&["history", "--no-trunc", "--format", fmt, "cmp:1"]));
    // COPY/ADD lines carry content hashes computed the same way only where the tar metadata
    // agrees; compare their shape (instruction and destination).
    let shape = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|l| {
                // dockerd before 25 prints HEALTHCHECK without StartInterval (one "0s" less).
                let l = l.replace("\"0s\" \"0s\" '", "\"0s\" '");
                let mut w: Vec<&str> = l.split_whitespace().collect();
                for x in w.iter_mut() {
                    if let Some(i) = x.find("file:").or_else(|| x.find("dir:")) {
                        *x = x[..i + 4].trim_end_matches(':');
                    }
                }
                w.join(" ")
            })
            .collect()
    };
    assert_eq!(shape(&bh), shape(&dh), "history");
    // File trees of the results.
    let scratch = d.dir.join("exports");
    std::fs::create_dir_all(&scratch).unwrap();
    let dt = tree_of(&|a| dd.docker(a), "cmp:1", &scratch);
    let bt = tree_of(&|a| d.docker(a), "cmp:1", &scratch);
    let only_d: Vec<_> = dt.iter().filter(|x| !bt.contains(x)).collect();
    let only_b: Vec<_> = bt.iter().filter(|x| !dt.contains(x)).collect();
    assert!(
        only_d.is_empty() && only_b.is_empty(),
        "file trees differ:\nonly dockerd: {only_d:#?}\nonly berth: {only_b:#?}"
    );
}

#[test]
fn run_mount_secret_is_readable_in_the_run_and_absent_from_the_image() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "secret");
    let token = "s3cr3t-token-value";
    write_tree(
        &ctx,
        &[
            ("../tok.txt", token),
            (
                "Dockerfile",
                "FROM busybox:local\n\
                 RUN --mount=type=secret,id=tok cat /run/secrets/tok > /seen\n\
                 RUN --mount=type=secret,id=tok,target=/etc/tok,required,mode=0444 cat /etc/tok > /seen2\n\
                 RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent\n",
            ),
        ],
    );
    let src = format!("id=tok,src={}", ctx.join("../tok.txt").display());
    let o = build_cmd(
        &d,
        Cli::Berth,
        &["-t", "sec", "--secret", &src, "."],
        &ctx,
        None,
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        d.ok(&["run", "--rm", "sec", "cat", "/seen", "/seen2"]),
        format!("{token}{token}")
    );
    // Neither the mount points nor the bytes are in the image, its history or its config.
    d.ok(&[
        "run",
        "--rm",
        "sec",
        "sh",
        "-c",
        "test ! -e /run/secrets && test ! -e /etc/tok",
    ]);
    let hist = d.ok(&["history", "--no-trunc", "sec"]);
    let insp = d.ok(&["image", "inspect", "sec"]);
    assert!(
        !hist.contains(token) && !insp.contains(token),
        "{hist}{insp}"
    );
    // A required secret the build lacks is an error naming it.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nRUN --mount=type=secret,id=nope,required true\n",
    )
    .unwrap();
    let o = build_cmd(&d, Cli::Berth, &["."], &ctx, None);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("secret nope: not found"), "{}", o.stderr);
}

/// A one-thread HTTP/1.0 server on 127.0.0.1 for ADD <url>: `files` by path (404 otherwise),
/// each with a fixed `Last-Modified`; returns the port and the count of requests served.
fn http_server(
    files: Vec<(&'static str, Vec<u8>)>,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut first = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let _ = r.read_line(&mut first);
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = first
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("");
            let _ = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => s
                    .write_all(
                        format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| s.write_all(body)),
                None => s.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            };
        }
    });
    (port, hits)
}

#[test]
fn add_url_downloads_like_the_classic_builder() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let hello = b"hello from http\n".to_vec();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "inner", &b"x"[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let (port, hits) = http_server(vec![("/files/hello.txt", hello.clone()), ("/a.tar", tar)]);
    let ctx = ctx_dir(&d, "addurl");
    std::fs::write(ctx.join("../hello"), &hello).unwrap();
    let sum = Command::new("sha256sum")
        .arg(ctx.join("../hello"))
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout)[..64].to_string();
    let base = format!("http://127.0.0.1:{port}");
    let df = format!(
        "FROM busybox:local\n\
         ADD {base}/files/hello.txt /dl/\n\
         ADD --checksum=sha256:{sum} {base}/files/hello.txt?x=1 /named.txt\n\
         ADD {base}/a.tar /t/\n"
    );
    write_tree(&ctx, &[("Dockerfile", &df)]);
    let o = build_cmd(&d, Cli::Berth, &["-t", "addurl", "."], &ctx, None);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let out = d.ok(&[
        "run", "--rm", "addurl", "sh", "-c",
        "stat -c '%a %Y' /dl/hello.txt /named.txt; cat /named.txt; test -f /t/a.tar && echo not-extracted",
    ]);
    assert_eq!(
        out.trim_end(),
        "600 1445412480\n600 1445412480\nhello from http\nnot-extracted",
        "{out}"
    );
    // Rebuilt: downloaded again (to check), and cached because the content is the same.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    let o = build_cmd(&d, Cli::Docker, &["-t", "addurl", "."], &ctx, None);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(count(&o.stdout, " ---> Using cache"), 3, "{}", o.stdout);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), before + 3);
    // A wrong checksum and a missing file are errors.
    for (df, want) in [
        (
            format!(
                "FROM busybox:local\nADD --checksum=sha256:{} {base}/files/hello.txt /x\n",
                "0".repeat(64)
            ),
            "digest mismatch",
        ),
        (format!("FROM busybox:local\nADD {base}/nope /x\n"), "404"),
    ] {
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        let o = build_cmd(&d, Cli::Berth, &["."], &ctx, None);
        assert_ne!(o.code, 0);
        assert!(o.stderr.contains(want), "{}", o.stderr);
    }
}

/// A mountinfo line of one of the running daemon's spare network namespaces (its own, not a leak).
fn is_spare_netns(line: &str) -> bool {
    line.contains("/exec/netns/spare-")
}

/// Mounts under the daemon's directory once its pending work is done, but its spare network
/// namespaces. A container's network teardown (veth, namespace mount) runs after its exit or
/// removal is reported, so `run --rm` or a build's RUN step returns before it; `GET /networks`
/// waits for every pending teardown, so what is left after it is a leak, not work in progress.
fn mounts_left(d: &TestDaemon) -> Vec<String> {
    d.ok(&["network", "ls", "-q"]);
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(d.dir.to_str().unwrap()) && !is_spare_netns(l))
        .map(str::to_string)
        .collect()
}

/// One raw request with extra headers and a binary body (the incremental context's API).
fn raw_request(d: &TestDaemon, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes());
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn built_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_default()
        .to_string()
}

/// `berth build` sends a manifest and only the files the daemon lacks; the result is the tar
/// path's (same cache keys, same image), `.dockerignore` holds, the docker CLI's tar still works.
#[test]
fn incremental_context_sends_only_changes() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "inc");
    write_tree(
        &ctx,
        &[
            ("a.txt", "one"),
            ("sub/b.txt", "b"),
            ("secret.txt", "s"),
            ("x.log", "l"),
            (".dockerignore", "secret.txt\n*.log\n"),
            (
                "Dockerfile",
                "FROM busybox:local\nCOPY . /ctx/\nRUN test ! -e /ctx/secret.txt && test ! -e /ctx/x.log && test -L /ctx/esc && cat /ctx/a.txt /ctx/big.bin | md5sum\n",
            ),
        ],
    );
    std::fs::write(ctx.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("esc")).unwrap();
    let berth = |tar: bool| {
        let mut c = Command::new(berth_bin());
        c.args(["build", "--network", "none", "-t", "inc", "."])
            .current_dir(&ctx)
            .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
            .env("XDG_CACHE_HOME", d.dir.join("cache"))
            .env_remove("BERTH_HOST");
        if tar {
            c.env("BERTH_BUILD_CONTEXT", "tar");
        }
        let o = run_with_timeout(c, None, Duration::from_secs(120));
        assert_eq!(
            o.code,
            0,
            "{}{}\n{}",
            o.stdout,
            o.stderr,
            tail(&d.log(), 20)
        );
        o.stdout
    };
    // The tar path first; then the incremental one reuses its cache: same keys, same image.
    let by_tar = berth(true);
    assert!(!by_tar.contains("files sent"), "{by_tar}");
    let first = berth(false);
    assert!(first.contains("(5 of 5 files sent)"), "{first}");
    assert_eq!(count(&first, " ---> Using cache"), 2, "{first}");
    assert_eq!(built_id(&first), built_id(&by_tar));
    // Nothing changed: nothing sent.
    let again = berth(false);
    assert!(
        again.starts_with("Sending build context to Docker daemon  0B (0 of 5 files sent)"),
        "{again}"
    );
    assert_eq!(count(&again, " ---> Using cache"), 2, "{again}");
    // One file changed: that file goes, the steps re-run and see it.
    std::fs::write(ctx.join("a.txt"), "two").unwrap();
    let changed = berth(false);
    assert!(changed.contains("(1 of 5 files sent)"), "{changed}");
    assert_eq!(count(&changed, " ---> Using cache"), 0, "{changed}");
    let o = d.ok(&["run", "--rm", "inc", "cat", "/ctx/a.txt", "/ctx/sub/b.txt"]);
    assert_eq!(o, "twob");
    // An ignored file changes nothing.
    std::fs::write(ctx.join("secret.txt"), "t").unwrap();
    let ignored = berth(false);
    assert!(ignored.contains("(0 of 5 files sent)"), "{ignored}");
    assert_eq!(count(&ignored, " ---> Using cache"), 2, "{ignored}");
    // The docker CLI's tar (and berth's) hit the same cache entries.
    let o = build_cmd(
        &d,
        Cli::Docker,
        &["--network", "none", "-t", "inc", "."],
        &ctx,
        None,
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(count(&o.stdout, " ---> Using cache"), 2, "{}", o.stdout);
    assert_eq!(built_id(&o.stdout), built_id(&changed));
    assert_eq!(built_id(&berth(true)), built_id(&changed));
    // The blobs are build cache: listed, and pruned (then sent again).
    let df = d.ok(&["system", "df", "-v", "--format", "{{json .}}"]);
    assert!(df.contains("berth-context-blobs"), "{df}");
    let o = d.docker(&["builder", "prune", "-f"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let after = berth(false);
    assert!(after.contains("(5 of 5 files sent)"), "{after}");
}

/// A context session the daemon no longer knows (berthd restarted between the manifest and the
/// build) makes `berth build` send the tar instead, and the build succeeds. The CLI reaches the
/// daemon through a byte-for-byte proxy that restarts berthd before it forwards the first
/// `POST /build` carrying `X-Berth-Context`.
#[test]
fn incremental_context_falls_back_to_tar_when_session_unknown() {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !can_run() {
        return;
    }
    let mut d = TestDaemon::start();
    d.import_busybox();
    let ctx = ctx_dir(&d, "fallback");
    write_tree(
        &ctx,
        &[
            ("a.txt", "one"),
            ("sub/b.txt", "b"),
            (
                "Dockerfile",
                "FROM busybox:local\nCOPY . /ctx/\nRUN cat /ctx/a.txt /ctx/sub/b.txt /ctx/big.bin | md5sum > /sum\n",
            ),
        ],
    );
    // Bigger than the socket buffers: berthd refuses the session before it reads this body.
    std::fs::write(ctx.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let proxy_sock = d.dir.join("proxy.sock");
    let listener = UnixListener::bind(&proxy_sock).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (dir, upstream) = (d.dir.clone(), d.sock.clone());
    let stop = AtomicBool::new(false);
    // Request heads as the proxy saw them, and whether berthd was restarted.
    let heads: Mutex<Vec<String>> = Mutex::default();
    let restarted = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        let d = &mut d;
        let (stop, heads, restarted) = (&stop, &heads, &restarted);
        s.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("proxy accept: {e}"),
                };
                client.set_nonblocking(false).unwrap();
                // The request head, byte by byte, so nothing past it is consumed here.
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match (&client).read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => break,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let with_session = text.to_ascii_lowercase().contains("x-berth-context:");
                if text.starts_with("POST ")
                    && text.contains("/build?")
                    && with_session
                    && !restarted.swap(true, Ordering::SeqCst)
                {
                    d.terminate();
                    d.kill9();
                    d.spawn();
                }
                heads.lock().unwrap().push(text);
                let server = UnixStream::connect(&upstream).unwrap();
                (&server).write_all(&head).unwrap();
                // Both directions copied as they come; either side's end or error ends both.
                let pipe = |from: UnixStream, to: UnixStream| {
                    move || {
                        let _ = std::io::copy(&mut &from, &mut &to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    }
                };
                s.spawn(pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                ));
                s.spawn(pipe(server, client));
            }
        });
        let mut c = Command::new(berth_bin());
        c.args(["build", "--network", "none", "-t", "fallback", "."])
            .current_dir(&ctx)
            .env("DOCKER_HOST", format!("unix://{}", proxy_sock.display()))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env_remove("BERTH_HOST")
            .env_remove("BERTH_BUILD_CONTEXT");
        let o = run_with_timeout(c, None, Duration::from_secs(120));
        stop.store(true, Ordering::SeqCst);
        o
    });
    assert!(
        restarted.load(Ordering::SeqCst),
        "no incremental build request seen"
    );
    assert_eq!(
        out.code,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        tail(&d.log(), 30)
    );
    // The session's request was refused; the tar went next (no session, no "files sent").
    let builds: Vec<String> = heads
        .into_inner()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with("POST ") && h.contains("/build?"))
        .cloned()
        .collect();
    assert_eq!(builds.len(), 2, "{builds:?}");
    assert!(
        !builds[1].to_ascii_lowercase().contains("x-berth-context:"),
        "{}",
        builds[1]
    );
    assert!(!out.stdout.contains("files sent"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("Sending build context to Docker daemon  3.1"),
        "{}",
        out.stdout
    );
    let got = d.ok(&[
        "run",
        "--rm",
        "fallback",
        "sh",
        "-c",
        "cat /ctx/a.txt /ctx/sub/b.txt; wc -c < /ctx/big.bin",
    ]);
    assert_eq!(got.split_whitespace().collect::<Vec<_>>(), ["oneb3145728"]);
    // The restarted daemon still does incremental contexts: the next build goes that way.
    let o = build_cmd(
        &d,
        Cli::Berth,
        &["--network", "none", "-t", "fallback", "."],
        &ctx,
        None,
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("files sent)"), "{}", o.stdout);
    assert_eq!(count(&o.stdout, " ---> Using cache"), 2, "{}", o.stdout);
    assert_eq!(built_id(&o.stdout), built_id(&out.stdout));
}

/// The incremental context's API refuses hostile manifests and uploads: paths out of the
/// context, duplicates, a blob that is not what its digest says, an unknown session.
#[test]
fn incremental_context_refuses_hostile_input() {
    if !can_run() {
        return;
    }
    let d = TestDaemon::start();
    let dockerfile = b"FROM busybox:local\n";
    let digest =
        berth_build::blobs::digest_string(&berth_build::incremental::hash_bytes(dockerfile));
    let entry = |path: &str| serde_json::json!({"Path": path, "Type": "file", "Mode": 420, "Size": dockerfile.len(), "Digest": digest});
    let session = |entries: serde_json::Value| {
        let body = serde_json::json!({ "Entries": entries }).to_string();
        raw_request(
            &d,
            "/v1.44/berth/build/context",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    for (entries, want) in [
        (serde_json::json!([entry("../../etc/cron.d/x")]), "bad path"),
        (serde_json::json!([entry("/etc/x")]), "bad path"),
        (serde_json::json!([entry("a\0b")]), "bad path"),
        (
            serde_json::json!([entry("Dockerfile"), entry("Dockerfile")]),
            "twice",
        ),
        (
            serde_json::json!([{"Path": "l", "Type": "symlink", "Link": "/"}, entry("l/etc/x")]),
            "symlink",
        ),
    ] {
        let (status, text) = session(entries);
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(want), "{want}: {text}");
    }
    let (status, text) = session(serde_json::json!([entry("Dockerfile")]));
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let reply: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(reply["Missing"], serde_json::json!([digest]), "{text}");
    let id = reply["Session"].as_str().unwrap().to_string();
    // Other bytes under the Dockerfile's digest.
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    t.append_data(
        &mut h,
        digest.trim_start_matches("sha256:"),
        &b"FROM evil:image\n\n\n\n"[..dockerfile.len()],
    )
    .unwrap();
    let upload = t.into_inner().unwrap();
    let (status, text) = raw_request(&d, "/v1.44/build", &[("X-Berth-Context", &id)], &upload);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("does not match its content"), "{text}");
    // The session is spent; an unknown one is refused.
    let (status, text) = raw_request(&d, "/v1.44/build", &[("X-Berth-Context", &id)], b"");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown build context session"), "{text}");
    // An oversized manifest is refused before it is read whole.
    let huge = vec![b' '; berth_build::incremental::MAX_MANIFEST_BYTES + 1];
    let (status, text) = raw_request(&d, "/v1.44/berth/build/context", &[], &huge);
    assert_eq!(status, 413, "{}", &text[..text.len().min(300)]);
}
