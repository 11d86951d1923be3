//! The build cache index: step cache key → the image that step made, kept crash-safe in
//! `<data-root>/build/cache.json` (write temp + fsync + rename + fsync dir). Keys are
//! `sha256(parent image ID, expanded instruction, relevant build args, content hash of COPY/ADD
//! sources)`; an entry is used only while its image is still in the store. `prune` and `du` serve
//! `POST /build/prune` and `GET /system/df`'s `BuildCache`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{BuildError, Result};

/// One cached step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The image the step produced.
    pub image_id: String,
    /// The image it was built on (`""` for scratch).
    pub parent: String,
    /// The history `created_by` of the step (the `Description` of `system df -v`).
    pub description: String,
    /// Bytes of the layer it added (0 for metadata-only steps).
    pub size: i64,
    /// When it was made (unix seconds).
    pub created: i64,
    /// When it was last used (unix seconds).
    pub last_used: i64,
    /// How often it was used.
    pub usage_count: u64,
}

impl CacheRecord {
    /// The record as `GET /system/df`'s `BuildCache` item (Docker's field names).
    pub fn to_api(&self, key: &str) -> serde_json::Value {
        let t = |s: i64| berth_image::config::format_rfc3339_nano(s, 0);
        serde_json::json!({
            "ID": &key[..key.len().min(25)],
            "Parents": if self.parent.is_empty() { vec![] } else { vec![self.parent.clone()] },
            "Type": if self.size > 0 { "regular" } else { "internal" },
            "Description": self.description,
            "InUse": false,
            "Shared": false,
            "Size": self.size,
            "CreatedAt": t(self.created),
            "LastUsedAt": t(self.last_used),
            "UsageCount": self.usage_count,
        })
    }
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The removed keys (`CachesDeleted`).
    pub deleted: Vec<String>,
    /// The images those entries pointed at; the daemon may delete the untagged ones without children.
    pub images: Vec<String>,
    /// Sum of the removed entries' sizes (`SpaceReclaimed`).
    pub space_reclaimed: u64,
}

/// `prune` filters (`builder prune --filter until=24h --keep-storage`, `--all`).
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Only entries last used before this unix time.
    pub until: Option<i64>,
    /// Keep the most recently used entries up to this many bytes.
    pub keep_storage: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    entries: BTreeMap<String, CacheRecord>,
}

/// The cache index of one data root; shared by concurrent builds.
#[derive(Debug)]
pub struct CacheIndex {
    dir: PathBuf,
    state: Mutex<IndexFile>,
    /// Usage marks not saved yet.
    dirty: std::sync::atomic::AtomicBool,
    /// Facts derived from immutable images (e.g. the content hash of a `COPY --from` selection).
    memo: Mutex<std::collections::HashMap<String, String>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Computes a step's cache key.
pub fn cache_key(
    parent: &str,
    instruction: &str,
    build_args: &[String],
    content: Option<&str>,
) -> String {
    let mut h = Sha256::new();
    for part in [parent, instruction] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let mut args = build_args.to_vec();
    args.sort();
    for a in args {
        h.update(a.as_bytes());
        h.update([1]);
    }
    if let Some(c) = content {
        h.update(b"content:");
        h.update(c.as_bytes());
    }
    hex::encode(h.finalize())
}

impl CacheIndex {
    /// Opens (or creates) `<data-root>/build/`. A corrupt index is moved aside and starts empty (a
    /// cache can always be rebuilt).
    pub fn open(data_root: &Path) -> Result<CacheIndex> {
        let dir = data_root.join("build");
        fs::create_dir_all(&dir)
            .map_err(|e| BuildError::io(format!("create {}", dir.display()), e))?;
        let path = dir.join("cache.json");
        let state = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|_| {
                let _ = fs::rename(&path, dir.join("cache.json.corrupt"));
                IndexFile::default()
            }),
            Err(_) => IndexFile::default(),
        };
        // Contexts of builds that were running when the daemon stopped.
        let _ = fs::remove_dir_all(dir.join("tmp"));
        // Temp files of an interrupted save.
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("cache.json.tmp")
                {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(CacheIndex {
            dir,
            state: Mutex::new(state),
            dirty: Default::default(),
            memo: Default::default(),
        })
    }

