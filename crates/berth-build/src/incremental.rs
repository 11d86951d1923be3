//! The incremental build context (berth's extension of `POST /build`; the classic tar body stays
//! for every other client): the client sends a manifest of its context (per entry the path, type,
//! mode, size, link target, and each file's sha256), the daemon answers which contents its blob
//! store ([`crate::blobs`]) lacks, and the client uploads only those, as a tar of entries named
//! by their hex digest, in the body of `POST /build`.
//!
//! What the daemon trusts: the client's digests name contents, and the build uses the content
//! under that name from the store, never anything else. A blob gets into the store only after the
//! daemon hashed its bytes and they matched the name, so a manifest's digest is trusted exactly
//! when its blob was verified at upload (now or by an earlier build) — then the cache key made from
//! the digest describes the bytes a step copies. A digest the store lacks and the upload did not
//! bring is an error; a lying digest can only point at another content the store holds, which any
//! client of the daemon (root-equivalent) could have sent itself.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::blobs::{BlobStore, Sha, digest_string, parse_digest};
use crate::context::{BuildContext, ManifestNode, TarIndex};
use crate::error::{BuildError, Result};

/// The largest manifest body accepted (about 200k entries).
pub const MAX_MANIFEST_BYTES: usize = 64 << 20;
/// The most entries a manifest may have.
pub const MAX_MANIFEST_ENTRIES: usize = 1_000_000;
/// The longest path accepted in a manifest.
const MAX_PATH: usize = 4096;

/// A context manifest (`POST /berth/build/context`'s body).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The entries in the order the context tar would hold them.
    #[serde(rename = "Entries")]
    pub entries: Vec<ManifestEntry>,
}

/// One manifest entry. Owner and mtime are not sent: the tar path drops them too (contexts are
/// unpacked owned by the daemon, mtimes are not in cache keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The path relative to the context root, `/`-separated.
    #[serde(rename = "Path")]
    pub path: String,
    /// `dir`, `file` or `symlink`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Permission bits.
    #[serde(rename = "Mode", default)]
    pub mode: u32,
    /// Size of a file.
    #[serde(rename = "Size", default)]
    pub size: u64,
    /// `sha256:<hex>` of a file's content.
    #[serde(rename = "Digest", default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// A symlink's target.
    #[serde(rename = "Link", default, skip_serializing_if = "String::is_empty")]
    pub link: String,
}

/// `POST /berth/build/context`'s answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionReply {
    /// Names the session in `POST /build`'s `X-Berth-Context` header.
    #[serde(rename = "Session")]
    pub session: String,
    /// The digests to upload.
    #[serde(rename = "Missing")]
    pub missing: Vec<String>,
}

/// What a session received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Entries of the manifest.
    pub entries: usize,
    /// Blobs uploaded.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// A checked manifest, its blobs pinned, waiting for the missing ones.
#[derive(Debug)]
pub struct ContextSession {
    idx: TarIndex,
    entries: usize,
    /// Missing digests and their sizes.
    missing: HashMap<Sha, u64>,
}

fn bad(m: impl std::fmt::Display) -> BuildError {
    BuildError::Invalid(format!("invalid build context manifest: {m}"))
}

