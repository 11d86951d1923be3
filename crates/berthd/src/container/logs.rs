//! `GET /containers/{id}/logs`: reading the json-file log, with tail, since/until, timestamps, follow.

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_api::stdcopy::StreamType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::Signal;
use crate::error::{Error, Result};

/// One line of the json-file log.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Entry<'a> {
    /// The bytes logged (with their newline).
    #[serde(borrow)]
    pub log: Cow<'a, str>,
    /// `stdout` or `stderr`.
    #[serde(borrow, default)]
    pub stream: Cow<'a, str>,
    /// RFC3339Nano.
    #[serde(borrow, default)]
    pub time: Cow<'a, str>,
    /// Extra attributes (`--log-opt labels=`, `env=`), sorted by key.
    #[serde(default)]
    pub attrs: Option<std::collections::BTreeMap<String, String>>,
}

/// Parses one log line; `None` for a malformed line.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    serde_json::from_slice(line).ok()
}

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Keep streaming until the container ends.
    pub follow: bool,
    /// Show stdout.
    pub stdout: bool,
    /// Show stderr.
    pub stderr: bool,
    /// Only entries after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Prefix lines with their time.
    pub timestamps: bool,
    /// The last N lines only.
    pub tail: Option<usize>,
    /// The container has a TTY: raw output instead of frames.
    pub tty: bool,
    /// Prefix lines with the entry's extra attributes (`--details`).
    pub details: bool,
}

/// Parses `since`/`until`: Unix seconds with optional fraction (as the CLI sends) or RFC3339.
pub fn parse_timestamp(s: &str) -> Result<Option<DateTime<Utc>>> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    if let Some(t) = crate::util::parse_time(s) {
        return Ok(Some(t));
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs
        .parse()
        .map_err(|_| Error::invalid(format!("invalid timestamp: {s}")))?;
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos: u32 = frac
        .parse()
        .map_err(|_| Error::invalid(format!("invalid timestamp: {s}")))?;
    Ok(DateTime::from_timestamp(secs, nanos))
}

/// Parses `tail`: `all`, empty or a negative number mean everything.
pub fn parse_tail(s: Option<&str>) -> Result<Option<usize>> {
    match s.map(str::trim) {
        None | Some("") | Some("all") => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n < 0 => Ok(None),
            Ok(n) => Ok(Some(n as usize)),
            Err(_) => Err(Error::invalid(format!("invalid tail value: {v}"))),
        },
    }
}

/// Renders an entry for the client, or `None` when filtered out.
pub fn render(line: &[u8], o: &LogOptions) -> Option<Bytes> {
    let mut out = Vec::new();
    render_into(line, o, &mut out).then(|| Bytes::from(out))
}

/// Appends the rendering of an entry to `out`; false when filtered out (or malformed).
pub fn render_into(line: &[u8], o: &LogOptions, out: &mut Vec<u8>) -> bool {
    let Some(e) = parse_line(line) else {
        return false;
    };
    let stream = if e.stream == "stderr" {
        if !o.stderr {
            return false;
        }
        StreamType::Stderr
    } else {
        if !o.stdout {
            return false;
        }
        StreamType::Stdout
    };
    if o.since.is_some() || o.until.is_some() {
        let Some(t) = crate::util::parse_time(&e.time) else {
            return false;
        };
        if o.since.is_some_and(|s| t < s) || o.until.is_some_and(|u| t > u) {
            return false;
        }
    }
    let header = out.len();
    if !o.tty {
        out.extend_from_slice(&[0; 8]);
    }
    let body = out.len();
    if o.timestamps {
        out.extend_from_slice(e.time.as_bytes());
        out.push(b' ');
    }
    if o.details {
        // As dockerd: `k=v,k2=v2 ` (query-escaped, sorted by key), a lone space without attrs.
        if let Some(a) = &e.attrs {
            for (i, (k, v)) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                query_escape(k, out);
                out.push(b'=');
                query_escape(v, out);
            }
        }
        out.push(b' ');
    }
    out.extend_from_slice(e.log.as_bytes());
    if !o.tty {
        let len = (out.len() - body) as u32;
        out[header] = stream as u8;
        out[header + 4..header + 8].copy_from_slice(&len.to_be_bytes());
    }
    true
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str, out: &mut Vec<u8>) {
    for &c in s.as_bytes() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(c),
            b' ' => out.push(b'+'),
            c => out.extend_from_slice(format!("%{c:02X}").as_bytes()),
        }
    }
}

/// The byte offset where the last `n` lines of the file start.
pub fn tail_offset(f: &mut std::fs::File, n: usize) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok(len);
    }
    let mut pos = len;
    let mut newlines = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    // A final newline ends the last line; it does not start one.
    let mut skip_last = true;
    while pos > 0 {
        let chunk = (pos as usize).min(buf.len());
        pos -= chunk as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..chunk])?;
        for i in (0..chunk).rev() {
            if buf[i] == b'\n' {
                if skip_last && pos + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        skip_last = false;
    }
    Ok(0)
}

