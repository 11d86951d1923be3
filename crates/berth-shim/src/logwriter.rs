//! The json-file log as the shim writes it: Docker's line format, optional `attrs`, and rotation
//! by `max-size`/`max-file` (`<log>.1` is the newest rotated file, `<log>.N` the oldest), gzipped
//! with `compress` as dockerd does (`<log>.1.gz`, compressed off the write path).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::logfmt::push_json_string;

/// Rotation settings (`--log-opt max-size`, `max-file`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file would grow past this many bytes; `None` never rotates.
    pub max_size: Option<u64>,
    /// Files kept, the current one included (1 = truncate in place, as dockerd does).
    pub max_file: u32,
    /// Gzip rotated files (`<log>.N.gz`).
    pub compress: bool,
}

/// An open json-file log.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rot: Rotation,
    /// `,"attrs":{...}` rendered once (empty without attributes).
    attrs: String,
    /// Time of the last entry written to the current file (for the gzip header).
    last_time: String,
    /// The compression of the newest rotated file, while it runs.
    compressing: Option<JoinHandle<()>>,
}

/// The path of rotated file `n` (1 = newest) of log `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    with_suffix(path, &format!(".{n}"))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Replaces `src` by `<src>.gz`, whose gzip header carries dockerd's `{"LastTime":...}` extra
/// field (the time of the file's last entry, by which dockerd skips files older than `--since`)
/// and the inode `src` had, by which `logs -f` knows the file it was reading in its new form.
pub fn compress_file(src: &Path, last_time: &str) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dst = with_suffix(src, ".gz");
    let tmp = with_suffix(src, ".gz.tmp");
    let ino = std::fs::metadata(src)?.ino();
    let extra = format!("{{\"LastTime\":\"{last_time}\",\"Ino\":{ino}}}");
    let mut gz = flate2::GzBuilder::new()
        .extra(extra.into_bytes())
        .write(File::create(&tmp)?, flate2::Compression::default());
    std::io::copy(&mut File::open(src)?, &mut gz)?;
    gz.finish()?.sync_all()?;
    // Renamed complete, so a reader finds either `<log>.1` or a whole `<log>.1.gz`.
    std::fs::rename(&tmp, &dst)?;
    std::fs::remove_file(src)
}

