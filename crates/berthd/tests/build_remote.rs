//! Remote sources in builds, through a private berthd: `ADD <git url>` (dumb HTTP and the git
//! protocol, refs, subdirectories, `--keep-git-dir`, `--chown`, the cache keyed by the commit)
//! and `remote=` contexts (a git repository, a tarball, a lone Dockerfile) with `berth build
//! <url>` and `DOCKER_BUILDKIT=0 docker build <url>`; hostile repositories and tarballs. The
//! repositories are served from 127.0.0.1 by this file (no network is needed).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Out, TestDaemon, can_run, run_with_timeout};

fn have_git() -> bool {
    let ok = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping: no git");
    }
    ok
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A work tree and the bare repository it pushes to, under the served directory.
struct Repo {
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    fn new(base: &Path, name: &str) -> Repo {
        let work = base.join("work").join(name);
        let bare = base.join("srv").join(format!("{name}.git"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&bare).unwrap();
        git(&work, &["init", "-q"]);
        git(&bare, &["init", "-q", "--bare"]);
        Repo { work, bare }
    }

    /// Writes `files` (`path`, content; a content `-> target` makes a symlink, a path ending
    /// in `*` an executable), commits, pushes branch and tags, and refreshes the dumb-HTTP index.
    fn commit(&self, files: &[(&str, &str)]) -> String {
        for (p, c) in files {
            let exec = p.ends_with('*');
            let f = self.work.join(p.trim_end_matches('*'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            let _ = std::fs::remove_file(&f);
            match c.strip_prefix("-> ") {
                Some(t) => std::os::unix::fs::symlink(t, &f).unwrap(),
                None => std::fs::write(&f, c).unwrap(),
            }
            if exec {
                let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
                std::fs::set_permissions(&f, mode).unwrap();
            }
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", "c"]);
        self.push();
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn push(&self) {
        let bare = self.bare.to_str().unwrap();
        git(&self.work, &["push", "-q", "-f", bare, "main", "--tags"]);
        git(&self.bare, &["update-server-info"]);
    }
}

/// Serves `root` over HTTP/1.0 on 127.0.0.1 (git's dumb protocol, tarballs, Dockerfiles);
/// returns the port. Paths with `..` are 404.
fn serve_dir(root: PathBuf) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || answer(s, &root));
        }
    });
    port
}

fn answer(mut s: TcpStream, root: &Path) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    let _ = r.read_line(&mut first);
    let mut line = String::new();
    while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let path = first.split(' ').nth(1).unwrap_or("/");
    let path = path.split('?').next().unwrap_or("").trim_start_matches('/');
    let file = (!path.contains("..")).then(|| root.join(path));
    let _ = match file.and_then(|f| std::fs::read(f).ok()) {
        Some(body) => s
            .write_all(
                format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(),
            )
            .and_then(|_| s.write_all(&body)),
        None => s.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    };
}

/// `git daemon` (the smart git protocol, so fetches are shallow) over `root`; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(root: &Path) -> GitDaemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", root.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "git daemon did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        GitDaemon { child, port }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `berth build` or `DOCKER_BUILDKIT=0 docker build` against `d`, from `dir`.
fn build(d: &TestDaemon, docker: bool, args: &[&str], dir: &Path) -> Out {
    let mut cmd = if docker {
        let mut c = Command::new(common::docker_bin());
        c.env("DOCKER_BUILDKIT", "0");
        c
    } else {
        Command::new(PathBuf::from(env!("CARGO_BIN_EXE_berthd")).with_file_name("berth"))
    };
    cmd.arg("build")
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .env_remove("BERTH_HOST")
        .env("DOCKER_CONFIG", d.dir.join("docker-config"))
        .env_remove("DOCKER_CONTEXT");
    run_with_timeout(cmd, None, Duration::from_secs(180))
}

fn built(o: &Out) -> &str {
    assert_eq!(o.code, 0, "build failed:\n{}{}", o.stdout, o.stderr);
    &o.stdout
}

fn cache_hits(s: &str) -> usize {
    s.matches(" ---> Using cache").count()
}

/// A private daemon with `busybox:local`, and the directory to serve repositories from; None
/// (skip) without root, the docker CLI or git.
fn daemon_with_busybox() -> Option<(TestDaemon, PathBuf)> {
    if !can_run() || !have_git() {
        return None;
    }
    let d = TestDaemon::start();
    d.import_busybox();
    let base = d.dir.join("git");
    Some((d, base))
}