impl ContextSession {
    /// Parses and checks a manifest body (hostile input: see [`TarIndex::from_manifest`] for the
    /// path rules; sizes, digests and types are checked here) and pins its blobs in `store`.
    pub fn new(body: &[u8], store: &Arc<BlobStore>) -> Result<ContextSession> {
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!("larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let m: Manifest = serde_json::from_slice(body).map_err(bad)?;
        if m.entries.len() > MAX_MANIFEST_ENTRIES {
            return Err(bad(format!("more than {MAX_MANIFEST_ENTRIES} entries")));
        }
        let mut sizes: HashMap<Sha, u64> = HashMap::new();
        let mut nodes = Vec::with_capacity(m.entries.len());
        for e in m.entries {
            if e.path.len() > MAX_PATH {
                return Err(bad(format!("path longer than {MAX_PATH} bytes")));
            }
            let node = match e.kind.as_str() {
                "dir" => ManifestNode::Dir { mode: e.mode },
                "file" => {
                    let sha = parse_digest(&e.digest)
                        .ok_or_else(|| bad(format!("bad digest {:?} for {}", e.digest, e.path)))?;
                    if *sizes.entry(sha).or_insert(e.size) != e.size {
                        return Err(bad(format!("{} has two sizes", e.digest)));
                    }
                    ManifestNode::File {
                        mode: e.mode,
                        size: e.size,
                        sha,
                    }
                }
                "symlink" => ManifestNode::Symlink { target: e.link },
                k => return Err(bad(format!("unknown type {k:?} for {}", e.path))),
            };
            nodes.push((e.path, node));
        }
        let entries = nodes.len();
        let pins = store.pin(sizes.keys().copied());
        let idx = TarIndex::from_manifest(nodes, pins)?;
        sizes.retain(|sha, size| !store.has(sha, *size));
        Ok(ContextSession {
            idx,
            entries,
            missing: sizes,
        })
    }

    /// The digests the client must upload.
    pub fn missing(&self) -> Vec<String> {
        self.missing.keys().map(digest_string).collect()
    }

    /// Reads the upload (a tar of blobs named by hex digest; an empty body when nothing is
    /// missing), each verified into the store, and makes the build context. Every missing blob
    /// must come; a blob the manifest does not name is refused.
    pub fn finish(
        mut self,
        body: impl Read,
        store: &BlobStore,
        tmp_parent: &Path,
        dockerfile: Option<&str>,
    ) -> Result<(BuildContext, Received)> {
        let mut got = Received {
            entries: self.entries,
            ..Received::default()
        };
        let mut r = std::io::BufReader::with_capacity(256 * 1024, body);
        let empty = std::io::BufRead::fill_buf(&mut r)
            .map_err(|e| BuildError::io("read context upload", e))?
            .is_empty();
        if !empty {
            let mut ar = tar::Archive::new(r);
            let entries = ar
                .entries()
                .map_err(|e| bad(format!("bad blob upload: {e}")))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| bad(format!("bad blob upload: {e}")))?;
                if !matches!(
                    entry.header().entry_type(),
                    tar::EntryType::Regular | tar::EntryType::Continuous
                ) {
                    continue;
                }
                let name = entry
                    .path()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let sha = parse_digest(&format!("sha256:{name}"))
                    .ok_or_else(|| bad(format!("bad blob name {name:?} in the upload")))?;
                let Some(size) = self.missing.remove(&sha) else {
                    return Err(bad(format!(
                        "blob {} was not asked for (or sent twice)",
                        digest_string(&sha)
                    )));
                };
                if entry.size() != size {
                    return Err(bad(format!(
                        "blob {} has {} bytes, the manifest says {size}",
                        digest_string(&sha),
                        entry.size()
                    )));
                }
                store.put(&sha, size, &mut entry)?;
                got.blobs += 1;
                got.bytes += size;
            }
        }
        if let Some(sha) = self.missing.keys().next() {
            return Err(bad(format!(
                "blob {} is missing from the upload ({} in all)",
                digest_string(sha),
                self.missing.len()
            )));
        }
        if got.blobs > 0 {
            store.enforce_bound();
        }
        let ctx = BuildContext::from_index(self.idx, tmp_parent, dockerfile)?;
        Ok((ctx, got))
    }
}

/// The sha256 of a file (the client's manifest digests).
pub fn hash_file(path: &Path) -> std::io::Result<(Sha, u64)> {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().into(), n))
}

