use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::ErrorKind;
use crate::unpack::tests::TarMaker;

thread_local! {
    /// `save_refs` fails without writing, as if the process died just before it.
    pub(super) static CRASH_BEFORE_SAVE_REFS: std::cell::Cell<bool> =
        const { std::cell::Cell::new(false) };
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    (d, s)
}

fn rootfs_tar(marker: &str) -> Vec<u8> {
    TarMaker::new()
        .dir("etc/")
        .file("etc/os-release", format!("NAME={marker}\n").as_bytes())
        .dir("bin/")
        .file_mode("bin/tool", b"#!/bin/sh\necho tool\n", 0o755, 0)
        .symlink("bin/alias", "tool")
        .build()
}

fn no_users(_: &ImageId) -> Option<ImageUser> {
    None
}

fn names(st: &ImageStore, all: bool) -> Vec<Vec<String>> {
    st.list(all).into_iter().map(|s| s.repo_tags).collect()
}

#[test]
fn store_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ImageStore>();
    check::<Arc<ImageStore>>();
    check::<Error>();
}

#[test]
fn import_list_inspect_tag_remove_round_trip() {
    let (_d, s) = store();
    assert!(s.was_created());
    assert!(s.list(true).is_empty());
    let opts = ImportOptions {
        changes: vec![
            "CMD [\"/bin/tool\"]".into(),
            "ENV A=1".into(),
            "LABEL team=berth".into(),
        ],
        ..Default::default()
    };
    let sum = s
        .import(&rootfs_tar("one")[..], Some("busybox:local"), &opts)
        .unwrap();
    assert_eq!(sum.repo_tags, vec!["busybox:local"]);
    assert!(sum.id.starts_with("sha256:"));
    assert_eq!(sum.size, 9 + 20);
    assert!(sum.created > 1_700_000_000);
    assert_eq!(sum.labels.as_ref().unwrap()["team"], "berth");

    let id = s.resolve("busybox:local").unwrap();
    assert_eq!(id.as_str(), sum.id);
    assert_eq!(s.resolve(&sum.id).unwrap(), id);
    assert_eq!(s.resolve(id.hex()).unwrap(), id);
    assert_eq!(s.resolve(&id.hex()[..6]).unwrap(), id);
    assert_eq!(
        s.resolve(&format!("sha256:{}", &id.hex()[..8])).unwrap(),
        id
    );
    assert_eq!(s.resolve("docker.io/library/busybox:local").unwrap(), id);
    let e = s.resolve("busybox").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.to_string(), "No such image: busybox:latest");
    assert_eq!(
        s.resolve("Foo").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // The ID is the digest of the stored config bytes.
    let bytes = s.config_bytes(&id).unwrap();
    assert_eq!(Digest::of_bytes(&bytes), id);
    let cfg = s.config(&id).unwrap();
    assert_eq!(
        cfg.config.as_ref().unwrap().cmd.as_ref().unwrap(),
        &["/bin/tool"]
    );
    assert_eq!(cfg.history[0].comment.as_deref(), Some("Imported from -"));
    assert_eq!(cfg.rootfs.diff_ids.len(), 1);

    let det = s.inspect("busybox:local").unwrap();
    assert_eq!(det.id, sum.id);
    assert_eq!(det.repo_tags, vec!["busybox:local"]);
    assert_eq!(det.comment, "Imported from -");
    assert_eq!(det.os, "linux");
    assert_eq!(det.root_fs.kind, "layers");
    assert_eq!(det.root_fs.layers, vec![cfg.rootfs.diff_ids[0].to_string()]);
    assert!(det.created.ends_with('Z'));
    assert_ne!(det.metadata.last_tag_time, ZERO_TIME);
    let json = serde_json::to_value(&det).unwrap();
    for k in [
        "Id",
        "RepoTags",
        "RepoDigests",
        "Parent",
        "Comment",
        "Created",
        "Config",
        "Architecture",
        "Os",
        "Size",
        "RootFS",
        "Metadata",
        "GraphDriver",
    ] {
        assert!(json.get(k).is_some(), "{k} missing in {json}");
    }
    assert_eq!(json["Config"]["Env"][0], "A=1");
    assert_eq!(json["RootFS"]["Type"], "layers");
    let upper = PathBuf::from(det.graph_driver.data["UpperDir"].clone());
    assert_eq!(
        fs::read_to_string(upper.join("etc/os-release")).unwrap(),
        "NAME=one\n"
    );

    // Tag, list, untag.
    s.tag("busybox:local", "team/app").unwrap();
    s.tag(&id.hex()[..12], "127.0.0.1:5000/x/y:1.2").unwrap();
    let mut tags = s.inspect(id.as_str()).unwrap().repo_tags;
    tags.sort();
    assert_eq!(
        tags,
        vec!["127.0.0.1:5000/x/y:1.2", "busybox:local", "team/app:latest"]
    );
    assert_eq!(
        s.tag("nope", "x").unwrap_err().to_string(),
        "No such image: nope:latest"
    );
    assert_eq!(
        s.tag("busybox:local", "Bad").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.tag("busybox:local", &format!("x@{id}"))
            .unwrap_err()
            .to_string(),
        "refusing to create a tag with a digest reference"
    );

    // Deleting by ID with tags in several repositories needs force.
    let e = s
        .remove(&id.hex()[..12], false, true, &no_users)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            id.short()
        )
    );
    // Removing one name only untags.
    let r = s.remove("team/app", false, true, &no_users).unwrap();
    assert_eq!(r, vec![DeleteItem::Untagged("team/app:latest".into())]);
    let r = s
        .remove("127.0.0.1:5000/x/y:1.2", false, true, &no_users)
        .unwrap();
    assert_eq!(
        r,
        vec![DeleteItem::Untagged("127.0.0.1:5000/x/y:1.2".into())]
    );
    // The last name deletes the image and its layer.
    let chain = s.layers_in_use();
    assert_eq!(chain.len(), 1);
    let r = s.remove("busybox:local", false, true, &no_users).unwrap();
    assert_eq!(
        r,
        vec![
            DeleteItem::Untagged("busybox:local".into()),
            DeleteItem::Deleted(id.to_string()),
            DeleteItem::Deleted(chain[0].0.to_string()),
        ]
    );
    assert!(s.list(true).is_empty());
    assert!(s.layers_in_use().is_empty());
    assert_eq!(
        fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
        0
    );
    assert_eq!(fs::read_dir(s.root().join("layers")).unwrap().count(), 0);
    assert_eq!(
        s.remove("busybox:local", false, true, &no_users)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // Everything survives a reopen.
    drop(s);
}