/// Rotated file `n` (1 = newest) of log `path`, as the shim names it (`<log>.n`).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn gz_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(".gz");
    PathBuf::from(s)
}

/// The log's files, oldest first: `<log>.N` … `<log>.1` (rotated by the shim; `<log>.N.gz`
/// with `compress`), then `<log>`.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for n in 1.. {
        let p = rotated_path(path, n);
        let gz = gz_path(&p);
        // The shim compresses outside the directory lock (`.N.gz` appears, then `.N` goes):
        // the `.gz` is looked for again once `.N` is seen gone.
        match [&gz, &p, &gz].into_iter().find(|f| f.exists()) {
            Some(f) => rotated.push(f.clone()),
            None => break,
        }
    }
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

/// An unnamed file in `dir` (removed once closed).
fn scratch_file(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_TMPFILE.bits())
        .open(dir);
    if let Ok(f) = tmpfile {
        return Ok(f);
    }
    // Filesystems without O_TMPFILE: a named file, unlinked at once.
    let name = dir.join(format!(
        ".log-read-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(f)
}

/// A log file opened under the directory lock: its path when opened, the open file (gzipped
/// ones still compressed) and the inode the shim wrote it as (a gzipped file names it in its
/// header; the file is removed once compressed).
struct RawLog {
    path: PathBuf,
    file: std::fs::File,
    ino: u64,
    /// A gzipped file's last entry time (`LastTime` in its header).
    last_time: Option<DateTime<Utc>>,
}

/// An open, readable log file and the inode the shim wrote it as.
struct LogFile {
    file: std::fs::File,
    ino: u64,
}

fn is_gz(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "gz")
}

/// What the header of a gzipped rotated file says: the inode it was written as and the time of
/// its last entry (`Ino`, `LastTime` in the extra field). Only the header is read, and the file
/// is left at its start.
fn gz_header(f: &std::fs::File) -> (u64, Option<DateTime<Utc>>) {
    let mut r = f;
    let v = flate2::read::GzDecoder::new(r)
        .header()
        .and_then(|h| h.extra())
        .and_then(|x| serde_json::from_slice::<serde_json::Value>(x).ok())
        .unwrap_or_default();
    let _ = r.seek(SeekFrom::Start(0));
    let last = v["LastTime"].as_str().and_then(crate::util::parse_time);
    (v["Ino"].as_u64().unwrap_or(0), last)
}

/// Lists and opens the log's files (oldest first) under a shared lock of their directory: the
/// shim shifts them under an exclusive one, so no rotation is seen half done. Decompression
/// happens later, outside the lock, not to hold the container's output up.
fn open_all(path: &Path) -> Vec<RawLog> {
    use std::os::unix::fs::MetadataExt;
    let _lock = path
        .parent()
        .and_then(|d| std::fs::File::open(d).ok())
        .and_then(|d| nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockShared).ok());
    let mut out = Vec::new();
    for p in log_files(path) {
        // A `<log>.N` compressed (and removed) since it was listed is found as its `.gz`.
        let opened = std::fs::File::open(&p)
            .map(|f| (p.clone(), f))
            .or_else(|_| std::fs::File::open(gz_path(&p)).map(|f| (gz_path(&p), f)));
        let Ok((path, file)) = opened else { continue };
        let (ino, last_time) = if is_gz(&path) {
            gz_header(&file)
        } else {
            (file.metadata().map(|m| m.ino()).unwrap_or(0), None)
        };
        out.push(RawLog {
            path,
            file,
            ino,
            last_time,
        });
    }
    out
}

/// Makes a listed file readable: a gzipped one is decompressed into a scratch file beside it (as
/// dockerd does), so that tail and seeks work alike on every file.
fn readable(raw: RawLog) -> Option<LogFile> {
    if !is_gz(&raw.path) {
        return Some(LogFile {
            file: raw.file,
            ino: raw.ino,
        });
    }
    let mut dec = flate2::read::GzDecoder::new(raw.file);
    let mut file = scratch_file(raw.path.parent()?).ok()?;
    std::io::copy(&mut dec, &mut file).ok()?;
    file.seek(SeekFrom::Start(0)).ok()?;
    Some(LogFile { file, ino: raw.ino })
}

/// Where the last `n` lines of `files` (oldest first) start: (file index, byte offset).
fn tail_start(files: &mut [std::fs::File], n: usize) -> (usize, u64) {
    let mut left = n;
    for i in (0..files.len()).rev() {
        let f = &mut files[i];
        let lines = count_lines(f);
        if lines >= left {
            return (i, tail_offset(f, left).unwrap_or(0));
        }
        left -= lines;
    }
    (0, 0)
}

