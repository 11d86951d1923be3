//! Builds for real against an image store in a temp data root with the TEST backend (root needed:
//! overlay mounts and chroot). Skipped when not root.

mod common;

use common::*;

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

#[test]
fn multi_stage_build_cache_and_invalidation() {
    need_root!();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    write_tree(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "ARG BASE=busybox:local\n\
                 FROM $BASE AS builder\n\
                 ARG GREETING=hello\n\
                 WORKDIR /src\n\
                 COPY a.txt .\n\
                 RUN echo \"$GREETING $(cat a.txt)\" > out.txt\n\
                 COPY b.txt /src/\n\
                 RUN cat b.txt >> out.txt\n\
                 \n\
                 FROM busybox:local\n\
                 ENV APP=/app\n\
                 COPY --from=builder /src/out.txt $APP/\n\
                 USER app\n\
                 CMD [\"cat\", \"/app/out.txt\"]\n",
            ),
            ("a.txt", "A1"),
            ("b.txt", "B1"),
        ],
    );
    let mut o = opts();
    o.tags = vec!["result:1".into()];
    let (r, msgs) = env.build_dir(ctx.path(), &o);
    let t = text(&msgs);
    let r = r.unwrap_or_else(|e| panic!("{e}\n{t}"));
    assert!(t.contains("Step 1/12 : FROM $BASE AS builder\n"), "{t}");
    assert!(t.contains(" ---> Running in "), "{t}");
    assert!(t.contains("Removing intermediate container "), "{t}");
    assert!(
        t.contains(&format!("Successfully built {}\n", &r.image_id.hex()[..12])),
        "{t}"
    );
    assert!(t.contains("Successfully tagged result:1\n"), "{t}");
    assert!(msgs.iter().any(|m| {
        m.aux
            .as_ref()
            .is_some_and(|a| a["ID"] == r.image_id.as_str())
    }));
    let (code, out) = env.run_in(
        &r.image_id,
        "cat /app/out.txt; echo; id -u; ls -ld /app | cut -c1-10",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "hello A1\nB1\n1000\ndrwxr-xr-x\n");
    let cfg = env.store.config(&r.image_id).unwrap();
    let cc = cfg.config.clone().unwrap();
    assert_eq!(cc.user, "app");
    assert_eq!(cc.cmd, Some(vec!["cat".into(), "/app/out.txt".into()]));
    assert!(cc.env.contains(&"APP=/app".to_string()));
    let hist: Vec<String> = cfg
        .history
        .iter()
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect();
    assert!(
        hist.contains(&"/bin/sh -c #(nop)  ENV APP=/app".to_string()),
        "{hist:?}"
    );
    assert!(
        hist.contains(&"/bin/sh -c #(nop)  CMD [\"cat\" \"/app/out.txt\"]".to_string()),
        "{hist:?}"
    );
    assert!(
        hist.iter()
            .any(|h| h.starts_with("/bin/sh -c #(nop) COPY file:") && h.ends_with(" in /app/ ")),
        "{hist:?}"
    );
    let builder_cfg = env.store.history("result:1").unwrap();
    assert!(!builder_cfg.is_empty());
    let runs = env.backend.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 3);
    assert_eq!(
        runs[0].args,
        vec!["/bin/sh", "-c", "echo \"$GREETING $(cat a.txt)\" > out.txt"]
    );
    assert!(runs[0].env.contains(&"GREETING=hello".to_string()));
    assert_eq!(runs[0].workdir, "/src");
    // The builder stage's RUN history records the build arg.
    let id1 = r.image_id.clone();

    // Rebuild: everything from cache, same image.
    let (r2, msgs) = env.build_dir(ctx.path(), &o);
    let t = text(&msgs);
    let r2 = r2.unwrap();
    assert_eq!(r2.image_id, id1, "{t}");
    assert_eq!(t.matches(" ---> Using cache\n").count(), 10, "{t}");
    assert_eq!(env.backend.runs.lock().unwrap().len(), 3, "nothing ran");

    // Change b.txt: steps before `COPY b.txt` stay cached, it and the dependent ones rerun.
    std::fs::write(ctx.path().join("b.txt"), "B2").unwrap();
    let (r3, msgs) = env.build_dir(ctx.path(), &o);
    let t = text(&msgs);
    let r3 = r3.unwrap();
    assert_ne!(r3.image_id, id1);
    // Cached: ARG, WORKDIR, COPY a, RUN (builder) and ENV in the final stage = 5.
    assert_eq!(t.matches(" ---> Using cache\n").count(), 5, "{t}");
    let (_, out) = env.run_in(&r3.image_id, "cat /app/out.txt");
    assert_eq!(out, "hello A1\nB2");

    // A build arg changes the RUN that uses it.
    let mut o2 = o.clone();
    o2.build_args = args(&[("GREETING", "hi")]);
    let (r4, msgs) = env.build_dir(ctx.path(), &o2);
    let r4 = r4.unwrap();
    let t = text(&msgs);
    // Cached: ARG (its default did not change), WORKDIR, COPY a, and ENV of the final stage.
    assert_eq!(t.matches(" ---> Using cache\n").count(), 4, "{t}");
    let h = env.store.config(&r4.image_id).unwrap();
    assert!(!h.history.is_empty());
    let (_, out) = env.run_in(&r4.image_id, "cat /app/out.txt");
    assert_eq!(out, "hi A1\nB2");
    // No container layer or crash-recovery marker is left behind.
    assert!(env.store.container_layers().is_empty());
    let markers = env.dir.path().join("data/build/layers");
    assert_eq!(std::fs::read_dir(markers).unwrap().count(), 0);
}

