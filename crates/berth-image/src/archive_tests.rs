use std::io::Write;
use std::process::Command;

use super::*;
use crate::ErrorKind;
use crate::unpack::tests::TarMaker;

fn store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    (d, s)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

/// Two images: `one:1` (imported, plain layer) and `two:2`/`two:latest` (two layers, the top gzip).
fn fill(s: &ImageStore) -> (ImageId, ImageId) {
    let base = TarMaker::new()
        .dir("etc/")
        .file("etc/a", b"a")
        .symlink("etc/l", "a")
        .build();
    let one = s
        .import(&base[..], Some("one:1"), &Default::default())
        .unwrap();
    let top = TarMaker::new()
        .file("etc/.wh.a", b"")
        .file("etc/c", b"c")
        .build();
    let (da, db) = (Digest::of_bytes(&base), Digest::of_bytes(&top));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{da}","{db}"]}},"config":{{"Cmd":["sh"]}}}}"#
    );
    let top_gz = gzip(&top);
    let two = s
        .add_image(
            config.as_bytes(),
            &mut |i| {
                assert_eq!(i, 1, "the base layer is shared");
                Ok(Box::new(std::io::Cursor::new(top_gz.clone())))
            },
            &["two:2", "two:latest"],
        )
        .unwrap();
    (
        Digest::parse(&one.id).unwrap(),
        Digest::parse(&two.id).unwrap(),
    )
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

fn no_temp_left(s: &ImageStore) {
    for e in fs::read_dir(s.root()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains(crate::fsutil::TMP_MARKER), "left behind: {n}");
    }
}

#[test]
fn save_writes_docker_25_layout_and_load_round_trips() {
    let (_d, s) = store();
    let (one, two) = fill(&s);
    let mut out = Vec::new();
    s.save(&["one:1", "two"], &mut out).unwrap();
    let names = tar_names(&out);
    for n in ["index.json", "manifest.json", "oci-layout", "repositories"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    assert!(names.contains(&format!("blobs/sha256/{}", two.hex())));
    // manifest.json as docker writes it.
    let mut ar = tar::Archive::new(&out[..]);
    let mut manifest = String::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("manifest.json") {
            e.read_to_string(&mut manifest).unwrap();
        }
    }
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m[0]["Config"], format!("blobs/sha256/{}", one.hex()));
    assert_eq!(m[0]["RepoTags"], serde_json::json!(["one:1"]));
    assert_eq!(m[1]["RepoTags"], serde_json::json!(["two:2", "two:latest"]));
    assert_eq!(m[1]["Layers"].as_array().unwrap().len(), 2);

    let (_d2, s2) = store();
    let seen = std::sync::Mutex::new(Vec::new());
    let loaded = s2
        .load_with_progress(&out[..], &|p| seen.lock().unwrap().push(p.clone()))
        .unwrap();
    let seen = seen.into_inner().unwrap();
    // Two layers unpacked (the base is shared by both images), each ending with current == total.
    let ends: Vec<&LoadProgress> = seen.iter().filter(|p| p.current == p.total).collect();
    assert_eq!(ends.len(), 2, "{seen:?}");
    let chains = crate::digest::chain_ids(&s.config(&two).unwrap().rootfs.diff_ids);
    assert_eq!(ends[0].id, chains[0].short());
    assert_eq!(ends[1].id, chains[1].short());
    let shown: Vec<String> = loaded.iter().map(|l| l.to_string()).collect();
    assert_eq!(
        shown,
        vec![
            "Loaded image: one:1",
            "Loaded image: two:2",
            "Loaded image: two:latest"
        ]
    );
    assert_eq!(s2.resolve("one:1").unwrap(), one);
    assert_eq!(s2.resolve("two:2").unwrap(), two);
    assert_eq!(s2.layer_blobs(&two).unwrap(), s.layer_blobs(&two).unwrap());
    no_temp_left(&s2);

    // Saving by ID: no tags, "Loaded image ID".
    let mut out = Vec::new();
    s.save(&[two.short()], &mut out).unwrap();
    let (_d3, s3) = store();
    assert_eq!(
        s3.load(&out[..]).unwrap(),
        vec![LoadedImage::Id(two.clone())]
    );
    assert_eq!(
        s3.load(&out[..]).unwrap()[0].to_string(),
        format!("Loaded image ID: {two}")
    );
    // A gzip-compressed archive loads too.
    let (_d4, s4) = store();
    s4.load(&gzip(&out)[..]).unwrap();
    assert!(s4.config(&two).is_ok());

    let e = s.save(&["nope:1"], &mut Vec::new()).unwrap_err();
    assert_eq!(e.to_string(), "No such image: nope:1");
}