impl LogWriter {
    /// Opens (appends to) `path`; `attrs` are written into every entry, sorted by key.
    pub fn open(path: &Path, rot: Rotation, attrs: &[(String, String)]) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let mut a = String::new();
        if !attrs.is_empty() {
            let mut sorted: Vec<_> = attrs.iter().collect();
            sorted.sort();
            a.push_str(",\"attrs\":{");
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    a.push(',');
                }
                push_json_string(&mut a, k.as_bytes());
                a.push(':');
                push_json_string(&mut a, v.as_bytes());
            }
            a.push('}');
        }
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            rot,
            attrs: a,
            last_time: String::new(),
            compressing: None,
        })
    }

    /// Appends one entry per element of `entries` (in one write), rotating first if needed.
    pub fn write_entries(
        &mut self,
        entries: &[Vec<u8>],
        stream: &str,
        time: &str,
    ) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut s = String::with_capacity(entries.iter().map(|e| e.len() + 80).sum());
        let mut line = String::new();
        for e in entries {
            line.clear();
            // Field order as dockerd's jsonlog: log, stream, attrs, time.
            line.push_str("{\"log\":");
            push_json_string(&mut line, e);
            line.push_str(",\"stream\":\"");
            line.push_str(stream);
            line.push('"');
            line.push_str(&self.attrs);
            line.push_str(",\"time\":\"");
            line.push_str(time);
            line.push_str("\"}\n");
            if let Some(max) = self.rot.max_size {
                let pending = self.size + s.len() as u64;
                if pending > 0 && pending + line.len() as u64 > max {
                    self.file.write_all(s.as_bytes())?;
                    if !s.is_empty() {
                        self.note_time(time);
                    }
                    s.clear();
                    self.rotate()?;
                }
            }
            s.push_str(&line);
        }
        self.file.write_all(s.as_bytes())?;
        self.size += s.len() as u64;
        self.note_time(time);
        Ok(())
    }

    /// Remembers the time of entries just written (only compression needs it).
    fn note_time(&mut self, time: &str) {
        if self.rot.compress {
            self.last_time.clear();
            self.last_time.push_str(time);
        }
    }

    /// Shifts `<log>.k` to `<log>.k+1`, the current file to `<log>.1`, and starts a new one;
    /// with `max_file` 1 the current file is truncated instead.
    fn rotate(&mut self) -> std::io::Result<()> {
        if self.rot.max_file <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // The previous compression works on `<log>.1`, which is about to move.
        self.wait_compression();
        // Readers list the files under a shared lock of the directory (berthd's `logs`), so
        // none sees them half shifted.
        let _lock = self
            .path
            .parent()
            .and_then(|d| File::open(d).ok())
            .and_then(|d| nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusive).ok());
        let ext = if self.rot.compress { ".gz" } else { "" };
        let name = |n: u32| with_suffix(&rotated_path(&self.path, n), ext);
        let keep = self.rot.max_file - 1;
        let _ = std::fs::remove_file(name(keep));
        for n in (1..keep).rev() {
            let from = name(n);
            if from.exists() {
                std::fs::rename(&from, name(n + 1))?;
            }
        }
        let newest = rotated_path(&self.path, 1);
        std::fs::rename(&self.path, &newest)?;
        self.file = File::options().create(true).append(true).open(&self.path)?;
        self.size = 0;
        if self.rot.compress {
            let last = std::mem::take(&mut self.last_time);
            self.compressing = Some(std::thread::spawn(move || {
                if let Err(e) = compress_file(&newest, &last) {
                    eprintln!("berth-shim: compress {}: {e}", newest.display());
                }
            }));
        }
        Ok(())
    }

    fn wait_compression(&mut self) {
        if let Some(h) = self.compressing.take() {
            let _ = h.join();
        }
    }

    /// Flushes to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    /// Flushes and waits for a compression still running (before the shim exits).
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.wait_compression();
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_max_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(200),
            max_file: 3,
            compress: false,
        };
        let mut w = LogWriter::open(&p, rot, &[]).unwrap();
        for i in 0..10 {
            w.write_entries(&[format!("line {i}\n").into_bytes()], "stdout", "T")
                .unwrap();
        }
        // A batch of entries is split across files too.
        let batch: Vec<Vec<u8>> = (10..20)
            .map(|i| format!("line {i}\n").into_bytes())
            .collect();
        w.write_entries(&batch, "stdout", "T").unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        assert!(rotated_path(&p, 1).exists());
        assert!(rotated_path(&p, 2).exists());
        assert!(!rotated_path(&p, 3).exists());
        let all = [rotated_path(&p, 2), rotated_path(&p, 1), p.clone()]
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect::<String>();
        // Oldest to newest, consecutive, ending with the last line.
        let nums: Vec<u32> = all
            .lines()
            .map(|l| {
                let s = l.split("line ").nth(1).unwrap();
                s.split('\\').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(*nums.last().unwrap(), 19);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn compressed_rotation() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(200),
            max_file: 3,
            compress: true,
        };
        let mut w = LogWriter::open(&p, rot, &[]).unwrap();
        for i in 0..20 {
            let t = format!("2024-01-01T00:00:{i:02}Z");
            w.write_entries(&[format!("line {i}\n").into_bytes()], "stdout", &t)
                .unwrap();
        }
        w.finish().unwrap();
        let gz = |n: u32| with_suffix(&rotated_path(&p, n), ".gz");
        assert!(gz(1).exists() && gz(2).exists() && !gz(3).exists());
        assert!(!rotated_path(&p, 1).exists() && !rotated_path(&p, 2).exists());
        let read = |f: &Path| {
            let mut d = flate2::read::GzDecoder::new(File::open(f).unwrap());
            let mut s = String::new();
            d.read_to_string(&mut s).unwrap();
            let extra = d.header().unwrap().extra().unwrap().to_vec();
            (s, String::from_utf8(extra).unwrap())
        };
        let (older, _) = read(&gz(2));
        let (newer, extra) = read(&gz(1));
        let current = std::fs::read_to_string(&p).unwrap();
        // Consecutive lines across the two gzipped files and the current one.
        let last = newer.lines().last().unwrap();
        let last = last
            .split("\"time\":\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"}");
        assert!(
            extra.starts_with(&format!("{{\"LastTime\":\"{last}\",\"Ino\":")),
            "{extra}"
        );
        let all = older + &newer + &current;
        let nums: Vec<u32> = all
            .lines()
            .map(|l| {
                l.split("line ")
                    .nth(1)
                    .unwrap()
                    .split('\\')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(*nums.last().unwrap(), 19);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    }

    #[test]
    fn max_file_one_truncates_and_attrs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(100),
            max_file: 1,
            compress: false,
        };
        let attrs = vec![("z".to_string(), "1".to_string()), ("a".into(), "b".into())];
        let mut w = LogWriter::open(&p, rot, &attrs).unwrap();
        for _ in 0..5 {
            w.write_entries(&[b"x\n".to_vec()], "stderr", "T").unwrap();
        }
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            s.lines().next().unwrap(),
            r#"{"log":"x\n","stream":"stderr","attrs":{"a":"b","z":"1"},"time":"T"}"#
        );
        assert!(s.len() <= 100);
        assert!(!rotated_path(&p, 1).exists());
    }
}