#[test]
fn add_git_repository() {
    let Some((d, base)) = daemon_with_busybox() else {
        return;
    };
    let repo = Repo::new(&base, "repo");
    repo.commit(&[
        ("README", "v1\n"),
        ("sub/a.txt", "a\n"),
        ("bin/run.sh*", "#!/bin/sh\necho run\n"),
        // Links that point out of the repository stay links: nothing outside is read.
        ("evil", "-> /etc/passwd"),
        ("sub/up", "-> ../../../../../etc"),
    ]);
    git(&repo.work, &["tag", "v1"]);
    let v1 = git(&repo.work, &["rev-parse", "v1"]);
    repo.push();
    let http = serve_dir(base.join("srv"));
    let gd = GitDaemon::start(&base.join("srv"));
    let h = format!("http://127.0.0.1:{http}/repo.git");
    let g = format!("git://127.0.0.1:{}/repo.git", gd.port);
    let ctx = d.dir.join("ctx-add");
    std::fs::create_dir_all(&ctx).unwrap();
    let df = format!(
        "FROM busybox:local\n\
         ADD {g}#v1:sub /sub\n\
         ADD --chown=1000:1000 {h}#v1 /owned\n\
         ADD {h} /src\n\
         ADD --keep-git-dir=true {g}#main /kept\n\
         ADD --checksum={v1} {g}#v1 /pinned\n"
    );
    std::fs::write(ctx.join("Dockerfile"), &df).unwrap();
    built(&build(&d, false, &["-t", "addgit", "."], &ctx));
    let check = "cat /src/README /sub/a.txt /pinned/README; test -e /src/.git || echo no-git; \
                 test -e /sub/README || echo only-sub; \
                 stat -c '%u:%g %a' /src/README /src/bin/run.sh /owned/README; \
                 readlink /src/evil; readlink /sub/up; test -f /kept/.git/HEAD && echo kept; \
                 /src/bin/run.sh";
    let out = d.ok(&["run", "--rm", "addgit", "sh", "-c", check]);
    assert_eq!(
        out,
        "v1\na\nv1\nno-git\nonly-sub\n0:0 644\n0:0 755\n1000:1000 644\n/etc/passwd\n../../../../../etc\nkept\nrun\n",
        "{out}"
    );
    // Unchanged refs: every ADD is a cache hit (through the docker CLI too), without a clone.
    let o = build(&d, true, &["-t", "addgit", "."], &ctx);
    assert_eq!(cache_hits(built(&o)), 5, "{}", o.stdout);
    // A new commit on main moves HEAD: the tag's steps stay cached, the rest is rebuilt.
    repo.commit(&[("README", "v2\n")]);
    let o = build(&d, false, &["-t", "addgit", "."], &ctx);
    assert_eq!(cache_hits(built(&o)), 2, "{}", o.stdout);
    let out = d.ok(&[
        "run",
        "--rm",
        "addgit",
        "cat",
        "/src/README",
        "/owned/README",
    ]);
    assert_eq!(out, "v2\nv1\n");
    // A commit ID as the ref, shortened: fetched whole to resolve it. A repository with a
    // submodule (served the same way) gets its files, without the submodule's `.git` file.
    let first = git(&repo.work, &["rev-parse", "--short=10", "v1"]);
    let outer = Repo::new(&base, "outer");
    outer.commit(&[("o.txt", "outer\n")]);
    git(&outer.work, &["submodule", "add", "-q", &h, "inner"]);
    outer.commit(&[]);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox:local\nADD {h}#{first} /c\nADD http://127.0.0.1:{http}/outer.git /o\n"
        ),
    )
    .unwrap();
    built(&build(&d, false, &["-t", "addgit2", "."], &ctx));
    let check = "cat /c/README /o/o.txt /o/inner/README; ls -a /o /o/inner | grep -c git";
    let out = d.ok(&["run", "--rm", "addgit2", "sh", "-c", check]);
    assert_eq!(out, "v1\nouter\nv2\n1\n", "only .gitmodules: {out}");
    // Errors name the step's line and the URL.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (src, want) in [
        (format!("{h}#nope"), format!("{h}#nope")),
        (
            format!("--checksum=0123456789 {h}#v1"),
            "checksum mismatch".to_string(),
        ),
        (
            format!("http://127.0.0.1:{dead}/gone.git"),
            "gone.git".to_string(),
        ),
        (
            format!("{h}#main:../../etc"),
            "outside of the repository".to_string(),
        ),
        (
            format!("{h}#main:evil"),
            "not a directory in the repository".to_string(),
        ),
    ] {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM busybox:local\nADD {src} /x\n"),
        )
        .unwrap();
        let o = build(&d, false, &["."], &ctx);
        assert_ne!(o.code, 0, "{src}: {}", o.stdout);
        assert!(
            o.stderr.contains(&want) && o.stderr.contains("Dockerfile:2"),
            "{src}: {}",
            o.stderr
        );
    }
}