#[test]
fn metadata_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    let sum = s
        .import(&rootfs_tar("x")[..], Some("a:1"), &ImportOptions::default())
        .unwrap();
    s.tag("a:1", "b").unwrap();
    drop(s);
    let s = ImageStore::open(d.path()).unwrap();
    assert!(!s.was_created());
    assert!(s.repairs().is_empty(), "{:?}", s.repairs());
    let list = s.list(false);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, sum.id);
    let mut tags = list[0].repo_tags.clone();
    tags.sort();
    assert_eq!(tags, vec!["a:1", "b:latest"]);
    let repos: serde_json::Value =
        serde_json::from_slice(&fs::read(s.root().join("repositories.json")).unwrap()).unwrap();
    assert_eq!(repos["Repositories"]["b"]["b:latest"], sum.id.as_str());
}

#[test]
fn gzip_and_zstd_layers_share_the_diff_id() {
    let (_d, s) = store();
    let tar = rootfs_tar("c");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let a = s
        .import(&tar[..], Some("plain"), &ImportOptions::default())
        .unwrap();
    let b = s
        .import(&gz[..], Some("gz"), &ImportOptions::default())
        .unwrap();
    let c = s
        .import(&zst[..], Some("zst"), &ImportOptions::default())
        .unwrap();
    let diff = |n: &str| s.inspect(n).unwrap().root_fs.layers;
    assert_eq!(diff("plain"), diff("gz"));
    assert_eq!(diff("plain"), diff("zst"));
    assert_eq!(diff("plain")[0], Digest::of_bytes(&tar).to_string());
    // One unpacked layer, shared by the three images.
    assert_eq!(s.layers_in_use().len(), 1);
    let blobs = s.layer_blobs(&s.resolve("plain").unwrap()).unwrap();
    assert_eq!(blobs[0].media_type, MEDIA_TYPE_LAYER_TAR);
    assert_eq!(blobs[0].digest, Digest::of_bytes(&tar));
    // Removing two of them keeps the shared layer.
    for (n, sum) in [("plain", &a), ("gz", &b)] {
        let r = s.remove(n, false, false, &no_users).unwrap();
        assert_eq!(
            r,
            vec![
                DeleteItem::Untagged(format!("{n}:latest")),
                DeleteItem::Deleted(sum.id.clone())
            ]
        );
    }
    assert_eq!(s.layers_in_use().len(), 1);
    let r = s.remove("zst", false, false, &no_users).unwrap();
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(s.layers_in_use().is_empty());
    let _ = c;
    let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0];
    let e = s
        .import(&xz[..], None, &ImportOptions::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn import_of_hostile_tar_leaves_nothing() {
    let (d, s) = store();
    for tar in [
        TarMaker::new().file("../evil", b"x").build(),
        TarMaker::new()
            .symlink("d", d.path().to_str().unwrap())
            .file("d/evil", b"x")
            .build(),
        TarMaker::new().hardlink("p", "/etc/passwd").build(),
        b"definitely not a tar archive, but long enough to look at".repeat(20),
    ] {
        let e = s
            .import(&tar[..], Some("evil"), &ImportOptions::default())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    assert!(!d.path().join("evil").exists());
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    for sub in ["blobs/sha256", "layers", "containers"] {
        assert_eq!(
            fs::read_dir(s.root().join(sub)).unwrap().count(),
            0,
            "{sub}"
        );
    }
    assert!(s.list(true).is_empty());
    let e = s
        .import(
            &rootfs_tar("x")[..],
            None,
            &ImportOptions {
                changes: vec!["RUN x".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.to_string(), "RUN is not a valid change command");
    let e = s
        .import(
            &rootfs_tar("x")[..],
            Some("UPPER"),
            &ImportOptions::default(),
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid reference format: repository name (library/UPPER) must be lowercase"
    );
}

#[test]
fn untagged_import_is_dangling() {
    let (_d, s) = store();
    let a = s
        .import(&rootfs_tar("a")[..], None, &ImportOptions::default())
        .unwrap();
    assert!(a.repo_tags.is_empty());
    assert_eq!(s.list(false).len(), 1);
    // Retagging moves a tag; the old image stays, untagged.
    s.tag(&a.id, "x").unwrap();
    let b = s
        .import(&rootfs_tar("b")[..], Some("x"), &ImportOptions::default())
        .unwrap();
    assert_eq!(s.resolve("x").unwrap().as_str(), b.id);
    assert_eq!(names(&s, true).iter().filter(|t| t.is_empty()).count(), 1);
    let r = s.remove(&a.id, false, false, &no_users).unwrap();
    assert_eq!(r[0], DeleteItem::Deleted(a.id.clone()));
}

#[test]
fn remove_respects_containers() {
    let (_d, s) = store();
    let sum = s
        .import(&rootfs_tar("a")[..], Some("app"), &ImportOptions::default())
        .unwrap();
    let id = Digest::parse(&sum.id).unwrap();
    let stopped = |_: &ImageId| {
        Some(ImageUser {
            container_id: "abcdef0123456789abcdef".into(),
            running: false,
        })
    };
    let running = |_: &ImageId| {
        Some(ImageUser {
            container_id: "abcdef0123456789abcdef".into(),
            running: true,
        })
    };
    let e = s.remove("app", false, false, &stopped).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to remove repository reference \"app\" (must force) - container abcdef012345 is using its referenced image {}",
            id.short()
        )
    );
    let e = s.remove(&sum.id, false, false, &stopped).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {} (must be forced) - image is being used by stopped container abcdef012345",
            id.short()
        )
    );
    let e = s.remove(&sum.id, true, false, &running).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {} (cannot be forced) - image is being used by running container abcdef012345",
            id.short()
        )
    );
    assert_eq!(s.list(false)[0].repo_tags, vec!["app:latest"]);

    // A container layer keeps the image's layers alive after a forced delete.
    let m = s.prepare_container_layer("c1", &id).unwrap();
    let r = s.remove("app", true, false, &stopped).unwrap();
    assert_eq!(
        r,
        vec![
            DeleteItem::Untagged("app:latest".into()),
            DeleteItem::Deleted(sum.id.clone())
        ]
    );
    assert!(m.lowers[0].join("etc/os-release").exists());
    assert_eq!(s.container_layer("c1").unwrap(), m);
    s.remove_container_layer("c1").unwrap();
    assert!(!m.lowers[0].exists());
    assert!(!m.upper.exists());
    assert!(s.layers_in_use().is_empty());
    s.remove_container_layer("c1").unwrap();
    assert_eq!(
        s.container_layer("c1").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn container_layers() {
    let (d, s) = store();
    let a = s
        .import(&rootfs_tar("a")[..], Some("app"), &ImportOptions::default())
        .unwrap();
    let id = Digest::parse(&a.id).unwrap();
    let m = s.prepare_container_layer("c1", &id).unwrap();
    assert_eq!(m.lowers.len(), 1);
    assert!(m.upper.is_dir() && m.work.is_dir());
    assert!(m.overlay_options().starts_with("lowerdir="));
    assert_eq!(s.prepare_container_layer("c1", &id).unwrap(), m);
    assert_eq!(s.container_layers(), vec!["c1".to_string()]);
    assert_eq!(
        s.prepare_container_layer("../x", &id).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let other = Digest::of_bytes(b"nope");
    assert_eq!(
        s.prepare_container_layer("c2", &other).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    drop(s);
    let s = ImageStore::open(d.path()).unwrap();
    assert_eq!(s.container_layer("c1").unwrap(), m);
    let b = s
        .import(
            &rootfs_tar("b")[..],
            Some("other"),
            &ImportOptions::default(),
        )
        .unwrap();
    let e = s
        .prepare_container_layer("c1", &Digest::parse(&b.id).unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn zero_layer_image_gets_an_empty_lower() {
    let (_d, s) = store();
    let id = {
        let mut st = s.lock();
        s.commit_image(
            &mut st,
            ImageConfig {
                os: "linux".into(),
                ..Default::default()
            },
            None,
            None,
        )
        .unwrap()
    };
    let m = s.prepare_container_layer("empty1", &id).unwrap();
    assert_eq!(m.lowers, vec![s.root().join("empty")]);
    assert!(m.lowers[0].is_dir());
}

#[test]
fn hello_world_is_deterministic_and_runs() {
    let (_d1, s1) = store();
    let (_d2, s2) = store();
    let a = s1.ensure_hello_world().unwrap();
    let b = s2.ensure_hello_world().unwrap();
    assert_eq!(a, b);
    assert_eq!(s1.ensure_hello_world().unwrap(), a);
    assert_eq!(s1.list(false).len(), 1);
    let det = s1.inspect("hello-world").unwrap();
    assert_eq!(det.repo_tags, vec!["hello-world:latest"]);
    assert_eq!(
        det.config.as_ref().unwrap().cmd.as_ref().unwrap(),
        &["/hello"]
    );
    assert_eq!(det.created, "2026-01-01T00:00:00Z");
    let bin = PathBuf::from(&det.graph_driver.data["UpperDir"]).join("hello");
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let out = Command::new(&bin).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("Hello from Berth!"), "{text}");
    assert!(text.contains("berth run -it busybox:local sh"));
    // Removed and ensured again: same ID.
    s1.remove("hello-world", false, false, &no_users).unwrap();
    assert_eq!(s1.ensure_hello_world().unwrap(), a);
}

#[test]
fn open_repairs_a_half_written_store() {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    let keep = s
        .import(
            &rootfs_tar("keep")[..],
            Some("keep"),
            &ImportOptions::default(),
        )
        .unwrap();
    let gone = s
        .import(
            &rootfs_tar("gone")[..],
            Some("gone"),
            &ImportOptions::default(),
        )
        .unwrap();
    let gone_id = Digest::parse(&gone.id).unwrap();
    let root = s.root().to_path_buf();
    s.prepare_container_layer("ok", &Digest::parse(&keep.id).unwrap())
        .unwrap();
    drop(s);
    // Debris of a crash: temp files, a half-unpacked layer, a layer without metadata, a container dir
    // without its record, an orphan blob, and an image whose config blob is gone.
    fs::write(root.join("blobs/sha256/abc.tmp-1-2-3"), b"x").unwrap();
    fs::write(root.join("images.json.tmp-1-2-3"), b"{").unwrap();
    fs::create_dir_all(root.join("layers/new.tmp-9-9-9/diff/bin")).unwrap();
    fs::create_dir_all(root.join(format!("layers/{}/diff", "1".repeat(64)))).unwrap();
    fs::create_dir_all(root.join("containers/half/upper")).unwrap();
    fs::write(
        root.join(format!("blobs/sha256/{}", "2".repeat(64))),
        b"orphan",
    )
    .unwrap();
    fs::remove_file(root.join("blobs/sha256").join(gone_id.hex())).unwrap();

    let s = ImageStore::open(d.path()).unwrap();
    assert!(!s.repairs().is_empty());
    let list = s.list(true);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, keep.id);
    assert_eq!(s.resolve("gone").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(s.container_layers(), vec!["ok".to_string()]);
    let leftovers: Vec<String> = ["blobs/sha256", "layers", "containers", "."]
        .iter()
        .flat_map(|sub| fs::read_dir(root.join(sub)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.contains(TMP_MARKER) || n == "half" || n.starts_with("1111") || n.starts_with("2222")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Only the kept image's layer is left (the other one was unreferenced).
    assert_eq!(
        s.layers_in_use(),
        vec![(
            chain_ids(
                &s.config(&Digest::parse(&keep.id).unwrap())
                    .unwrap()
                    .rootfs
                    .diff_ids
            )[0]
            .clone(),
            true
        )]
    );
    drop(s);
    let s2 = ImageStore::open(d.path()).unwrap();
    assert!(s2.repairs().is_empty(), "{:?}", s2.repairs());
}

#[test]
fn concurrent_imports() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let tar = rootfs_tar(if i % 2 == 0 { "even" } else { "odd" });
                s.import(
                    &tar[..],
                    Some(&format!("img{i}")),
                    &ImportOptions::default(),
                )
                .unwrap()
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(s.list(false).len(), 4);
    assert_eq!(s.layers_in_use().len(), 2);
    let leftovers = fs::read_dir(s.root().join("layers")).unwrap().count();
    assert_eq!(leftovers, 2);
}

/// Root only: mounts an overlay of a container layer over an imported busybox layer.
#[test]
fn overlay_mount_over_imported_busybox() {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(busybox) = busybox else {
        eprintln!("skipping: busybox not installed");
        return;
    };
    let (d, s) = store();
    let bin = fs::read(busybox).unwrap();
    let tar = TarMaker::new()
        .dir("bin/")
        .file_mode("bin/busybox", &bin, 0o755, 0)
        .symlink("bin/sh", "busybox")
        .symlink("bin/cat", "busybox")
        .dir("etc/")
        .file("etc/motd", b"from the image\n")
        .file("etc/remove-me", b"x\n")
        .build();
    let sum = s
        .import(&tar[..], Some("busybox:local"), &ImportOptions::default())
        .unwrap();
    let m = s
        .prepare_container_layer("ovl1", &Digest::parse(&sum.id).unwrap())
        .unwrap();
    let merged = d.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &m.overlay_options()])
        .arg(&merged)
        .status();
    if !st.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("skipping: cannot mount overlay here ({st:?})");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            fs::read_to_string(merged.join("etc/motd")).unwrap(),
            "from the image\n"
        );
        let out = Command::new("chroot")
            .arg(&merged)
            .args([
                "/bin/sh",
                "-c",
                "cat /etc/motd; echo hi > /etc/new; rm /etc/remove-me",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from the image\n");
    });
    let _ = Command::new("umount").arg(&merged).status();
    result.unwrap();
    // Writes landed in the upper dir; the image layer is untouched.
    assert_eq!(fs::read_to_string(m.upper.join("etc/new")).unwrap(), "hi\n");
    assert!(m.lowers[0].join("etc/remove-me").exists());
    s.remove_container_layer("ovl1").unwrap();
    assert!(!m.upper.exists());
}

#[test]
fn one_process_owns_a_store() {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    let e = ImageStore::open(d.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    drop(s);
    ImageStore::open(d.path()).unwrap();
}

#[test]
fn history_and_prune() {
    let (_d, s) = store();
    let id = s.ensure_hello_world().unwrap();
    let h = s.history("hello-world").unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].id, id.to_string());
    assert_eq!(h[0].tags, vec!["hello-world:latest"]);
    assert_eq!(h[0].created_by, "CMD [\"/hello\"]");
    assert_eq!(h[0].size, 0);
    assert_eq!(h[1].id, "<missing>");
    assert!(h[1].size > 1000);
    let json = serde_json::to_value(&h[0]).unwrap();
    assert!(json.get("CreatedBy").is_some());

    let dangling = s
        .import(&rootfs_tar("d")[..], None, &ImportOptions::default())
        .unwrap();
    let used = s
        .import(&rootfs_tar("u")[..], None, &ImportOptions::default())
        .unwrap();
    let used_id = used.id.clone();
    let in_use = move |i: &ImageId| {
        (i.as_str() == used_id).then(|| ImageUser {
            container_id: "c".into(),
            running: false,
        })
    };
    let (items, reclaimed) = s.prune(false, &in_use).unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], DeleteItem::Deleted(dangling.id.clone()));
    assert_eq!(reclaimed, 7 + 20);
    assert_eq!(s.list(true).len(), 2);
    let (items, _) = s.prune(true, &in_use).unwrap();
    assert_eq!(items[0], DeleteItem::Untagged("hello-world:latest".into()));
    assert_eq!(s.list(true).len(), 1);
    assert_eq!(s.list(true)[0].id, used.id);
}