#[test]
fn recover_removes_layers_of_interrupted_builds() {
    need_root!();
    let env = Env::new();
    let id = "ab".repeat(32);
    let image = env.store.resolve("busybox:local").unwrap();
    env.store.prepare_container_layer(&id, &image).unwrap();
    let markers = env.dir.path().join("data/build/layers");
    std::fs::create_dir_all(&markers).unwrap();
    std::fs::write(markers.join(&id), image.as_str()).unwrap();
    assert_eq!(env.builder.recover(), vec![id]);
    assert!(env.store.container_layers().is_empty());
    assert_eq!(std::fs::read_dir(markers).unwrap().count(), 0);
}

#[test]
fn run_failure_reports_the_exit_code() {
    need_root!();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    write_tree(
        ctx.path(),
        &[("Dockerfile", "FROM busybox:local\nRUN echo out; exit 3\n")],
    );
    let (r, msgs) = env.build_dir(ctx.path(), &opts());
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "The command '/bin/sh -c echo out; exit 3' returned a non-zero code: 3"
    );
    let m = berth_build::builder::error_message(&e);
    assert_eq!(m.error_detail.unwrap().code, Some(3));
    assert!(text(&msgs).contains("out\n"));
    // The failed step's container is kept (as dockerd does without --force-rm) and is the
    // daemon's: not in the builder's recovery list.
    assert_eq!(env.store.container_layers().len(), 1);
    assert!(env.builder.recover().is_empty());
    let mut o = opts();
    o.force_remove = true;
    let (r, _) = env.build_dir(ctx.path(), &o);
    assert!(r.is_err());
    assert_eq!(env.store.container_layers().len(), 1);
}

fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if *kind == tar::EntryType::Symlink {
            h.set_link_name(data).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, data.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn tar_contexts_cannot_reach_outside() {
    need_root!();
    let env = Env::new();
    let cache = berth_build::cache::CacheIndex::open(&env.dir.path().join("data")).unwrap();
    let tmp = cache.tmp_dir();
    let build = |t: &[u8]| {
        let ctx = berth_build::context::BuildContext::from_tar(t, &tmp, None)?;
        env.builder.build(&ctx, &opts(), &mut |_| {})
    };
    // A symlink to the host's /etc is followed inside the context, where there is no etc/passwd.
    let t = tar_of(&[
        (
            "Dockerfile",
            tar::EntryType::Regular,
            "FROM busybox:local\nCOPY hostetc/passwd /stolen\n",
        ),
        ("hostetc", tar::EntryType::Symlink, "/etc"),
    ]);
    let e = build(&t).unwrap_err().to_string();
    assert!(e.contains("file not found in build context"), "{e}");
    // Parent-relative sources stay inside.
    let t = tar_of(&[(
        "Dockerfile",
        tar::EntryType::Regular,
        "FROM busybox:local\nCOPY ../../../../etc/hostname /stolen\n",
    )]);
    let e = build(&t).unwrap_err().to_string();
    assert!(e.contains("file not found in build context"), "{e}");
    // Entries that climb out or write through a symlink are refused before anything is built.
    let t = tar_of(&[
        (
            "Dockerfile",
            tar::EntryType::Regular,
            "FROM busybox:local\n",
        ),
        ("../../escaped", tar::EntryType::Regular, "x"),
    ]);
    assert!(
        build(&t)
            .unwrap_err()
            .to_string()
            .contains("escapes the context")
    );
    let t = tar_of(&[
        (
            "Dockerfile",
            tar::EntryType::Regular,
            "FROM busybox:local\n",
        ),
        ("l", tar::EntryType::Symlink, "/tmp"),
        ("l/escaped-through-link", tar::EntryType::Regular, "x"),
    ]);
    assert!(build(&t).unwrap_err().to_string().contains("symlink"));
    assert!(!std::path::Path::new("/tmp/escaped-through-link").exists());
    // A good gzip context builds, and the temp dir is gone afterwards.
    let t = tar_of(&[
        (
            "Dockerfile",
            tar::EntryType::Regular,
            "FROM busybox:local\nCOPY f /f\n",
        ),
        ("f", tar::EntryType::Regular, "data"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &t).unwrap();
    let r = build(&gz.finish().unwrap()).unwrap();
    assert_eq!(env.run_in(&r.image_id, "cat /f").1, "data");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

#[test]
fn independent_stages_run_in_parallel_and_stream_in_order() {
    need_root!();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    write_tree(
        ctx.path(),
        &[(
            "Dockerfile",
            "FROM busybox:local AS a\nRUN sleep 1 && echo a > /a\n\
             FROM busybox:local AS b\nRUN sleep 1 && echo b > /b\n\
             FROM busybox:local AS unused\nRUN exit 1\n\
             FROM busybox:local\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        )],
    );
    let (r, msgs) = env.build_dir(ctx.path(), &opts());
    let t = text(&msgs);
    let r = r.unwrap_or_else(|e| panic!("{e}\n{t}"));
    let steps: Vec<&str> = t.lines().filter(|l| l.starts_with("Step ")).collect();
    assert_eq!(
        steps,
        vec![
            "Step 1/7 : FROM busybox:local AS a",
            "Step 2/7 : RUN sleep 1 && echo a > /a",
            "Step 3/7 : FROM busybox:local AS b",
            "Step 4/7 : RUN sleep 1 && echo b > /b",
            "Step 5/7 : FROM busybox:local",
            "Step 6/7 : COPY --from=a /a /a",
            "Step 7/7 : COPY --from=b /b /b",
        ],
        "{t}"
    );
    let times = env.backend.times.lock().unwrap().clone();
    assert_eq!(times.len(), 2);
    let (a, b) = (times[0], times[1]);
    assert!(a.0 < b.1 && b.0 < a.1, "the two RUN steps did not overlap");
    assert_eq!(env.run_in(&r.image_id, "cat /a /b").1, "a\nb\n");
}

#[test]
fn copy_never_writes_through_image_symlinks_to_the_host() {
    need_root!();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    let name = format!("berth-escape-{}.txt", std::process::id());
    write_tree(
        ctx.path(),
        &[
            (
                "Dockerfile",
                "FROM busybox:local\nRUN mkdir /app && ln -s /tmp /app/sub && ln -s /tmp /app/sub2 && ln -s /tmp/abs-file /app/file\nCOPY dir /app\nCOPY dir/sub /app/sub2/\nCOPY one /app/file\n",
            ),
            (&format!("dir/sub/{name}"), "inside"),
            ("one", "one"),
        ],
    );
    let (r, msgs) = env.build_dir(ctx.path(), &opts());
    let r = r.unwrap_or_else(|e| panic!("{e}\n{}", text(&msgs)));
    assert!(
        !std::path::Path::new("/tmp").join(&name).exists(),
        "wrote to the host"
    );
    assert!(
        !std::path::Path::new("/tmp/abs-file").exists(),
        "wrote to the host"
    );
    // A directory entry replaces a symlink (as dockerd's untar does); a symlinked destination is
    // followed inside the rootfs; a file replaces a symlinked file.
    let (code, out) = env.run_in(
        &r.image_id,
        &format!(
            "[ -d /app/sub ] && [ ! -L /app/sub ] && cat /app/sub/{name} /tmp/{name} /app/file"
        ),
    );
    assert_eq!((code, out.as_str()), (0, "insideinsideone"));
}

#[test]
fn options_quiet_labels_nocache_and_named_dockerignore() {
    need_root!();
    let env = Env::new();
    let ctx = tempfile::tempdir().unwrap();
    write_tree(
        ctx.path(),
        &[
            ("build/app.Dockerfile", "FROM busybox:local\nCOPY . /ctx/\n"),
            ("build/app.Dockerfile.dockerignore", "secret\n"),
            (".dockerignore", "visible\n"),
            ("secret", "s"),
            ("visible", "v"),
        ],
    );
    let mut o = opts();
    o.dockerfile = Some("build/app.Dockerfile".into());
    o.quiet = true;
    o.labels = [("org.example".to_string(), "yes".to_string())].into();
    let (r, msgs) = env.build_dir(ctx.path(), &o);
    let r = r.unwrap();
    // Quiet: only the ID (and the aux line).
    assert_eq!(text(&msgs), format!("{}\n", r.image_id));
    let cfg = env.store.config(&r.image_id).unwrap().config.unwrap();
    assert_eq!(cfg.labels.unwrap()["org.example"], "yes");
    let (code, out) = env.run_in(&r.image_id, "ls -A /ctx | sort | tr '\\n' ' '");
    assert_eq!((code, out.as_str()), (0, ".dockerignore build visible "));
    // nocache: nothing from the cache, a new image.
    o.quiet = false;
    o.no_cache = true;
    let (r2, msgs) = env.build_dir(ctx.path(), &o);
    assert!(!text(&msgs).contains("Using cache"));
    assert_ne!(r2.unwrap().image_id, r.image_id);
    // The cache index lists the steps; prune empties it.
    let du = env.builder.cache().du();
    assert!(du.len() >= 2, "{du:?}");
    assert!(du.iter().any(|(_, r)| r.size > 0));
    let rep = env.builder.cache().prune(&Default::default()).unwrap();
    assert_eq!(rep.deleted.len(), du.len());
    assert!(env.builder.cache().du().is_empty());
}
