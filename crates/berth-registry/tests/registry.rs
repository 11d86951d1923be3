//! Pull and push against a real registry (Debian's `docker-registry`, distribution 2.8) on loopback:
//! each test starts its own registry on a free 127.0.0.1 port (killed on drop), and a bearer-token server
//! where needed; nothing leaves 127.0.0.1. Needs `apt-get install -y docker-registry skopeo
//! apache2-utils openssl`; without them the tests print "skipping" and pass.

mod common;

use std::sync::Arc;

use berth_image::ImageStore;
use berth_registry::{
    Credentials, ErrorKind, PullOptions, PushOptions, RegistryClient, RegistryConfig,
};
use common::*;

fn client() -> RegistryClient {
    RegistryClient::new(RegistryConfig::default()).unwrap()
}

fn skip() -> bool {
    for b in ["docker-registry", "skopeo", "htpasswd", "openssl"] {
        if !have(b) {
            eprintln!("skipping: {b} not installed");
            return true;
        }
    }
    false
}

fn empty_store() -> (tempfile::TempDir, Arc<ImageStore>) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path()).unwrap();
    (d, Arc::new(s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_anonymous_like_dockerd() {
    if skip() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let name = format!("{host}/team/app");
    let (_d, a) = busybox_store(&format!("{name}:base"));
    add_layer_on(
        &a,
        &format!("{name}:base"),
        &format!("{name}:1.2"),
        b"hello\n",
    );
    let c = client();
    let rec = Recorder::default();

    // Push.
    let pushed = c
        .push(
            a.clone(),
            &format!("{name}:1.2"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    let msgs = rec.take();
    let st = statuses(&msgs);
    assert_eq!(st[0], format!("The push refers to repository [{name}]"));
    assert!(
        has(&msgs, "Preparing") && has(&msgs, "Pushing") && has(&msgs, "Pushed"),
        "{st:?}"
    );
    assert_eq!(pushed.len(), 1);
    let digest = pushed[0].digest.clone();
    let last = st.last().unwrap();
    assert_eq!(
        last,
        &format!("1.2: digest: {digest} size: {}", pushed[0].size)
    );
    assert_eq!(msgs.last().unwrap().aux.as_ref().unwrap()["Tag"], "1.2");
    let pushing = msgs
        .iter()
        .find(|m| m.status.as_deref() == Some("Pushing") && m.progress.is_some())
        .unwrap();
    assert!(
        pushing.progress.as_ref().unwrap().starts_with('['),
        "{pushing:?}"
    );
    let id = a.resolve(&format!("{name}:1.2")).unwrap();
    assert_eq!(
        a.inspect(id.as_str()).unwrap().repo_digests,
        vec![format!("{name}@{digest}")]
    );

    // A second push skips every layer (the gzip digests were remembered).
    let again = c
        .push(
            a.clone(),
            &format!("{name}:1.2"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    let msgs = rec.take();
    assert_eq!(again[0].digest, digest);
    let exists = msgs
        .iter()
        .filter(|m| m.status.as_deref() == Some("Layer already exists"))
        .count();
    assert_eq!(exists, 2, "{:?}", statuses(&msgs));
    assert!(!has(&msgs, "Pushed"));

    // skopeo sees what we pushed.
    let insp = skopeo_inspect(&format!("{name}:1.2"), None);
    assert_eq!(insp["Digest"], digest.to_string());
    assert_eq!(insp["Layers"].as_array().unwrap().len(), 2);

    // Pull into a second store.
    let (_d2, b) = empty_store();
    let out = c
        .pull(
            b.clone(),
            &format!("{name}:1.2"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    let msgs = rec.take();
    let st = statuses(&msgs);
    assert_eq!(out.image_id, id);
    assert_eq!(out.digest, digest);
    assert!(!out.up_to_date);
    assert_eq!(msgs[0].status.as_deref(), Some("Pulling from team/app"));
    assert_eq!(msgs[0].id.as_deref(), Some("1.2"));
    assert!(msgs[0].progress_detail.is_none());
    for s in [
        "Pulling fs layer",
        "Verifying Checksum",
        "Download complete",
        "Extracting",
        "Pull complete",
    ] {
        assert!(has(&msgs, s), "{s} missing: {st:?}");
    }
    let ids = |status: &str| -> Vec<String> {
        msgs.iter()
            .filter(|m| m.status.as_deref() == Some(status))
            .filter_map(|m| m.id.clone())
            .collect()
    };
    assert_eq!(
        ids("Pull complete"),
        ids("Pulling fs layer"),
        "reported bottom first"
    );
    assert!(!has(&msgs, "Pushing"));
    let dl = msgs
        .iter()
        .find(|m| m.status.as_deref() == Some("Downloading"))
        .unwrap();
    assert!(dl.progress_detail.as_ref().unwrap().total.unwrap() > 0);
    assert_eq!(dl.id.as_ref().unwrap().len(), 12);
    assert_eq!(
        &st[st.len() - 2..],
        &[
            format!("Digest: {digest}"),
            format!("Status: Downloaded newer image for {name}:1.2")
        ]
    );
    let inspected = b.inspect(&format!("{name}:1.2")).unwrap();
    assert_eq!(inspected.repo_digests, vec![format!("{name}@{digest}")]);
    assert_eq!(inspected.root_fs.layers.len(), 2);
    // The manifest is kept and survives a reopen of the store.
    assert_eq!(b.manifests(&id).unwrap(), vec![digest.clone()]);

    // Pulling again: up to date.
    let out = c
        .pull(
            b.clone(),
            &format!("{name}:1.2"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    let msgs = rec.take();
    assert!(out.up_to_date);
    assert_eq!(
        statuses(&msgs).last().unwrap(),
        &format!("Status: Image is up to date for {name}:1.2")
    );
    assert_eq!(
        msgs.iter()
            .filter(|m| m.status.as_deref() == Some("Already exists"))
            .count(),
        2
    );

    // The base image shares its layer: "Already exists" for it, a download for nothing else.
    c.push(
        a.clone(),
        &format!("{name}:base"),
        &PushOptions::default(),
        rec.sink(),
    )
    .await
    .unwrap();
    rec.take();
    let (_d3, c3) = empty_store();
    c.pull(
        c3.clone(),
        &format!("{name}:base"),
        &PullOptions::default(),
        rec.sink(),
    )
    .await
    .unwrap();
    rec.take();
    c.pull(
        c3.clone(),
        &format!("{name}:1.2"),
        &PullOptions::default(),
        rec.sink(),
    )
    .await
    .unwrap();
    let msgs = rec.take();
    assert_eq!(
        msgs.iter()
            .filter(|m| m.status.as_deref() == Some("Already exists"))
            .count(),
        1
    );
    assert_eq!(
        msgs.iter()
            .filter(|m| m.status.as_deref() == Some("Pull complete"))
            .count(),
        1
    );
    assert_eq!(c3.resolve(&format!("{name}:1.2")).unwrap(), id);

    // By digest.
    let (_d4, d4) = empty_store();
    let out = c
        .pull(
            d4.clone(),
            &format!("{name}@{digest}"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    assert_eq!(out.image_id, id);
    assert_eq!(rec.take()[0].id.as_deref(), Some(digest.as_str()));
    assert!(d4.inspect(id.as_str()).unwrap().repo_tags.is_empty());

    // Cross-repository mount: B pulled from team/app, pushes to team/other.
    b.tag(&format!("{name}:1.2"), &format!("{host}/team/other:7"))
        .unwrap();
    c.push(
        b.clone(),
        &format!("{host}/team/other:7"),
        &PushOptions::default(),
        rec.sink(),
    )
    .await
    .unwrap();
    let msgs = rec.take();
    assert_eq!(
        msgs.iter()
            .filter(|m| m.status.as_deref() == Some("Mounted from team/app"))
            .count(),
        2,
        "{:?}",
        statuses(&msgs)
    );

    // Errors as dockerd words them.
    let e = c
        .pull(
            b.clone(),
            &format!("{name}:nope"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        e.to_string(),
        format!("manifest for {name}:nope not found: manifest unknown: manifest unknown")
    );
    let e = c
        .pull(
            b.clone(),
            &format!("{host}/nobody/here"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = c
        .push(
            b.clone(),
            &format!("{host}/team/missing:1"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("An image does not exist locally with the tag: {host}/team/missing")
    );
    drop(reg);
    let e = c
        .pull(
            b.clone(),
            &format!("{name}:1.2"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("Get \"http://{host}/v2/\"")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_htpasswd() {
    if skip() {
        return;
    }
    let reg = Registry::start(Auth::Htpasswd {
        user: "berth".into(),
        password: "s3cret".into(),
    });
    let name = format!("{}/team/app", reg.host());
    let (_d, a) = busybox_store(&format!("{name}:1"));
    let c = client();
    let rec = Recorder::default();
    let e = c
        .push(
            a.clone(),
            &format!("{name}:1"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert_eq!(e.to_string(), "unauthorized: authentication required");
    let wrong = PushOptions {
        credentials: Some(Credentials::basic("berth", "wrong")),
    };
    let e = c
        .push(a.clone(), &format!("{name}:1"), &wrong, rec.sink())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    let good = Credentials::basic("berth", "s3cret");
    let pushed = c
        .push(
            a.clone(),
            &format!("{name}:1"),
            &PushOptions {
                credentials: Some(good.clone()),
            },
            rec.sink(),
        )
        .await
        .unwrap();
    let insp = skopeo_inspect(&format!("{name}:1"), Some("berth:s3cret"));
    assert_eq!(insp["Digest"], pushed[0].digest.to_string());
    let (_d2, b) = empty_store();
    let e = c
        .pull(
            b.clone(),
            &format!("{name}:1"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    let out = c
        .pull(
            b.clone(),
            &format!("{name}:1"),
            &PullOptions {
                credentials: Some(good),
                ..Default::default()
            },
            rec.sink(),
        )
        .await
        .unwrap();
    assert_eq!(out.image_id, a.resolve(&format!("{name}:1")).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_the_challenge() {
    if skip() {
        return;
    }
    let keys = Arc::new(TokenKeys::new());
    let (realm, log) = token_server(keys.clone(), "berth", "t0ken").await;
    let reg = Registry::start(Auth::Token {
        realm,
        cert: keys.cert(),
    });
    let host = reg.host();
    let name = format!("{host}/team/app");
    let (_d, a) = busybox_store(&format!("{name}:1"));
    let c = client();
    let rec = Recorder::default();
    let creds = Credentials::basic("berth", "t0ken");
    let pushed = c
        .push(
            a.clone(),
            &format!("{name}:1"),
            &PushOptions {
                credentials: Some(creds.clone()),
            },
            rec.sink(),
        )
        .await
        .unwrap();
    {
        let log = log.lock().unwrap();
        let r = log.last().unwrap();
        assert_eq!(r.basic.as_deref(), Some("berth:t0ken"));
        assert_eq!(r.service.as_deref(), Some("berth-test"));
        assert!(
            r.scopes
                .contains(&"repository:team/app:pull,push".to_string()),
            "{r:?}"
        );
    }
    // Anonymous: the token grants nothing, so the registry refuses.
    let (_d2, b) = empty_store();
    let e = c
        .pull(
            b.clone(),
            &format!("{name}:1"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "pull access denied for {name}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"
        )
    );
    // Wrong password: the token server refuses.
    let e = c
        .pull(
            b.clone(),
            &format!("{name}:1"),
            &PullOptions {
                credentials: Some(Credentials::basic("berth", "nope")),
                ..Default::default()
            },
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    let out = c
        .pull(
            b.clone(),
            &format!("{name}:1"),
            &PullOptions {
                credentials: Some(creds.clone()),
                ..Default::default()
            },
            rec.sink(),
        )
        .await
        .unwrap();
    assert_eq!(out.digest, pushed[0].digest);
    assert_eq!(out.image_id, a.resolve(&format!("{name}:1")).unwrap());
    // A mount from team/app into team/other asks for pull on team/app too.
    a.tag(&format!("{name}:1"), &format!("{host}/team/other:1"))
        .unwrap();
    rec.take();
    c.push(
        a.clone(),
        &format!("{host}/team/other:1"),
        &PushOptions {
            credentials: Some(creds),
        },
        rec.sink(),
    )
    .await
    .unwrap();
    let msgs = rec.take();
    assert!(has(&msgs, "Mounted from team/app"), "{:?}", statuses(&msgs));
    let log = log.lock().unwrap();
    assert!(
        log.last()
            .unwrap()
            .scopes
            .contains(&"repository:team/app:pull".to_string())
    );
}

/// Names under `dir` (recursively, two levels) that look like temporary debris.
fn debris(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in [".", "blobs/sha256", "layers"] {
        if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.contains(".tmp-") {
                    out.push(format!("{sub}/{n}"));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_waits_verifies_and_checks_the_platform() {
    if skip() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let name = format!("{}/team/app", reg.host());
    let (_d, a) = busybox_store(&format!("{name}:base"));
    add_layer_on(&a, &format!("{name}:base"), &format!("{name}:2"), b"two\n");
    let rec = Recorder::default();
    let c = client();
    let pushed = c
        .push(
            a.clone(),
            &format!("{name}:2"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    rec.take();

    // A repository without tag pushes (and pulls) all its tags.
    let all = c
        .push(a.clone(), &name, &PushOptions::default(), rec.sink())
        .await
        .unwrap();
    let pushed_tags: Vec<&str> = all.iter().map(|p| p.tag.as_str()).collect();
    assert_eq!(pushed_tags, vec!["2", "base"]);
    rec.take();
    assert_eq!(c.list_tags(&name, None).await.unwrap(), vec!["2", "base"]);
    let (_d0, s0) = empty_store();
    let outs = c
        .pull_all_tags(s0.clone(), &name, &PullOptions::default(), rec.sink())
        .await
        .unwrap();
    assert_eq!(outs.len(), 2);
    assert_eq!(s0.list(false).len(), 2);
    rec.take();

    // One download at a time: the second layer waits.
    let one = RegistryClient::new(RegistryConfig {
        max_concurrent_downloads: 1,
        ..Default::default()
    })
    .unwrap();
    let (d1, s1) = empty_store();
    one.pull(
        s1.clone(),
        &format!("{name}:2"),
        &PullOptions::default(),
        rec.sink(),
    )
    .await
    .unwrap();
    let msgs = rec.take();
    assert_eq!(
        msgs.iter()
            .filter(|m| m.status.as_deref() == Some("Waiting"))
            .count(),
        1
    );
    assert!(debris(&d1.path().join("image")).is_empty());

    // A platform that the image does not have.
    let (_d2, s2) = empty_store();
    let e = c
        .pull(
            s2.clone(),
            &format!("{name}:2"),
            &PullOptions {
                platform: Some("linux/s390x".into()),
                ..Default::default()
            },
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string()
            .contains("does not match the specified platform: wanted linux/s390x"),
        "{e}"
    );

    // A corrupted blob in the registry: refused, and nothing is left in the store.
    let manifest: serde_json::Value =
        serde_json::from_slice(&a.read_blob(&pushed[0].digest).unwrap()).unwrap();
    let top = manifest["layers"][1]["digest"].as_str().unwrap();
    let hex = &top["sha256:".len()..];
    let data = reg.data_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let (d3, s3) = empty_store();
    let e = c
        .pull(
            s3.clone(),
            &format!("{name}:2"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("filesystem layer verification failed for digest {top}")
    );
    assert!(s3.list(true).is_empty());
    assert!(
        debris(&d3.path().join("image")).is_empty(),
        "{:?}",
        debris(&d3.path().join("image"))
    );
    drop(s3);
    let reopened = ImageStore::open(d3.path()).unwrap();
    assert!(
        reopened.layers_in_use().is_empty(),
        "the good layer is not kept half-way"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_oci_zstd_images_and_indexes_written_by_others() {
    if skip() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let (d, a) = busybox_store("busybox:src");
    add_layer_on(&a, "busybox:src", "busybox:two", b"zstd\n");
    let tar = d.path().join("two.tar");
    a.save(&["busybox:two"], std::fs::File::create(&tar).unwrap())
        .unwrap();
    // skopeo pushes an OCI manifest with zstd layers.
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd",
            "--format",
            "oci",
        ])
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("docker://{host}/team/zstd:1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let insp = skopeo_inspect(&format!("{host}/team/zstd:1"), None);
    let c = client();
    let rec = Recorder::default();
    let (_d2, b) = empty_store();
    let pulled = c
        .pull(
            b.clone(),
            &format!("{host}/team/zstd:1"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    assert_eq!(pulled.digest.to_string(), insp["Digest"].as_str().unwrap());
    let want = a
        .config(&a.resolve("busybox:two").unwrap())
        .unwrap()
        .rootfs
        .diff_ids;
    assert_eq!(b.config(&pulled.image_id).unwrap().rootfs.diff_ids, want);
    let blobs = b.layer_blobs(&pulled.image_id).unwrap();
    assert!(
        blobs.iter().all(|l| l.media_type.ends_with("+zstd")),
        "{blobs:?}"
    );

    // An OCI index with two platforms, put by hand: the pull picks this machine's entry and records
    // the index digest.
    let manifest = b.read_blob(&pulled.digest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": pulled.digest.to_string(), "size": manifest.len(), "platform": {"architecture": "s390x", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": pulled.digest.to_string(), "size": manifest.len(), "platform": {"architecture": berth_image::config::go_arch(), "os": "linux"}},
        ]
    })
    .to_string();
    let resp = reqwest::Client::new()
        .put(format!("http://{host}/v2/team/zstd/manifests/multi"))
        .header("Content-Type", "application/vnd.oci.image.index.v1+json")
        .body(index.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    let (_d3, s3) = empty_store();
    let out = c
        .pull(
            s3.clone(),
            &format!("{host}/team/zstd:multi"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    let index_digest = berth_image::Digest::of_bytes(index.as_bytes());
    assert_eq!(out.digest, index_digest);
    assert_eq!(out.image_id, pulled.image_id);
    assert_eq!(
        s3.inspect(out.image_id.as_str()).unwrap().repo_digests,
        vec![format!("{host}/team/zstd@{index_digest}")]
    );
    assert_eq!(s3.manifests(&out.image_id).unwrap().len(), 2);
    let e = c
        .pull(
            s3.clone(),
            &format!("{host}/team/zstd:multi"),
            &PullOptions {
                platform: Some("linux/arm64".into()),
                ..Default::default()
            },
            rec.sink(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no matching manifest for linux/arm64 in the manifest list entries"
    );

    // Pushing the zstd image again converts its layers to gzip for a schema2 manifest.
    b.tag(
        &format!("{host}/team/zstd:1"),
        &format!("{host}/team/regz:1"),
    )
    .unwrap();
    let pushed = c
        .push(
            b.clone(),
            &format!("{host}/team/regz:1"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    let insp = skopeo_inspect(&format!("{host}/team/regz:1"), None);
    assert_eq!(insp["Digest"], pushed[0].digest.to_string());
    let m: serde_json::Value =
        serde_json::from_slice(&b.read_blob(&pushed[0].digest).unwrap()).unwrap();
    assert!(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip")
    );
    let (_d4, s4) = empty_store();
    let again = c
        .pull(
            s4.clone(),
            &format!("{host}/team/regz:1"),
            &PullOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    assert_eq!(again.image_id, pulled.image_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_pulls_go_through_mirrors() {
    if skip() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let host = reg.host();
    let (_d, a) = busybox_store(&format!("{host}/library/mirrored:1"));
    let rec = Recorder::default();
    client()
        .push(
            a.clone(),
            &format!("{host}/library/mirrored:1"),
            &PushOptions::default(),
            rec.sink(),
        )
        .await
        .unwrap();
    rec.take();
    // The first mirror is down; the second has the image (so nothing goes past loopback).
    let c = RegistryClient::new(RegistryConfig {
        mirrors: vec![
            format!("http://127.0.0.1:{}", free_port()),
            format!("http://{host}/"),
        ],
        ..Default::default()
    })
    .unwrap();
    let (_d2, b) = empty_store();
    let out = c
        .pull(b.clone(), "mirrored:1", &PullOptions::default(), rec.sink())
        .await
        .unwrap();
    assert_eq!(out.reference, "mirrored:1");
    assert_eq!(
        out.image_id,
        a.resolve(&format!("{host}/library/mirrored:1")).unwrap()
    );
    let msgs = rec.take();
    assert_eq!(
        msgs[0].status.as_deref(),
        Some("Pulling from library/mirrored")
    );
    assert_eq!(
        statuses(&msgs).last().unwrap(),
        "Status: Downloaded newer image for mirrored:1"
    );
    let insp = b.inspect("mirrored:1").unwrap();
    assert_eq!(insp.repo_tags, vec!["mirrored:1"]);
    assert_eq!(insp.repo_digests, vec![format!("mirrored@{}", out.digest)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_leaves_nothing() {
    if skip() {
        return;
    }
    let reg = Registry::start(Auth::None);
    let name = format!("{}/team/app", reg.host());
    let (_d, a) = busybox_store(&format!("{name}:1"));
    client()
        .push(
            a.clone(),
            &format!("{name}:1"),
            &PushOptions::default(),
            berth_registry::no_progress(),
        )
        .await
        .unwrap();
    let (d, b) = empty_store();
    let started = Arc::new(tokio::sync::Notify::new());
    let sink: berth_registry::ProgressSink = {
        let started = started.clone();
        Arc::new(move |m| {
            if m.status.as_deref() == Some("Downloading") {
                started.notify_one();
                // Hold the download here long enough to be cancelled mid-layer.
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        })
    };
    let task = {
        let (b, name) = (b.clone(), name.clone());
        tokio::spawn(async move {
            client()
                .pull(b, &format!("{name}:1"), &PullOptions::default(), sink)
                .await
        })
    };
    started.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The unpacker on the blocking pool sees its stream end and lets go of the store.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while Arc::strong_count(&b) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "unpacker still running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(b.list(true).is_empty());
    drop(b);
    let reopened = ImageStore::open(d.path()).unwrap();
    assert!(reopened.list(true).is_empty());
    assert!(reopened.layers_in_use().is_empty());
    assert!(debris(&d.path().join("image")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_registries_try_https_first() {
    if skip() {
        return;
    }
    // A loopback registry with a self-signed certificate: HTTPS without verification, as dockerd.
    let reg = Registry::start_with(
        Auth::Htpasswd {
            user: "berth".into(),
            password: "s3cret".into(),
        },
        true,
    );
    let name = format!("{}/team/tls", reg.host());
    let (_d, a) = busybox_store(&format!("{name}:1"));
    let creds = Some(Credentials::basic("berth", "s3cret"));
    let rec = Recorder::default();
    let c = client();
    let pushed = c
        .push(
            a.clone(),
            &format!("{name}:1"),
            &PushOptions {
                credentials: creds.clone(),
            },
            rec.sink(),
        )
        .await
        .unwrap();
    let insp = skopeo_inspect(&format!("{name}:1"), Some("berth:s3cret"));
    assert_eq!(insp["Digest"], pushed[0].digest.to_string());
    let (_d2, b) = empty_store();
    let out = c
        .pull(
            b.clone(),
            &format!("{name}:1"),
            &PullOptions {
                credentials: creds,
                ..Default::default()
            },
            rec.sink(),
        )
        .await
        .unwrap();
    assert_eq!(out.image_id, a.resolve(&format!("{name}:1")).unwrap());
}