    /// `<data-root>/build/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<data-root>/build/tmp/`: where [`crate::context::BuildContext::from_tar`] should unpack
    /// contexts (emptied by [`CacheIndex::open`]).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexFile> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, st: &IndexFile) -> Result<()> {
        self.save_as(st, true)
    }

    /// Writes the index (temp + rename); `durable` adds the fsyncs that records need (usage
    /// marks alone are not worth them: a crash loses a few timestamps).
    fn save_as(&self, st: &IndexFile, durable: bool) -> Result<()> {
        self.dirty
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join("cache.json");
        let tmp = self
            .dir
            .join(format!("cache.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(st).map_err(|e| BuildError::Backend(e.to_string()))?;
        let res = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if durable {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            if durable {
                fs::File::open(&self.dir)?.sync_all()?;
            }
            Ok(())
        })();
        res.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            BuildError::io("save build cache index", e)
        })
    }

    /// The record of `key`.
    pub fn get(&self, key: &str) -> Option<CacheRecord> {
        self.lock().entries.get(key).cloned()
    }

    /// Marks `key` used now, in memory: usage is saved with the next change or
    /// [`CacheIndex::flush`], so a fully cached build does not fsync once per step.
    pub fn touch(&self, key: &str) -> Result<()> {
        let mut st = self.lock();
        if let Some(r) = st.entries.get_mut(key) {
            r.last_used = now();
            r.usage_count += 1;
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// A remembered fact about immutable inputs ([`CacheIndex::memo_put`]).
    pub fn memo_get(&self, key: &str) -> Option<String> {
        self.memo.lock().ok()?.get(key).cloned()
    }

    /// Remembers `value` for `key` in memory (bounded: the map is emptied when it grows big).
    pub fn memo_put(&self, key: &str, value: String) {
        if let Ok(mut m) = self.memo.lock() {
            if m.len() >= 4096 {
                m.clear();
            }
            m.insert(key.to_string(), value);
        }
    }

    /// Saves usage marks left by [`CacheIndex::touch`] (end of a build).
    pub fn flush(&self) -> Result<()> {
        let st = self.lock();
        if self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            self.save_as(&st, false)?;
        }
        Ok(())
    }

    /// Records a step's result.
    pub fn insert(
        &self,
        key: &str,
        image_id: &str,
        parent: &str,
        description: &str,
        size: i64,
    ) -> Result<()> {
        let mut st = self.lock();
        let t = now();
        st.entries.insert(
            key.to_string(),
            CacheRecord {
                image_id: image_id.to_string(),
                parent: parent.to_string(),
                description: description.to_string(),
                size,
                created: t,
                last_used: t,
                usage_count: 0,
            },
        );
        self.save(&st)
    }

    /// Drops an entry (e.g. its image is gone).
    pub fn remove(&self, key: &str) -> Result<()> {
        let mut st = self.lock();
        if st.entries.remove(key).is_some() {
            self.save(&st)?;
        }
        Ok(())
    }

    /// All entries (`system df`'s `BuildCache`).
    pub fn du(&self) -> Vec<(String, CacheRecord)> {
        self.lock()
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Total size of the cache entries.
    pub fn size(&self) -> u64 {
        self.lock()
            .entries
            .values()
            .map(|r| r.size.max(0) as u64)
            .sum()
    }

    /// `builder prune`: removes entries (all, or those matching `opts`).
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let mut st = self.lock();
        let mut cands: Vec<(String, CacheRecord)> = st
            .entries
            .iter()
            .filter(|(_, r)| opts.until.is_none_or(|u| r.last_used < u))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(keep) = opts.keep_storage {
            // Keep the most recently used entries within `keep` bytes.
            cands.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_used));
            let mut kept = 0u64;
            cands.retain(|(_, r)| {
                let s = r.size.max(0) as u64;
                if kept + s <= keep {
                    kept += s;
                    false
                } else {
                    true
                }
            });
        }
        let mut rep = PruneReport::default();
        for (k, r) in cands {
            st.entries.remove(&k);
            rep.space_reclaimed += r.size.max(0) as u64;
            rep.images.push(r.image_id);
            rep.deleted.push(k);
        }
        if !rep.deleted.is_empty() {
            self.save(&st)?;
        }
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part() {
        let k = cache_key("sha256:a", "RUN x", &["B=1".into(), "A=2".into()], None);
        assert_eq!(
            k,
            cache_key("sha256:a", "RUN x", &["A=2".into(), "B=1".into()], None)
        );
        assert_ne!(
            k,
            cache_key("sha256:b", "RUN x", &["A=2".into(), "B=1".into()], None)
        );
        assert_ne!(
            k,
            cache_key("sha256:a", "RUN y", &["A=2".into(), "B=1".into()], None)
        );
        assert_ne!(
            k,
            cache_key("sha256:a", "RUN x", &["A=3".into(), "B=1".into()], None)
        );
        assert_ne!(
            k,
            cache_key(
                "sha256:a",
                "RUN x",
                &["A=2".into(), "B=1".into()],
                Some("h")
            )
        );
    }

    #[test]
    fn index_survives_reopen_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let c = CacheIndex::open(d.path()).unwrap();
        c.insert("k1", "sha256:1", "", "RUN a", 10).unwrap();
        c.insert("k2", "sha256:2", "sha256:1", "ENV a", 0).unwrap();
        c.touch("k1").unwrap();
        c.flush().unwrap();
        drop(c);
        let c = CacheIndex::open(d.path()).unwrap();
        assert_eq!(c.get("k1").unwrap().usage_count, 1);
        assert_eq!(c.size(), 10);
        assert_eq!(c.du().len(), 2);
        let rep = c
            .prune(&PruneOptions {
                until: None,
                keep_storage: Some(5),
            })
            .unwrap();
        assert_eq!(rep.deleted, vec!["k1".to_string()]);
        assert_eq!(rep.space_reclaimed, 10);
        let rep = c.prune(&PruneOptions::default()).unwrap();
        assert_eq!(rep.deleted, vec!["k2".to_string()]);
        assert!(c.du().is_empty());
        fs::write(d.path().join("build/cache.json"), b"{garbage").unwrap();
        let c = CacheIndex::open(d.path()).unwrap();
        assert!(c.du().is_empty());
    }
}