fn count_lines(f: &mut std::fs::File) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    if f.seek(SeekFrom::Start(0)).is_err() {
        return 0;
    }
    while let Ok(k) = f.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count();
    }
    n
}

/// Rendered output collected into large chunks: one channel message (and one HTTP chunk) per
/// 64 KiB instead of one per line, which is what keeps `logs -f` of a chatty container cheap.
struct Batch {
    buf: Vec<u8>,
    tx: mpsc::Sender<Bytes>,
}

impl Batch {
    const CHUNK: usize = 64 * 1024;

    /// Sends what is buffered; false once the client is gone.
    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return !self.tx.is_closed();
        }
        let b = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(Self::CHUNK + 4096),
        ));
        self.tx.blocking_send(b).is_ok()
    }

    fn line(&mut self, line: &[u8], o: &LogOptions) -> bool {
        render_into(line, o, &mut self.buf);
        self.buf.len() < Self::CHUNK || self.flush()
    }
}

/// Reads complete lines of `f` from its current position into the batch; returns false once
/// the client is gone. A partial last line is left unread (the position stays before it).
fn drain(
    f: &mut std::fs::File,
    pos: &mut u64,
    carry: &mut Vec<u8>,
    o: &LogOptions,
    b: &mut Batch,
) -> bool {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(n) => n,
        };
        *pos += n as u64;
        let mut data = &buf[..n];
        while let Some(i) = data.iter().position(|&c| c == b'\n') {
            let ok = if carry.is_empty() {
                b.line(&data[..=i], o)
            } else {
                carry.extend_from_slice(&data[..=i]);
                let l = std::mem::take(carry);
                b.line(&l, o)
            };
            if !ok {
                return false;
            }
            data = &data[i + 1..];
        }
        carry.extend_from_slice(data);
    }
}

/// The files the shim wrote after the one written as inode `ino` (since rotated to `<log>.k`
/// or compressed to `<log>.k.gz`), oldest first and ending with the log itself; every file left
/// when that one was deleted (rotated past `max-file`). All are opened at once, so the next
/// rotations cannot move them away; only the last needs watching, and as it is held open, its
/// inode cannot be reused by a newer file.
fn newer_files(path: &Path, ino: u64) -> Vec<LogFile> {
    let mut all = open_all(path);
    // Newest first: an older compressed file may name the same inode, freed and reused since.
    let from = match all.iter().rposition(|r| r.ino == ino) {
        Some(i) => i + 1,
        None => {
            // As with dockerd, a reader slower than `max-size` × `max-file` loses what was
            // rotated away meanwhile; say so in the daemon's log.
            tracing::warn!(path = %path.display(), "logs -f fell behind the log rotation");
            0
        }
    };
    all.drain(from..).filter_map(readable).collect()
}

/// Whether the log at `path` is still the file written as inode `ino` (true when unsure).
fn is_written_as(path: &Path, ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.ino() == ino) || !path.exists()
}

/// Streams the log (rotated files first) to `tx` until done, or with `follow` until the
/// container has ended, following the shim's rotations.
pub async fn stream(
    path: &Path,
    o: LogOptions,
    alive: watch::Receiver<Signal>,
    tx: mpsc::Sender<Bytes>,
) {
    let path = path.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || stream_blocking(&path, &o, &alive, tx)).await;
}