/// Imports a tar written by GNU tar (pax, long names, hard links, fifo, sparse file, xattrs, setuid) and
/// compares the unpacked tree with the source.
#[test]
fn gnu_tar_round_trip() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if Command::new("tar").arg("--version").output().is_err() {
        eprintln!("skipping: no tar");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    let long = "l".repeat(150);
    fs::create_dir_all(src.join("a/b").join(&long)).unwrap();
    fs::write(src.join("a/b").join(&long).join("file"), b"deep").unwrap();
    fs::write(src.join("a/suid"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::lchown(src.join("a/suid"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(src.join("a/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(src.join("a/suid"), src.join("a/suid-link")).unwrap();
    std::os::unix::fs::symlink("../a/suid", src.join("a/b/sym")).unwrap();
    nix::unistd::mkfifo(
        &src.join("a/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let sparse = fs::File::create(src.join("a/sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"end", (8 << 20) - 3).unwrap();
    drop(sparse);
    xattr::set(src.join("a/suid"), "user.berth", b"yes").unwrap();
    let tar_path = d.path().join("rootfs.tar");
    let st = Command::new("tar")
        .args([
            "--format=pax",
            "--xattrs",
            "--xattrs-include=user.*",
            "--sparse",
            "-C",
        ])
        .arg(&src)
        .arg("-cf")
        .arg(&tar_path)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let s = ImageStore::open(&d.path().join("root")).unwrap();
    let tar = fs::File::open(&tar_path).unwrap();
    s.import(tar, Some("gnu"), &ImportOptions::default())
        .unwrap();
    let det = s.inspect("gnu").unwrap();
    let l = PathBuf::from(&det.graph_driver.data["UpperDir"]);
    assert_eq!(
        fs::read(l.join("a/b").join(&long).join("file")).unwrap(),
        b"deep"
    );
    let m = fs::metadata(l.join("a/suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.ino(), fs::metadata(l.join("a/suid-link")).unwrap().ino());
    assert_eq!(
        fs::read_link(l.join("a/b/sym")).unwrap(),
        PathBuf::from("../a/suid")
    );
    assert!(
        fs::symlink_metadata(l.join("a/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        fs::read(l.join("a/sparse")).unwrap(),
        fs::read(src.join("a/sparse")).unwrap()
    );
    assert_eq!(
        xattr::get(l.join("a/suid"), "user.berth").unwrap(),
        Some(b"yes".to_vec())
    );
    assert_eq!(
        fs::metadata(l.join("a")).unwrap().mtime(),
        fs::metadata(src.join("a")).unwrap().mtime()
    );
}

#[test]
fn commit_a_container_layer() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use std::os::unix::fs::FileTypeExt;
    let (_d, s) = store();
    let base = s
        .import(
            &rootfs_tar("base")[..],
            Some("base"),
            &ImportOptions {
                changes: vec!["CMD [\"/bin/tool\"]".into()],
                ..Default::default()
            },
        )
        .unwrap();
    let base_id = Digest::parse(&base.id).unwrap();
    let m = s.prepare_container_layer("c1", &base_id).unwrap();
    // What a container would have done: add a file, delete one.
    fs::create_dir(m.upper.join("etc")).unwrap();
    fs::write(m.upper.join("etc/added"), b"added\n").unwrap();
    mknod(
        &m.upper.join("etc/os-release"),
        SFlag::S_IFCHR,
        Mode::empty(),
        makedev(0, 0),
    )
    .unwrap();
    let opts = CommitOptions {
        changes: vec!["ENV X=1".into()],
        comment: Some("my change".into()),
        author: Some("me".into()),
        created_by: Some("/bin/sh -c touch".into()),
        ..Default::default()
    };
    let sum = s.commit("c1", Some("derived:v1"), &opts).unwrap();
    assert_eq!(sum.repo_tags, vec!["derived:v1"]);
    assert_eq!(sum.parent_id, base.id);
    let det = s.inspect("derived:v1").unwrap();
    assert_eq!(det.root_fs.layers.len(), 2);
    assert_eq!(det.author, "me");
    assert_eq!(det.comment, "my change");
    let cfg = det.config.unwrap();
    assert_eq!(cfg.cmd.unwrap(), vec!["/bin/tool"]);
    assert_eq!(cfg.env, vec!["X=1"]);
    assert_eq!(det.graph_driver.data["LowerDir"].split(':').count(), 1);
    let top = PathBuf::from(&det.graph_driver.data["UpperDir"]);
    assert_eq!(fs::read(top.join("etc/added")).unwrap(), b"added\n");
    assert!(
        fs::symlink_metadata(top.join("etc/os-release"))
            .unwrap()
            .file_type()
            .is_char_device()
    );
    let hist = s.history("derived:v1").unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0].created_by, "/bin/sh -c touch");
    assert_eq!(hist[0].size, 6);
    // A container over the derived image gets both layers, topmost first.
    let id2 = Digest::parse(&sum.id).unwrap();
    let m2 = s.prepare_container_layer("c2", &id2).unwrap();
    assert_eq!(m2.lowers.len(), 2);
    assert_eq!(m2.lowers[0], top);
    // The base can't be deleted by ID while it has a child; untagging it is fine.
    let e = s.remove(&base.id, true, false, &no_users).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
            base_id.short()
        )
    );
    assert_eq!(
        s.remove("base", false, false, &no_users).unwrap(),
        vec![DeleteItem::Untagged("base:latest".into())]
    );
    // The untagged parent is hidden from the default list.
    assert_eq!(s.list(false).len(), 1);
    assert_eq!(s.list(true).len(), 2);
    // Deleting the child with pruning removes the untagged parent too; layers used by c1/c2 stay.
    s.remove_container_layer("c2").unwrap();
    let r = s.remove("derived:v1", false, true, &no_users).unwrap();
    assert!(r.contains(&DeleteItem::Deleted(sum.id.clone())), "{r:?}");
    assert!(r.contains(&DeleteItem::Deleted(base.id.clone())), "{r:?}");
    assert!(s.list(true).is_empty());
    assert_eq!(s.layers_in_use().len(), 1);
    s.remove_container_layer("c1").unwrap();
    assert!(s.layers_in_use().is_empty());
    assert_eq!(
        s.commit("nope", None, &CommitOptions::default())
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn add_image_from_config_and_layers() {
    let (_d, s) = store();
    let a = TarMaker::new()
        .dir("etc/")
        .file("etc/a", b"a")
        .file("etc/b", b"b")
        .build();
    let b = TarMaker::new()
        .file("etc/.wh.a", b"")
        .file("etc/c", b"c")
        .build();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b).unwrap();
    let b_gz = gz.finish().unwrap();
    let (da, db) = (Digest::of_bytes(&a), Digest::of_bytes(&b));
    // Key order and spacing unlike ours: the ID must be the digest of these exact bytes.
    let config = format!(
        r#"{{"os": "linux", "architecture": "amd64", "rootfs": {{"type": "layers", "diff_ids": ["{da}", "{db}"]}}, "config": {{"Cmd": ["sh"]}}, "created": "2024-01-02T03:04:05.123Z"}}"#
    );
    let manifest = Digest::of_bytes(b"manifest");
    let mut opened = Vec::new();
    let sum = s
        .add_image(
            config.as_bytes(),
            &mut |i| {
                opened.push(i);
                Ok(if i == 0 {
                    Box::new(std::io::Cursor::new(a.clone()))
                } else {
                    Box::new(std::io::Cursor::new(b_gz.clone()))
                })
            },
            &["x:1", &format!("x@{manifest}")],
        )
        .unwrap();
    assert_eq!(opened, vec![0, 1]);
    assert_eq!(sum.id, Digest::of_bytes(config.as_bytes()).to_string());
    assert_eq!(sum.repo_tags, vec!["x:1"]);
    assert_eq!(sum.repo_digests, vec![format!("x@{manifest}")]);
    assert_eq!(sum.created, 1_704_164_645);
    assert_eq!(
        s.config_bytes(&Digest::parse(&sum.id).unwrap()).unwrap(),
        config.as_bytes()
    );
    assert_eq!(
        s.resolve(&format!("x@{manifest}")).unwrap().as_str(),
        sum.id
    );
    let m = s
        .prepare_container_layer("c", &Digest::parse(&sum.id).unwrap())
        .unwrap();
    assert_eq!(m.lowers.len(), 2);
    assert!(m.lowers[0].join("etc/c").exists());
    assert!(m.lowers[1].join("etc/a").exists());
    let blobs = s.layer_blobs(&Digest::parse(&sum.id).unwrap()).unwrap();
    assert_eq!(blobs[1].media_type, MEDIA_TYPE_LAYER_GZIP);
    assert_eq!(blobs[1].digest, Digest::of_bytes(&b_gz));

    // A second image sharing the first layer: only the new layer is opened.
    let c = TarMaker::new().file("etc/d", b"d").build();
    let dc = Digest::of_bytes(&c);
    let config2 = format!(
        r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["{da}","{dc}"]}}}}"#
    );
    let mut opened = Vec::new();
    s.add_image(
        config2.as_bytes(),
        &mut |i| {
            opened.push(i);
            Ok(Box::new(std::io::Cursor::new(c.clone())))
        },
        &["y"],
    )
    .unwrap();
    assert_eq!(opened, vec![1]);
    assert!(s.has_layer(&chain_ids(std::slice::from_ref(&da))[0]));

    // A layer that does not match the config is refused and leaves nothing behind.
    let before = s.layers_in_use().len();
    let config3 = format!(
        r#"{{"os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of_bytes(b"other")
    );
    let e = s
        .add_image(
            config3.as_bytes(),
            &mut |_| Ok(Box::new(std::io::Cursor::new(c.clone()))),
            &["z"],
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("diff ID mismatch"), "{e}");
    assert_eq!(s.layers_in_use().len(), before);
    assert!(fs::read_dir(s.root().join("layers")).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains(TMP_MARKER)
    }));
    assert_eq!(
        s.add_image(b"{", &mut |_| unreachable!(), &[])
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
}

/// A reader that hands out one byte per call.
struct Trickle<R>(R);

impl<R: std::io::Read> std::io::Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn slow_gzip_stream_is_detected() {
    let (_d, s) = store();
    let tar = rootfs_tar("slow");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let sum = s
        .import(Trickle(&gz[..]), Some("slow"), &ImportOptions::default())
        .unwrap();
    let id = Digest::parse(&sum.id).unwrap();
    assert_eq!(
        s.config(&id).unwrap().rootfs.diff_ids[0],
        Digest::of_bytes(&tar)
    );
    assert_eq!(s.layer_blobs(&id).unwrap()[0].digest, Digest::of_bytes(&gz));
}

#[test]
fn a_crash_mid_pull_keeps_verified_layers_for_the_next_attempt() {
    let d = tempfile::tempdir().unwrap();
    let a = TarMaker::new().file("a", b"a").build();
    let b = TarMaker::new().file("b", b"b").build();
    let config = format!(
        r#"{{"os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        Digest::of_bytes(&a),
        Digest::of_bytes(&b)
    );
    let chains = chain_ids(&[Digest::of_bytes(&a), Digest::of_bytes(&b)]);
    {
        let s = ImageStore::open(d.path()).unwrap();
        let p = s.begin_image(config.as_bytes(), &["x:1"]).unwrap();
        s.unpack_pending_layer(&p, 0, &a[..], None).unwrap();
        assert!(s.has_layer(&chains[0]));
        // The process dies here: nothing runs the pending image's drop.
        std::mem::forget(p);
    }
    let s = ImageStore::open(d.path()).unwrap();
    assert!(s.list(true).is_empty(), "no half image");
    assert!(s.has_layer(&chains[0]), "{:?}", s.repairs());
    let p = s.begin_image(config.as_bytes(), &["x:1"]).unwrap();
    assert_eq!(p.missing_layers(), &[1]);
    s.unpack_pending_layer(&p, 1, &b[..], None).unwrap();
    s.finish_image(p, &[]).unwrap();
    assert_eq!(fs::read_dir(s.root().join("leases")).unwrap().count(), 0);
    drop(s);
    let s = ImageStore::open(d.path()).unwrap();
    assert!(s.repairs().is_empty(), "{:?}", s.repairs());
    assert_eq!(names(&s, false), vec![vec!["x:1".to_string()]]);

    // An abandoned attempt takes its layers with it.
    let c = TarMaker::new().file("c", b"c").build();
    let config2 = format!(
        r#"{{"os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        Digest::of_bytes(&c),
        Digest::of_bytes(b"missing")
    );
    let p = s.begin_image(config2.as_bytes(), &[]).unwrap();
    s.unpack_pending_layer(&p, 0, &c[..], None).unwrap();
    let c_chain = chain_ids(&[Digest::of_bytes(&c)]).remove(0);
    assert!(s.has_layer(&c_chain));
    s.abandon_image(p).unwrap();
    assert!(!s.has_layer(&c_chain));
    assert_eq!(fs::read_dir(s.root().join("leases")).unwrap().count(), 0);
}

/// A crash between the writes of `images.json` and `repositories.json` (commit, pull, load): the
/// next open finds the new image with its tags, never dangling.
#[test]
fn a_crash_between_image_and_tag_leaves_no_dangling_image() {
    let d = tempfile::tempdir().unwrap();
    // Runs `op` in a store that dies before it writes `repositories.json`; returns the reopened store.
    let crash_in = |op: &dyn Fn(&ImageStore)| {
        let s = ImageStore::open(d.path()).unwrap();
        CRASH_BEFORE_SAVE_REFS.set(true);
        op(&s);
        CRASH_BEFORE_SAVE_REFS.set(false);
        drop(s);
        ImageStore::open(d.path()).unwrap()
    };
    let tags = |s: &ImageStore| {
        let mut t = names(s, true);
        t.sort();
        t
    };
    let s = ImageStore::open(d.path()).unwrap();
    let base = s
        .import(
            &rootfs_tar("base")[..],
            Some("base"),
            &ImportOptions::default(),
        )
        .unwrap();
    let m = s
        .prepare_container_layer("c1", &Digest::parse(&base.id).unwrap())
        .unwrap();
    fs::write(m.upper.join("added"), b"added\n").unwrap();
    drop(s);

    let s = crash_in(&|s| {
        let committed = s.commit("c1", Some("snap:1"), &CommitOptions::default());
        assert!(committed.is_err(), "{committed:?}");
    });
    assert_eq!(
        tags(&s),
        [vec!["base:latest".to_string()], vec!["snap:1".to_string()]],
        "{:?}",
        s.repairs()
    );
    drop(s);

    let a = TarMaker::new().file("a", b"a").build();
    let config = format!(
        r#"{{"os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of_bytes(&a)
    );
    let manifest = br#"{"schemaVersion":2}"#;
    let s = crash_in(&|s| {
        let p = s
            .begin_image(config.as_bytes(), &["pulled:1", "pulled:2"])
            .unwrap();
        s.unpack_pending_layer(&p, 0, &a[..], None).unwrap();
        let pulled = s.finish_image(p, &[manifest]);
        assert!(pulled.is_err(), "{pulled:?}");
    });
    assert_eq!(
        tags(&s),
        [
            vec!["base:latest".to_string()],
            vec!["pulled:1".to_string(), "pulled:2".to_string()],
            vec!["snap:1".to_string()],
        ],
        "{:?}",
        s.repairs()
    );
    let pulled = s.resolve("pulled:1").unwrap();
    assert_eq!(
        s.manifests(&pulled).unwrap(),
        vec![Digest::of_bytes(manifest)]
    );
    assert!(
        s.repairs().iter().any(|r| r.contains("pulled:2")),
        "{:?}",
        s.repairs()
    );
    drop(s);
    let s = ImageStore::open(d.path()).unwrap();
    assert!(s.repairs().is_empty(), "{:?}", s.repairs());
}
