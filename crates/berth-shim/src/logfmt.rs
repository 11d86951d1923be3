//! Docker's json-file log format and RFC 3339 timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest partial line kept before it is logged on its own (as dockerd does, 16 KiB).
pub const MAX_LINE: usize = 16 * 1024;

/// Formats `t` as RFC 3339 in UTC with nine fractional digits (Docker's `RFC3339NanoFixed`),
/// e.g. `2026-11-25T21:50:20.123456789Z`.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends `s` to `out` as a JSON string, escaped like Go's `encoding/json` (HTML-safe, invalid
/// UTF-8 replaced by U+FFFD), as dockerd writes its logs.
pub fn push_json_string(out: &mut String, bytes: &[u8]) {
    let s = String::from_utf8_lossy(bytes);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One json-file log line (with its trailing `\n`).
pub fn log_line(log: &[u8], stream: &str, time: &str) -> String {
    let mut s = String::with_capacity(log.len() + 64);
    s.push_str("{\"log\":");
    push_json_string(&mut s, log);
    s.push_str(",\"stream\":\"");
    s.push_str(stream);
    s.push_str("\",\"time\":\"");
    s.push_str(time);
    s.push_str("\"}\n");
    s
}

/// Splits a byte stream into log entries: one per line (newline kept), partial lines once
/// they reach [`MAX_LINE`] or at the end.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Adds bytes; returns the entries now complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|b| *b == b'\n') {
            out.push(self.buf[start..start + i + 1].to_vec());
            start += i + 1;
        }
        while self.buf.len() - start >= MAX_LINE {
            out.push(self.buf[start..start + MAX_LINE].to_vec());
            start += MAX_LINE;
        }
        self.buf.drain(..start);
        out
    }

    /// The remaining partial line, if any.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::new(1_764_107_420, 5);
        assert_eq!(rfc3339_nano(t), "2025-11-25T21:50:20.000000005Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 0); // leap day
        assert_eq!(rfc3339_nano(t), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn line_format_matches_docker() {
        assert_eq!(
            log_line(b"hi <b>&\"\\\t\x01\n", "stdout", "T"),
            "{\"log\":\"hi \\u003cb\\u003e\\u0026\\\"\\\\\\t\\u0001\\n\",\"stream\":\"stdout\",\"time\":\"T\"}\n"
        );
        assert_eq!(
            log_line(b"\xff", "stderr", "T"),
            "{\"log\":\"\u{fffd}\",\"stream\":\"stderr\",\"time\":\"T\"}\n"
        );
    }

    #[test]
    fn splitter() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\nb"), vec![b"a\n".to_vec()]);
        assert_eq!(s.push(b"c\n\nd"), vec![b"bc\n".to_vec(), b"\n".to_vec()]);
        assert_eq!(s.finish(), Some(b"d".to_vec()));
        assert_eq!(s.finish(), None);
        let big = vec![b'x'; MAX_LINE + 3];
        let out = s.push(&big);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(s.finish().unwrap().len(), 3);
    }
}
