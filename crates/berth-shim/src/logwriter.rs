//! The json-file log as the shim writes it: Docker's line format, optional `attrs`, and rotation
//! by `max-size`/`max-file` (`<log>.1` is the newest rotated file, `<log>.N` the oldest).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::logfmt::push_json_string;

/// Rotation settings (`--log-opt max-size`, `max-file`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file would grow past this many bytes; `None` never rotates.
    pub max_size: Option<u64>,
    /// Files kept, the current one included (1 = truncate in place, as dockerd does).
    pub max_file: u32,
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
}

/// The path of rotated file `n` (1 = newest) of log `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
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
                    s.clear();
                    self.rotate()?;
                }
            }
            s.push_str(&line);
        }
        self.file.write_all(s.as_bytes())?;
        self.size += s.len() as u64;
        Ok(())
    }

    /// Shifts `<log>.k` to `<log>.k+1`, the current file to `<log>.1`, and starts a new one;
    /// with `max_file` 1 the current file is truncated instead.
    fn rotate(&mut self) -> std::io::Result<()> {
        if self.rot.max_file <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let keep = self.rot.max_file - 1;
        let _ = std::fs::remove_file(rotated_path(&self.path, keep));
        for n in (1..keep).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = File::options().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Flushes to the file.
    pub fn flush(&mut self) -> std::io::Result<()> {
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
    fn max_file_one_truncates_and_attrs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c-json.log");
        let rot = Rotation {
            max_size: Some(100),
            max_file: 1,
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
