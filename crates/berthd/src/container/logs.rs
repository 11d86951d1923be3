//! `GET /containers/{id}/logs`: reading the json-file log, with tail, since/until, timestamps, follow.

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use berth_api::stdcopy::{StreamType, encode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
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
    let e = parse_line(line)?;
    let stream = if e.stream == "stderr" {
        if !o.stderr {
            return None;
        }
        StreamType::Stderr
    } else {
        if !o.stdout {
            return None;
        }
        StreamType::Stdout
    };
    if o.since.is_some() || o.until.is_some() {
        let t = crate::util::parse_time(&e.time)?;
        if o.since.is_some_and(|s| t <= s) || o.until.is_some_and(|u| t > u) {
            return None;
        }
    }
    let mut data = Vec::with_capacity(e.log.len() + 40);
    if o.timestamps {
        data.extend_from_slice(e.time.as_bytes());
        data.push(b' ');
    }
    data.extend_from_slice(e.log.as_bytes());
    Some(if o.tty {
        Bytes::from(data)
    } else {
        encode(stream, &data)
    })
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

/// Streams the log to `tx` until done (or, with `follow`, until the container has ended).
pub async fn stream(
    path: &Path,
    o: LogOptions,
    mut alive: watch::Receiver<Signal>,
    tx: mpsc::Sender<Bytes>,
) {
    let start = match (o.tail, std::fs::File::open(path)) {
        (Some(n), Ok(mut f)) => tail_offset(&mut f, n).unwrap_or(0),
        _ => 0,
    };
    let mut file = loop {
        match tokio::fs::File::open(path).await {
            Ok(f) => break f,
            Err(_) if o.follow && alive.borrow().running => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => return,
        }
    };
    if file.seek(SeekFrom::Start(start)).await.is_err() {
        return;
    }
    let mut rd = BufReader::new(file);
    let mut line = Vec::new();
    let mut last_check = false;
    loop {
        match rd.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => {
                if !o.follow || last_check {
                    return;
                }
                // End of what is written so far: wait for more or for the container to end.
                if !alive.borrow().running || alive.borrow().removed {
                    last_check = true;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(150)) => {}
                    r = alive.changed() => { if r.is_err() { last_check = true; } }
                }
                if tx.is_closed() {
                    return;
                }
            }
            Ok(_) => {
                if line.last() != Some(&b'\n') {
                    // A partial line: the shim is still writing it.
                    if !o.follow || last_check {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if let Some(b) = render(&line, &o) {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
                line.clear();
            }
        }
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