#[test]
fn load_refuses_bad_layers_and_leaves_nothing() {
    let (_d, s) = store();
    let (_, two) = fill(&s);
    let mut out = Vec::new();
    s.save(&["two:2"], &mut out).unwrap();
    // Rewrite the archive with a corrupted layer: same name, other content.
    let mut ar = tar::Archive::new(&out[..]);
    let mut b = tar::Builder::new(Vec::new());
    let top = s.layer_blobs(&two).unwrap()[1].digest.clone();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if e.path().unwrap().ends_with(top.hex()) {
            data = gzip(&TarMaker::new().file("evil", b"x").build());
            h.set_size(data.len() as u64);
            h.set_cksum();
        }
        b.append(&h, &data[..]).unwrap();
    }
    let bad = b.into_inner().unwrap();
    let (_d2, s2) = store();
    let e = s2.load(&bad[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(s2.list(true).is_empty());
    assert!(s2.layers_in_use().is_empty());
    no_temp_left(&s2);
    let e = s2.load(&b"not a tar at all"[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data, link) in entries {
        let mut h = tar::Header::new_gnu();
        // Write the name bytes directly: `set_path` refuses `..`.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn hostile_archives_write_nothing_outside() {
    let (d, s) = store();
    let outside = d.path().join("escaped");
    let dotdot = raw_tar(&[("../../../escaped", tar::EntryType::Regular, b"x", None)]);
    let e = s.load(&dotdot[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("leaves the archive"), "{e}");
    assert!(!outside.exists());

    // A symlink to a directory outside, then a file through it: the file lands inside the spool.
    let target = d.path().display().to_string();
    let via_link = raw_tar(&[
        ("x", tar::EntryType::Symlink, b"", Some(&target)),
        ("x/escaped", tar::EntryType::Regular, b"x", None),
        (
            "manifest.json",
            tar::EntryType::Regular,
            br#"[{"Config":"x/escaped","RepoTags":null,"Layers":[]}]"#,
            None,
        ),
    ]);
    let e = s.load(&via_link[..]).unwrap_err();
    assert!(!outside.exists());
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    // A manifest pointing through a link at a host file: resolved inside the archive, not found.
    let to_host = raw_tar(&[
        ("etc", tar::EntryType::Symlink, b"", Some("/etc")),
        (
            "manifest.json",
            tar::EntryType::Regular,
            br#"[{"Config":"etc/hostname","RepoTags":null,"Layers":["etc/passwd"]}]"#,
            None,
        ),
    ]);
    let e = s.load(&to_host[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let to_host = raw_tar(&[
        ("x", tar::EntryType::Symlink, b"", Some("/etc")),
        (
            "manifest.json",
            tar::EntryType::Regular,
            br#"[{"Config":"x/hostname","RepoTags":null,"Layers":["x/passwd"]}]"#,
            None,
        ),
    ]);
    let e = s.load(&to_host[..]).unwrap_err();
    assert!(
        e.to_string().contains("etc/hostname not found")
            || e.to_string().contains("x/hostname not found"),
        "{e}"
    );
    let climbing = raw_tar(&[("a", tar::EntryType::Symlink, b"", Some("../../etc"))]);
    assert!(s.load(&climbing[..]).is_err());
    no_temp_left(&s);
    assert!(s.list(true).is_empty());
}

#[test]
fn open_removes_a_spool_left_by_a_crash() {
    let d = tempfile::tempdir().unwrap();
    {
        let s = ImageStore::open(d.path()).unwrap();
        let spool = temp_sibling(&s.root().join("load"));
        fs::create_dir_all(spool.join("blobs/sha256")).unwrap();
        fs::write(spool.join("manifest.json"), b"[]").unwrap();
    }
    let s = ImageStore::open(d.path()).unwrap();
    no_temp_left(&s);
    assert!(
        s.repairs().iter().any(|r| r.contains("load")),
        "{:?}",
        s.repairs()
    );
}

fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn loads_what_skopeo_writes() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipping: skopeo not installed");
        return;
    }
    let (d, s) = store();
    let (_, two) = fill(&s);
    let saved = d.path().join("saved.tar");
    s.save(&["two:2"], File::create(&saved).unwrap()).unwrap();
    let dir = d.path().join("dir");
    // skopeo reads our archive...
    skopeo(&[
        "copy",
        &format!("docker-archive:{}", saved.display()),
        &format!("dir:{}", dir.display()),
    ]);
    // ...and writes the old docker-archive form, an OCI archive, and one with gzip layers.
    let old = d.path().join("old.tar");
    skopeo(&[
        "copy",
        &format!("dir:{}", dir.display()),
        &format!("docker-archive:{}:team/app:old", old.display()),
    ]);
    let oci = d.path().join("oci.tar");
    skopeo(&[
        "copy",
        &format!("dir:{}", dir.display()),
        &format!("oci-archive:{}:team/app:oci", oci.display()),
    ]);
    let ocigz = d.path().join("ocigz.tar");
    skopeo(&[
        "copy",
        "--dest-compress",
        "--dest-compress-format",
        "gzip",
        &format!("dir:{}", dir.display()),
        &format!("oci-archive:{}", ocigz.display()),
    ]);
    let ocizstd = d.path().join("ocizstd.tar");
    skopeo(&[
        "copy",
        "--dest-compress",
        "--dest-compress-format",
        "zstd",
        &format!("dir:{}", dir.display()),
        &format!("oci-archive:{}", ocizstd.display()),
    ]);
    for (file, want) in [
        (&old, Some("team/app:old")),
        (&oci, Some("team/app:oci")),
        (&ocigz, None),
        (&ocizstd, None),
    ] {
        let (_d2, s2) = store();
        let loaded = s2.load(File::open(file).unwrap()).unwrap();
        assert_eq!(s2.list(true).len(), 1, "{}", file.display());
        let id = Digest::parse(&s2.list(true)[0].id).unwrap();
        // skopeo rewrites the config when it converts to OCI (so the ID changes); the layers stay.
        if file == &old {
            assert_eq!(id, two);
        }
        assert_eq!(
            s2.config(&id).unwrap().rootfs.diff_ids,
            s.config(&two).unwrap().rootfs.diff_ids
        );
        match want {
            Some(t) => assert_eq!(loaded, vec![LoadedImage::Tagged(t.into())]),
            None => assert_eq!(loaded, vec![LoadedImage::Id(id.clone())]),
        }
        no_temp_left(&s2);
    }
}

#[test]
fn pending_image_layers_in_parallel_with_manifests_kept() {
    let d = tempfile::tempdir().unwrap();
    let a = TarMaker::new().file("a", b"a").build();
    let b = gzip(&TarMaker::new().file("b", b"b").build());
    let db = Digest::of_bytes(&TarMaker::new().file("b", b"b").build());
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{db}"]}}}}"#,
        Digest::of_bytes(&a)
    );
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let md = Digest::of_bytes(&manifest);
    let id;
    {
        let s = ImageStore::open(d.path()).unwrap();
        let p = s
            .begin_image(
                config.as_bytes(),
                &[
                    "reg.example:5000/app:1",
                    &format!("reg.example:5000/app@{md}"),
                ],
            )
            .unwrap();
        assert_eq!(p.missing_layers(), &[0, 1]);
        // A wrong blob digest is refused.
        let e = s
            .unpack_pending_layer(&p, 1, &b[..], Some(&Digest::of_bytes(b"x")))
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        std::thread::scope(|sc| {
            sc.spawn(|| s.unpack_pending_layer(&p, 0, &a[..], None).unwrap());
            sc.spawn(|| {
                s.unpack_pending_layer(&p, 1, &b[..], Some(&Digest::of_bytes(&b)))
                    .unwrap()
            });
        });
        assert!(s.list(true).is_empty(), "nothing visible before finish");
        let sum = s.finish_image(p, &[&manifest]).unwrap();
        assert_eq!(sum.repo_digests, vec![format!("reg.example:5000/app@{md}")]);
        id = Digest::parse(&sum.id).unwrap();
        let blob = s.layer_blobs(&id).unwrap()[1].clone();
        s.add_layer_source(&db, &blob, "reg.example:5000/app")
            .unwrap();
        // A dropped pending image leaves nothing.
        let p = s
            .begin_image(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#, &[])
            .unwrap();
        drop(p);
    }
    let s = ImageStore::open(d.path()).unwrap();
    assert!(s.repairs().is_empty(), "{:?}", s.repairs());
    assert_eq!(s.manifests(&id).unwrap(), vec![md.clone()]);
    assert_eq!(s.read_blob(&md).unwrap(), manifest);
    assert_eq!(
        s.layer_sources(&db)[0].repositories,
        vec!["reg.example:5000/app"]
    );
    // A push records a digest reference with its manifest.
    let pushed = br#"{"schemaVersion":2,"pushed":true}"#;
    let pd = Digest::of_bytes(pushed);
    s.add_repo_digest(&id, &format!("reg.example:5000/other@{pd}"), pushed)
        .unwrap();
    assert!(s.add_repo_digest(&id, &format!("x@{md}"), pushed).is_err());
    assert_eq!(s.inspect(id.as_str()).unwrap().repo_digests.len(), 2);
    let mut tar = Vec::new();
    s.open_layer_tar(&s.layer_blobs(&id).unwrap()[1].digest)
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(Digest::of_bytes(&tar), db);
    s.remove(id.as_str(), true, true, &|_| None).unwrap();
    assert!(s.read_blob(&md).is_err());
    assert!(s.read_blob(&pd).is_err());
}