/// The sha256 of bytes in memory.
pub fn hash_bytes(b: &[u8]) -> Sha {
    use sha2::Digest as _;
    sha2::Sha256::digest(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::BlobStore;

    fn file(path: &str, content: &[u8]) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: "file".into(),
            mode: 0o644,
            size: content.len() as u64,
            digest: digest_string(&hash_bytes(content)),
            link: String::new(),
        }
    }

    fn link(path: &str, target: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: "symlink".into(),
            mode: 0o777,
            size: 0,
            digest: String::new(),
            link: target.into(),
        }
    }

    fn body(entries: Vec<ManifestEntry>) -> Vec<u8> {
        serde_json::to_vec(&Manifest { entries }).unwrap()
    }

    fn blob_tar(blobs: &[&[u8]]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for c in blobs {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o644);
            h.set_path(hex::encode(hash_bytes(c))).unwrap();
            h.set_cksum();
            b.append(&h, *c).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&d.path().join("blobs"), 1 << 30).unwrap();
        let refuse = |entries: Vec<ManifestEntry>, want: &str| {
            let e = ContextSession::new(&body(entries), &store).unwrap_err();
            assert!(e.is_client_error(), "{e}");
            assert!(e.to_string().contains(want), "{e} (want {want})");
        };
        for p in [
            "../x",
            "/etc/x",
            "a/../../x",
            "a//b",
            "./a",
            "a/",
            "",
            "a\0b",
            "..",
        ] {
            refuse(vec![file(p, b"x")], "invalid build context");
        }
        refuse(vec![file("a", b"x"), file("a", b"y")], "twice");
        refuse(vec![link("l", "/tmp"), file("l/evil", b"x")], "symlink");
        refuse(vec![file("f", b"x"), file("f/g", b"x")], "not a directory");
        let mut e = file("a", b"x");
        e.digest = "sha256:1234".into();
        refuse(vec![e], "bad digest");
        let mut e = file("a", b"x");
        e.digest = e.digest.to_uppercase();
        refuse(vec![e], "bad digest");
        let mut e = file("a", b"x");
        e.kind = "fifo".into();
        refuse(vec![e], "unknown type");
        let mut e = file("b", b"x");
        e.size = 7;
        refuse(vec![file("a", b"x"), e], "two sizes");
        refuse(vec![link("l", "")], "symlink target");
        refuse(vec![file(&"a/".repeat(3000), b"x")], "path longer");
        let e = ContextSession::new(&vec![b' '; MAX_MANIFEST_BYTES + 1], &store).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let e = ContextSession::new(b"{\"Entries\": 3}", &store).unwrap_err();
        assert!(e.is_client_error(), "{e}");
    }

    #[test]
    fn uploads_are_verified() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&d.path().join("blobs"), 1 << 30).unwrap();
        let tmp = d.path().join("tmp");
        let m = body(vec![
            file("Dockerfile", b"FROM scratch\n"),
            file("a", b"aaa"),
        ]);
        let s = ContextSession::new(&m, &store).unwrap();
        assert_eq!(s.missing().len(), 2);
        // One blob under the other's name.
        let mut bad = blob_tar(&[b"FROM scratch\n"]);
        let good_name = hex::encode(hash_bytes(b"FROM scratch\n"));
        let wrong_name = hex::encode(hash_bytes(b"aaa"));
        let at = bad
            .windows(64)
            .position(|w| w == good_name.as_bytes())
            .unwrap();
        bad[at..at + 64].copy_from_slice(wrong_name.as_bytes());
        // The name is in the header's checksum: recompute it.
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&bad[..512]);
        h.set_size(3);
        h.set_cksum();
        bad[..512].copy_from_slice(h.as_bytes());
        let e = s.finish(&bad[..], &store, &tmp, None).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(!store.has(&hash_bytes(b"aaa"), 3));
        // A blob not asked for.
        let s = ContextSession::new(&m, &store).unwrap();
        let e = s
            .finish(&blob_tar(&[b"other"])[..], &store, &tmp, None)
            .unwrap_err();
        assert!(e.to_string().contains("not asked for"), "{e}");
        // One missing.
        let s = ContextSession::new(&m, &store).unwrap();
        let e = s
            .finish(&blob_tar(&[b"aaa"])[..], &store, &tmp, None)
            .unwrap_err();
        assert!(e.to_string().contains("missing from the upload"), "{e}");
        // Now the store holds "aaa": only the Dockerfile is asked for.
        let s = ContextSession::new(&m, &store).unwrap();
        assert_eq!(
            s.missing(),
            vec![digest_string(&hash_bytes(b"FROM scratch\n"))]
        );
        let (ctx, got) = s
            .finish(&blob_tar(&[b"FROM scratch\n"])[..], &store, &tmp, None)
            .unwrap();
        assert_eq!((got.entries, got.blobs, got.bytes), (2, 1, 13));
        assert_eq!(ctx.dockerfile(), "FROM scratch\n");
        // Everything there: an empty body.
        let s = ContextSession::new(&m, &store).unwrap();
        assert!(s.missing().is_empty());
        let (_, got) = s.finish(&b""[..], &store, &tmp, None).unwrap();
        assert_eq!(got.blobs, 0);
    }

    /// The same tree as a tar and as a manifest: same Dockerfile, selections, hashes, files.
    #[test]
    fn manifest_context_reads_like_the_tar() {
        let d = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&d.path().join("blobs"), 1 << 30).unwrap();
        let tmp = d.path().join("tmp");
        let files: &[(&str, &[u8])] = &[
            ("Dockerfile", b"FROM scratch\n"),
            (".dockerignore", b"*.log\n!keep.log\nsecret\n"),
            ("a.log", b"x"),
            ("keep.log", b"k"),
            ("secret", b"s"),
            ("src/x.txt", b"x"),
            ("src/sub/y.txt", b"y"),
            ("dup.txt", b"x"),
        ];
        let links = [
            ("esc", "/etc/passwd"),
            ("up", "../../src"),
            ("src/l", "x.txt"),
        ];
        let mut t = tar::Builder::new(Vec::new());
        let mut entries = Vec::new();
        for (p, c) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(c.len() as u64);
            h.set_mode(0o640);
            t.append_data(&mut h, p, *c).unwrap();
            let mut e = file(p, c);
            e.mode = 0o640;
            entries.push(e);
        }
        for (p, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            t.append_link(&mut h, p, target).unwrap();
            entries.push(link(p, target));
        }
        let tar_ctx = BuildContext::from_tar(&t.into_inner().unwrap()[..], &tmp, None).unwrap();
        let s = ContextSession::new(&body(entries), &store).unwrap();
        let blobs: Vec<&[u8]> = {
            let mut v: Vec<&[u8]> = files.iter().map(|f| f.1).collect();
            v.dedup_by_key(|b| hash_bytes(b));
            v.sort();
            v.dedup();
            v
        };
        let (m_ctx, _) = s.finish(&blob_tar(&blobs)[..], &store, &tmp, None).unwrap();
        assert_eq!(m_ctx.dockerfile(), tar_ctx.dockerfile());
        for src in [
            "*.log",
            "src",
            "up/x.txt",
            "src/l",
            "/",
            "../../src/sub",
            "dup.txt",
        ] {
            let a = tar_ctx.select(src).unwrap();
            let b = m_ctx.select(src).unwrap();
            let rels = |v: &[crate::context::Selected]| {
                v.iter()
                    .map(|s| (s.rel.clone(), s.is_dir))
                    .collect::<Vec<_>>()
            };
            assert_eq!(rels(&a), rels(&b), "{src}");
            assert_eq!(
                tar_ctx.content_hash(&a).unwrap(),
                m_ctx.content_hash(&b).unwrap(),
                "{src}"
            );
        }
        for src in ["esc", "secret", "a.log"] {
            assert!(m_ctx.select(src).is_err(), "{src}");
        }
        // A selection writes only its files (and what its symlinks point to).
        let sel = m_ctx.select("src/sub").unwrap();
        m_ctx.materialize_selected(&sel).unwrap();
        let root = m_ctx.root();
        assert_eq!(std::fs::read(root.join("src/sub/y.txt")).unwrap(), b"y");
        assert!(!root.join("src/x.txt").exists());
        assert!(!root.join("keep.log").exists());
        let sel = m_ctx.select("src/*").unwrap();
        m_ctx.materialize_selected(&sel).unwrap();
        assert_eq!(std::fs::read(root.join("src/l")).unwrap(), b"x");
        // The rest on demand, in the tar's modes.
        m_ctx.materialize().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let t_root = tar_ctx.materialize().unwrap();
        for p in ["keep.log", "src", "src/sub/y.txt", "Dockerfile"] {
            assert_eq!(mode(&root.join(p)), mode(&t_root.join(p)), "{p}");
            assert_eq!(root.join(p).is_dir(), t_root.join(p).is_dir(), "{p}");
        }
        assert_eq!(
            std::fs::read_link(root.join("esc")).unwrap(),
            std::fs::read_link(t_root.join("esc")).unwrap()
        );
    }
}
