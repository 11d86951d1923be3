//! The daemon's store of build-context file contents, by sha256
//! (`<data-root>/build/context-blobs/sha256/<hex>`), for the incremental context transfer
//! ([`crate::incremental`]): a client sends only the files whose content the store lacks.
//!
//! A blob enters the store only after its bytes were hashed here and matched the name it was
//! sent under, and it is written to a temp file and renamed, so a blob under its final name always
//! holds what its name says (a crash can leave it short, which the size check catches). Builds pin
//! the blobs their context uses ([`Pins`]), so neither the size bound nor `builder prune` removes
//! them under a running build; otherwise the least recently used go first.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use crate::error::{BuildError, Result};

/// A sha256.
pub type Sha = [u8; 32];

/// The store's default bound: beyond it the least recently used unpinned blobs are removed.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// How stale a blob's mtime (its last use) may get before a use refreshes it: one `futimens` per
/// blob per hour, not per build.
const TOUCH_AFTER: Duration = Duration::from_secs(3600);

/// The blob store (one per daemon).
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
    max_bytes: u64,
    pins: Mutex<HashMap<Sha, usize>>,
}

/// Blobs held against removal while a context session or a build uses them; released on drop.
#[derive(Debug)]
pub struct Pins {
    store: Arc<BlobStore>,
    shas: Vec<Sha>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let mut p = self.store.lock_pins();
        for s in &self.shas {
            if let Some(n) = p.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    p.remove(s);
                }
            }
        }
    }
}

impl Pins {
    /// The store the pinned blobs are in.
    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }
}

/// What [`BlobStore::prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlobPrune {
    /// Blobs removed.
    pub removed: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Parses `sha256:<64 lower-case hex>`.