fn stream_blocking(
    path: &Path,
    o: &LogOptions,
    alive: &watch::Receiver<Signal>,
    tx: mpsc::Sender<Bytes>,
) {
    let ended = || {
        let s = alive.borrow();
        !s.running || s.removed
    };
    let mut b = Batch {
        buf: Vec::with_capacity(Batch::CHUNK + 4096),
        tx,
    };
    // Open every file first, so a rotation while reading neither loses nor repeats a file.
    let mut files: Vec<LogFile> = loop {
        // As dockerd, a gzipped file that ends before `since` is not even decompressed.
        let fs: Vec<_> = open_all(path)
            .into_iter()
            .filter(|r| r.last_time.is_none_or(|t| o.since.is_none_or(|s| t >= s)))
            .filter_map(readable)
            .collect();
        if !fs.is_empty() {
            break fs;
        }
        if !o.follow || ended() || b.tx.is_closed() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut cur_ino = files.last().map_or(0, |f| f.ino);
    let mut files: Vec<std::fs::File> = files.drain(..).map(|f| f.file).collect();
    let (first, off) = match o.tail {
        Some(n) => tail_start(&mut files, n),
        None => (0, 0),
    };
    let last = files.len() - 1;
    let mut carry = Vec::new();
    for (i, f) in files.iter_mut().enumerate().skip(first) {
        let mut pos = if i == first { off } else { 0 };
        if f.seek(SeekFrom::Start(pos)).is_err() {
            continue;
        }
        if !drain(f, &mut pos, &mut carry, o, &mut b) {
            return;
        }
        if i != last {
            carry.clear();
        }
    }
    if !o.follow {
        b.flush();
        return;
    }
    let mut cur = files.pop().expect("one file");
    drop(files);
    let mut queue = std::collections::VecDeque::new();
    let mut pos = cur.stream_position().unwrap_or(0);
    let mut last_check = false;
    loop {
        if !drain(&mut cur, &mut pos, &mut carry, o, &mut b) || !b.flush() {
            return;
        }
        if queue.is_empty() && !is_written_as(path, cur_ino) {
            // Rotated. The shim may have appended to the old file between the drain above and
            // the rotation: read it to its end again (it is no longer written), then go on with
            // the files written after it (several rotations may have happened since the last
            // look).
            if !drain(&mut cur, &mut pos, &mut carry, o, &mut b) {
                return;
            }
            queue = newer_files(path, cur_ino).into();
        }
        if let Some(f) = queue.pop_front() {
            cur = f.file;
            cur_ino = f.ino;
            pos = 0;
            carry.clear();
            continue;
        }
        if last_check {
            return;
        }
        if is_written_as(path, cur_ino) && cur.metadata().map(|m| m.len() < pos).unwrap_or(false) {
            // Truncated in place (`max-file` 1).
            pos = 0;
            carry.clear();
            let _ = cur.seek(SeekFrom::Start(0));
            continue;
        }
        if ended() {
            // One more pass for what the shim wrote before it ended.
            last_check = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const L1: &str = r#"{"log":"one\n","stream":"stdout","time":"2024-01-01T00:00:01.5Z"}"#;
    const L2: &str = r#"{"log":"two\n","stream":"stderr","time":"2024-01-01T00:00:02Z"}"#;
    const L3: &str = r#"{"log":"three\n","stream":"stdout","time":"2024-01-01T00:00:03Z"}"#;

    fn opts() -> LogOptions {
        LogOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }
    }

    #[test]
    fn parse_and_render() {
        let e = parse_line(L1.as_bytes()).unwrap();
        assert_eq!(e.log, "one\n");
        assert_eq!(e.stream, "stdout");
        let esc = parse_line(br#"{"log":"a\"b\n","stream":"stdout","time":"x"}"#).unwrap();
        assert_eq!(esc.log, "a\"b\n");
        let mut o = opts();
        o.tty = true;
        assert_eq!(render(L1.as_bytes(), &o).unwrap(), &b"one\n"[..]);
        o.tty = false;
        let framed = render(L2.as_bytes(), &o).unwrap();
        assert_eq!(&framed[..8], &[2, 0, 0, 0, 0, 0, 0, 4]);
        o.stderr = false;
        assert!(render(L2.as_bytes(), &o).is_none());
        let mut o = opts();
        o.tty = true;
        o.timestamps = true;
        assert_eq!(
            render(L1.as_bytes(), &o).unwrap(),
            &b"2024-01-01T00:00:01.5Z one\n"[..]
        );
        assert!(parse_line(b"garbage").is_none());
    }

    #[test]
    fn since_until() {
        let mut o = opts();
        o.tty = true;
        o.since = parse_timestamp("1704067201.6").unwrap();
        assert!(render(L1.as_bytes(), &o).is_none());
        assert!(render(L2.as_bytes(), &o).is_some());
        // An entry at `since` itself is shown, as dockerd's `Before(since)` test keeps it.
        o.since = parse_timestamp("2024-01-01T00:00:02Z").unwrap();
        assert!(render(L2.as_bytes(), &o).is_some());
        o.until = parse_timestamp("2024-01-01T00:00:02Z").unwrap();
        assert!(render(L3.as_bytes(), &o).is_none());
        assert!(parse_timestamp("x").is_err());
        assert_eq!(parse_timestamp("0").unwrap(), None);
    }

    #[test]
    fn tails() {
        assert_eq!(parse_tail(Some("all")).unwrap(), None);
        assert_eq!(parse_tail(Some("2")).unwrap(), Some(2));
        assert!(parse_tail(Some("x")).is_err());
        let dir = std::env::temp_dir().join(format!("berthd-tail-{}", std::process::id()));
        let mut f = std::fs::File::create(&dir).unwrap();
        writeln!(f, "{L1}\n{L2}\n{L3}").unwrap();
        let mut f = std::fs::File::open(&dir).unwrap();
        let off = tail_offset(&mut f, 2).unwrap();
        assert_eq!(off as usize, L1.len() + 1);
        assert_eq!(tail_offset(&mut f, 10).unwrap(), 0);
        let len = f.metadata().unwrap().len();
        assert_eq!(tail_offset(&mut f, 0).unwrap(), len);
        std::fs::remove_file(&dir).unwrap();
    }
}