/// A tar (gzip) of `files` (path, content) as bytes; paths are written raw, so `../` stays.
fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let name = &mut h.as_old_mut().name;
        name[..p.len()].copy_from_slice(p.as_bytes());
        h.set_cksum();
        t.append(&h, c.as_bytes()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap()
}

#[test]
fn remote_contexts() {
    let Some((d, base)) = daemon_with_busybox() else {
        return;
    };
    let repo = Repo::new(&base, "ctx");
    let df = "FROM busybox:local\nCOPY . /ctx/\nCMD [\"cat\", \"/ctx/hello\"]\n";
    repo.commit(&[
        ("app/Dockerfile", df),
        ("app/hello", "from git\n"),
        ("app/out", "-> ../../../../etc/passwd"),
        ("top", "top\n"),
    ]);
    let srv = base.join("srv");
    std::fs::write(
        srv.join("ctx.tar.gz"),
        tar_gz(&[("Dockerfile", df), ("hello", "from tar\n")]),
    )
    .unwrap();
    std::fs::write(
        srv.join("Dockerfile.txt"),
        "FROM busybox:local\nCMD [\"echo\", \"lone\"]\n",
    )
    .unwrap();
    let marker = format!("berth-escape-{}", std::process::id());
    let evil = format!("../../../../../../../../../../tmp/{marker}");
    std::fs::write(
        srv.join("evil.tar.gz"),
        tar_gz(&[("Dockerfile", df), (&evil, "x")]),
    )
    .unwrap();
    let http = serve_dir(srv.clone());
    let u = |p: &str| format!("http://127.0.0.1:{http}/{p}");
    let here = d.dir.clone();
    // A git repository's subdirectory as the context, with either CLI (the docker CLI clones it
    // itself and sends a tar; berth has berthd fetch it with `remote=`).
    for docker in [false, true] {
        let o = build(&d, docker, &["-t", "rgit", &u("ctx.git#main:app")], &here);
        // berth sends no context: berthd fetches it.
        assert_eq!(
            built(&o).contains("Sending build context"),
            docker,
            "{}",
            o.stdout
        );
        assert_eq!(d.ok(&["run", "--rm", "rgit"]), "from git\n");
        let out = d.ok(&[
            "run",
            "--rm",
            "rgit",
            "sh",
            "-c",
            "readlink /ctx/out; ls /ctx",
        ]);
        assert_eq!(out, "../../../../etc/passwd\nDockerfile\nhello\nout\n");
    }
    // The same commit again: every step cached.
    let o = build(&d, false, &["-t", "rgit", &u("ctx.git#main:app")], &here);
    assert_eq!(cache_hits(built(&o)), 2, "{}", o.stdout);
    // `-f` is relative to the remote context.
    let o = build(
        &d,
        false,
        &["-t", "rgit2", "-f", "app/Dockerfile", &u("ctx.git")],
        &here,
    );
    built(&o);
    let out = d.ok(&["run", "--rm", "rgit2", "ls", "/ctx"]);
    assert_eq!(out, "app\ntop\n", "a remote context holds no .git");
    // A tarball, and a lone Dockerfile.
    for docker in [false, true] {
        built(&build(&d, docker, &["-t", "rtar", &u("ctx.tar.gz")], &here));
        assert_eq!(d.ok(&["run", "--rm", "rtar"]), "from tar\n");
        built(&build(
            &d,
            docker,
            &["-t", "rdf", &u("Dockerfile.txt")],
            &here,
        ));
        assert_eq!(d.ok(&["run", "--rm", "rdf"]), "lone\n");
    }
    // Hostile or broken remotes are clear errors; nothing lands outside.
    for (url, want) in [
        (u("evil.tar.gz"), "escapes the context".to_string()),
        (
            u("ctx.git#main:../.."),
            "outside of the repository".to_string(),
        ),
        (u("ctx.git#main:app/out"), "not a directory".to_string()),
        (u("ctx.git#nope"), "nope".to_string()),
        (u("missing.tar.gz"), "404".to_string()),
        (
            "http://127.0.0.1:1/x.git".to_string(),
            "127.0.0.1:1/x.git".to_string(),
        ),
    ] {
        let o = build(&d, false, &[&url], &here);
        assert_ne!(o.code, 0, "{url}: {}", o.stdout);
        assert!(o.stderr.contains(&want), "{url}: {}", o.stderr);
    }
    assert!(!Path::new("/tmp").join(&marker).exists());
}