pub fn parse_digest(d: &str) -> Option<Sha> {
    let hex = d.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// `sha256:<hex>`.
pub fn digest_string(s: &Sha) -> String {
    format!("sha256:{}", hex::encode(s))
}

impl BlobStore {
    /// Opens (or creates) the store in `dir` (e.g. `<data-root>/build/context-blobs`), removing
    /// temp files an interrupted upload left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<BlobStore>> {
        let blobs = dir.join("sha256");
        fs::create_dir_all(&blobs)
            .map_err(|e| BuildError::io(format!("create {}", blobs.display()), e))?;
        let tmp = dir.join("tmp");
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)
            .map_err(|e| BuildError::io(format!("create {}", tmp.display()), e))?;
        Ok(Arc::new(BlobStore {
            dir: dir.to_path_buf(),
            max_bytes,
            pins: Mutex::new(HashMap::new()),
        }))
    }

    fn lock_pins(&self) -> std::sync::MutexGuard<'_, HashMap<Sha, usize>> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the blob `sha` is (or would be).
    pub fn path(&self, sha: &Sha) -> PathBuf {
        self.dir.join("sha256").join(hex::encode(sha))
    }

    /// Pins `shas` until the returned guard is dropped.
    pub fn pin(self: &Arc<Self>, shas: impl IntoIterator<Item = Sha>) -> Pins {
        let shas: Vec<Sha> = shas.into_iter().collect();
        let mut p = self.lock_pins();
        for s in &shas {
            *p.entry(*s).or_default() += 1;
        }
        drop(p);
        Pins {
            store: self.clone(),
            shas,
        }
    }

    /// Whether the store holds `sha` whole (`size` bytes); refreshes its last use.
    pub fn has(&self, sha: &Sha, size: u64) -> bool {
        let p = self.path(sha);
        let Ok(m) = fs::symlink_metadata(&p) else {
            return false;
        };
        if !m.is_file() || m.len() != size {
            return false;
        }
        let now = SystemTime::now();
        if m.modified()
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > TOUCH_AFTER)
        {
            if let Ok(f) = fs::File::open(&p) {
                let _ = f.set_modified(now);
            }
        }
        true
    }

    /// Stores one blob read from `r` (exactly `size` bytes), hashing it on the way: it enters the
    /// store only if its sha256 is `sha`. A mismatch is a client error naming both digests.
    pub fn put(&self, sha: &Sha, size: u64, r: &mut impl Read) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.join("tmp"))
            .map_err(|e| BuildError::io("create context blob", e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; (size as usize).clamp(1, 1 << 20)];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = match r.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(BuildError::Invalid(format!(
                        "invalid build context: blob {} is shorter than its {size} bytes",
                        digest_string(sha)
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BuildError::io("read context blob", e)),
            };
            h.update(&buf[..n]);
            io::Write::write_all(tmp.as_file_mut(), &buf[..n])
                .map_err(|e| BuildError::io("write context blob", e))?;
            left -= n as u64;
        }
        let got: Sha = h.finalize().into();
        if &got != sha {
            return Err(BuildError::Invalid(format!(
                "invalid build context: blob {} does not match its content (sha256 of the bytes sent: {}); was the file changed while it was sent?",
                digest_string(sha),
                digest_string(&got)
            )));
        }
        tmp.persist(self.path(sha))
            .map_err(|e| BuildError::io("store context blob", e.error))?;
        Ok(())
    }

    /// Every blob with its size and last use.
    fn list(&self) -> Vec<(Sha, u64, SystemTime)> {
        let Ok(rd) = fs::read_dir(self.dir.join("sha256")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let sha = parse_digest(&format!("sha256:{}", e.file_name().to_string_lossy()))?;
                let m = e.metadata().ok()?;
                Some((sha, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
            })
            .collect()
    }

    /// (blobs, bytes, last use) of the whole store, for `system df`.
    pub fn usage(&self) -> (usize, u64, Option<SystemTime>) {
        let l = self.list();
        (
            l.len(),
            l.iter().map(|b| b.1).sum(),
            l.iter().map(|b| b.2).max(),
        )
    }

    /// Removes unpinned blobs last used before `until` (all when `None`), least recently used
    /// first, until at most `keep` bytes remain (`0`: all of them).
    pub fn prune(&self, until: Option<SystemTime>, keep: u64) -> BlobPrune {
        let mut l = self.list();
        let mut total: u64 = l.iter().map(|b| b.1).sum();
        l.sort_by_key(|b| b.2);
        let mut rep = BlobPrune::default();
        let pins = self.lock_pins();
        for (sha, size, used) in l {
            if total <= keep && keep > 0 {
                break;
            }
            if pins.contains_key(&sha) || until.is_some_and(|u| used >= u) {
                continue;
            }
            if fs::remove_file(self.path(&sha)).is_ok() {
                total -= size;
                rep.removed += 1;
                rep.bytes += size;
            }
        }
        rep
    }

    /// Keeps the store within its bound (after uploads): down to 3/4 of it, least recently used
    /// first.
    pub fn enforce_bound(&self) -> BlobPrune {
        if self.list().iter().map(|b| b.1).sum::<u64>() <= self.max_bytes {
            return BlobPrune::default();
        }
        self.prune(None, (self.max_bytes / 4 * 3).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> Sha {
        Sha256::digest(b).into()
    }

    #[test]
    fn put_verifies_and_prune_skips_pinned() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::open(d.path(), 10).unwrap();
        let a = sha(b"aaaa");
        let e = s.put(&a, 4, &mut &b"aaab"[..]).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(e.is_client_error());
        assert!(!s.has(&a, 4));
        let e = s.put(&a, 4, &mut &b"aa"[..]).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
        s.put(&a, 4, &mut &b"aaaa"[..]).unwrap();
        assert!(s.has(&a, 4));
        assert!(!s.has(&a, 5), "a blob of the wrong size is not there");
        let b = sha(b"bbbbbbbb");
        s.put(&b, 8, &mut &b"bbbbbbbb"[..]).unwrap();
        assert_eq!(s.usage().1, 12);
        let pins = s.pin([a]);
        // Over the bound of 10: the unpinned one goes.
        assert_eq!(s.enforce_bound().removed, 1);
        assert!(s.has(&a, 4) && !s.has(&b, 8));
        assert_eq!(s.prune(None, 0).removed, 0);
        drop(pins);
        assert_eq!(
            s.prune(None, 0),
            BlobPrune {
                removed: 1,
                bytes: 4
            }
        );
        assert_eq!(s.usage().0, 0);
    }

    #[test]
    fn digests_parse_strictly() {
        let h = format!("sha256:{}", "ab".repeat(32));
        assert!(parse_digest(&h).is_some());
        assert!(parse_digest(&h.to_uppercase()).is_none());
        assert!(parse_digest("sha256:../../etc/passwd").is_none());
        assert!(parse_digest(&h[..70]).is_none());
        assert_eq!(digest_string(&parse_digest(&h).unwrap()), h);
    }
}
