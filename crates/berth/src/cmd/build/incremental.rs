//! The CLI's side of berth's incremental build context ([`berth_build::incremental`]): a manifest
//! of the context (the entries the tar would hold, each file's sha256), then only the contents the
//! daemon lacks, as a tar of blobs named by digest.
//!
//! Files are hashed once: a stat cache per context directory
//! (`$XDG_CACHE_HOME/berth/build-context/<sha256 of the path>.json`, else under `~/.cache`) maps
//! each path to its (dev, inode, size, mtime, ctime) and sha256; a file whose stat still matches is
//! not read. A file changed within a second of its hashing is not cached ("racily clean", as git
//! has it: a change in the same clock tick would not show in its times). A missing or corrupt cache
//! only means hashing again; it is replaced by rename, never written in place.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_build::incremental::{Manifest, ManifestEntry, hash_bytes, hash_file};
use serde::{Deserialize, Serialize};

/// Where a blob's bytes come from.
#[derive(Debug)]
pub enum Blob {
    /// A file of the context, `len` bytes as hashed.
    File(PathBuf, u64),
    /// The Dockerfile given on stdin or from outside the context.
    Bytes(Vec<u8>),
}

/// The manifest and where each digest's content is.
#[derive(Debug, Default)]
pub struct Prepared {
    /// What goes to `POST /berth/build/context`.
    pub manifest: Manifest,
    /// Content by digest (`sha256:<hex>`).
    pub blobs: HashMap<String, Blob>,
}

/// (dev, inode, size, mtime ns, ctime ns, digest).
type Stat = (u64, u64, u64, i64, i64, String);

#[derive(Debug, Default, Serialize, Deserialize)]
struct StatCache {
    root: String,
    files: HashMap<String, Stat>,
}

fn cache_path(root: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let key = hex_of(&hash_bytes(root.as_os_str().as_encoded_bytes()));
    Some(
        base.join("berth")
            .join("build-context")
            .join(format!("{}.json", &key[..32])),
    )
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn stat_of(m: &std::fs::Metadata) -> (u64, u64, u64, i64, i64) {
    (
        m.dev(),
        m.ino(),
        m.len(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    )
}

/// Builds the manifest of the entries `walk` visits (each with its path relative to the root,
/// host path and metadata), hashing only files the stat cache does not vouch for; `extra` is a
/// Dockerfile added under its private name, as in the tar.
pub fn prepare(
    root: &Path,
    walk: impl FnOnce(
        &mut dyn FnMut(&str, &Path, &std::fs::Metadata) -> io::Result<()>,
    ) -> io::Result<()>,
    extra: Option<&(String, Vec<u8>)>,
) -> io::Result<Prepared> {
    prepare_with_cache(root, walk, extra, cache_path(root))
}

fn prepare_with_cache(
    root: &Path,
    walk: impl FnOnce(
        &mut dyn FnMut(&str, &Path, &std::fs::Metadata) -> io::Result<()>,
    ) -> io::Result<()>,
    extra: Option<&(String, Vec<u8>)>,
    path: Option<PathBuf>,
) -> io::Result<Prepared> {
    let started = SystemTime::now();
    let root_s = root.to_string_lossy().into_owned();
    let old: StatCache = path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<StatCache>(&b).ok())
        .filter(|c| c.root == root_s)
        .unwrap_or_default();
    let mut new = StatCache {
        root: root_s,
        files: HashMap::new(),
    };
    let settled = |ctime_ns: i64| {
        let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(ctime_ns.max(0) as u64);
        t + Duration::from_secs(1) < started
    };
    let mut out = Prepared::default();
    walk(&mut |rel, p, m| {
        let mode = m.mode() & 0o7777;
        let mut e = ManifestEntry {
            path: rel.to_string(),
            kind: String::new(),
            mode,
            size: 0,
            digest: String::new(),
            link: String::new(),
        };
        if m.is_dir() {
            e.kind = "dir".into();
        } else if m.file_type().is_symlink() {
            e.kind = "symlink".into();
            e.link = std::fs::read_link(p)?.to_string_lossy().into_owned();
        } else {
            e.kind = "file".into();
            let st = stat_of(m);
            let cached = old
                .files
                .get(rel)
                .filter(|c| (c.0, c.1, c.2, c.3, c.4) == st);
            let digest = match cached {
                Some(c) => c.5.clone(),
                None => {
                    let (sha, n) = hash_file(p)?;
                    if n != m.len() {
                        return Err(io::Error::other(format!("{rel} changed while it was read")));
                    }
                    format!("sha256:{}", hex_of(&sha))
                }
            };
            if settled(st.4) {
                new.files.insert(
                    rel.to_string(),
                    (st.0, st.1, st.2, st.3, st.4, digest.clone()),
                );
            }
            e.size = m.len();
            out.blobs
                .insert(digest.clone(), Blob::File(p.to_path_buf(), m.len()));
            e.digest = digest;
        }
        out.manifest.entries.push(e);
        Ok(())
    })?;
    if let Some((name, text)) = extra {
        let digest = format!("sha256:{}", hex_of(&hash_bytes(text)));
        out.manifest.entries.push(ManifestEntry {
            path: name.clone(),
            kind: "file".into(),
            mode: 0o600,
            size: text.len() as u64,
            digest: digest.clone(),
            link: String::new(),
        });
        out.blobs.insert(digest, Blob::Bytes(text.clone()));
    }
    if let Some(p) = path {
        if new.files != old.files {
            // Best effort: without a cache the next build hashes again.
            let _ = save(&p, &new);
        }
    }
    Ok(out)
}

fn save(path: &Path, c: &StatCache) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, serde_json::to_vec(c)?)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Writes the blobs named in `missing` as a tar of entries named by hex digest. A file is sent
/// with exactly the size it was hashed at (the daemon checks the digest, so a file changed since
/// fails the build with a clear message rather than going in unnoticed).
pub fn write_blobs(
    blobs: &HashMap<String, Blob>,
    missing: &[String],
    w: impl Write,
) -> io::Result<()> {
    let mut t = tar::Builder::new(w);
    for d in missing {
        let Some(b) = blobs.get(d) else {
            return Err(io::Error::other(format!(
                "the daemon asked for unknown blob {d}"
            )));
        };
        let name = d.trim_start_matches("sha256:");
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        match b {
            Blob::File(p, len) => {
                let f = std::fs::File::open(p)?;
                h.set_size(*len);
                h.set_path(name)?;
                h.set_cksum();
                let mut r = f.take(*len);
                t.append(&h, &mut r)?;
            }
            Blob::Bytes(v) => {
                h.set_size(v.len() as u64);
                h.set_path(name)?;
                h.set_cksum();
                t.append(&h, &v[..])?;
            }
        }
    }
    t.finish()?;
    t.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_skips_hashing_and_notices_changes() {
        let d = std::env::temp_dir().join(format!("berth-statcache-{}", std::process::id()));
        let ctx = d.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("a"), "one").unwrap();
        let cache = d.join("cache");
        let run = |ctx: &Path| {
            let walk = |f: &mut dyn FnMut(&str, &Path, &std::fs::Metadata) -> io::Result<()>| {
                let p = ctx.join("a");
                f("a", &p, &std::fs::symlink_metadata(&p)?)
            };
            prepare_with_cache(ctx, walk, None, Some(cache.join("c.json"))).unwrap()
        };
        let one = run(&ctx);
        let want = format!("sha256:{}", hex_of(&hash_bytes(b"one")));
        assert_eq!(one.manifest.entries[0].digest, want);
        // Fresh files are not cached (racily clean).
        assert!(!cache.join("c.json").exists());
        // An old enough file is; a stale digest in the cache is believed while the stat matches.
        let old = SystemTime::now() - Duration::from_secs(10);
        let f = std::fs::File::options()
            .write(true)
            .open(ctx.join("a"))
            .unwrap();
        f.set_modified(old).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(1100));
        run(&ctx);
        assert!(cache.join("c.json").exists());
        // A changed file (new size and times) is hashed again.
        std::fs::write(ctx.join("a"), "two!").unwrap();
        let two = run(&ctx);
        assert_eq!(
            two.manifest.entries[0].digest,
            format!("sha256:{}", hex_of(&hash_bytes(b"two!")))
        );
        // A corrupt cache is ignored.
        std::fs::write(cache.join("c.json"), "{").unwrap();
        assert_eq!(run(&ctx).manifest.entries[0].size, 4);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
