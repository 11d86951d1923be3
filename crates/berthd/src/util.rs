//! Small helpers: crash-safe writes, time formatting, random IDs.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

/// Writes `data` to `path` crash-safely: a temp file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Replaces `path` atomically (temp file + rename) without fsync: for runtime state under the exec-root,
/// which a daemon crash must never see half-written but which a machine crash wipes anyway, so the
/// fsyncs would only add milliseconds to every container start.
pub fn write_replace(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("getrandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random number below `n` (n > 0).
pub fn random_below(n: usize) -> usize {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).expect("getrandom");
    (u64::from_le_bytes(buf) % n as u64) as usize
}

/// Formats a time as Go's RFC3339Nano (trailing zeros of the fraction trimmed).
pub fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    // "2024-01-01T00:00:00.123450000Z" → "2024-01-01T00:00:00.12345Z"
    if let Some((head, frac)) = s.strip_suffix('Z').and_then(|x| x.rsplit_once('.')) {
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            format!("{head}Z")
        } else {
            format!("{head}.{frac}Z")
        }
    } else {
        s
    }
}

/// The current time as RFC3339Nano.
pub fn now_rfc3339() -> String {
    rfc3339_nano(Utc::now())
}

/// Parses an RFC3339 time; `None` for Docker's zero time or garbage.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if s.is_empty() || s.starts_with("0001-") {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Go's `units.HumanDuration`, as `docker ps` prints it.
pub fn human_duration(secs: i64) -> String {
    let seconds = secs;
    if seconds < 1 {
        return "Less than a second".into();
    } else if seconds == 1 {
        return "1 second".into();
    } else if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = seconds / 60;
    if minutes == 1 {
        return "About a minute".into();
    } else if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (seconds as f64 / 3600.0).round() as i64;
    if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// Docker's truthiness of a query parameter: anything but "", "0", "no", "false", "none".
pub fn bool_value(v: Option<&str>) -> bool {
    match v {
        None => false,
        Some(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "no" | "false" | "none"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(3), "3 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(300), "5 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(72 * 3600), "3 days");
    }

    #[test]
    fn nano_times() {
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.120Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_nano(t), "2024-01-02T03:04:05.12Z");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_nano(t), "2024-01-02T03:04:05Z");
        assert!(parse_time("0001-01-01T00:00:00Z").is_none());
    }

    #[test]
    fn bools() {
        assert!(bool_value(Some("1")));
        assert!(bool_value(Some("true")));
        assert!(!bool_value(Some("0")));
        assert!(!bool_value(Some("False")));
        assert!(!bool_value(None));
    }
}

/// Go's `time.ParseDuration` for the units filters use (`ns`, `us`, `ms`, `s`, `m`, `h`).
pub fn parse_go_duration(s: &str) -> Option<chrono::Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mul = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += v * mul;
        rest = &rest[u..];
    }
    Some(chrono::Duration::nanoseconds((total * 1e9) as i64))
}

/// The `until` filter as dockerd reads it (`timetypes.GetTimestamp`): a Go duration before
/// `now`, an RFC 3339 time, a date, or Unix seconds with an optional fraction.
pub fn parse_until(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Some(d) = parse_go_duration(s) {
        return Some(now - d);
    }
    if let Some(t) = parse_time(s) {
        return Some(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs.parse().ok()?;
    let frac = format!("{frac:0<9}");
    let nanos: u32 = frac.get(..9)?.parse().ok()?;
    DateTime::from_timestamp(secs, nanos)
}

#[cfg(test)]
mod until_tests {
    use super::*;

    #[test]
    fn until_forms() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            parse_until("1h30m", now).unwrap().timestamp(),
            1_700_000_000 - 5400
        );
        assert_eq!(parse_until("10s", now).unwrap().timestamp(), 1_699_999_990);
        assert_eq!(
            parse_until("1600000000", now).unwrap().timestamp(),
            1_600_000_000
        );
        assert_eq!(
            parse_until("2024-01-02", now).unwrap().to_rfc3339(),
            "2024-01-02T00:00:00+00:00"
        );
        assert!(parse_until("2024-01-02T03:04:05Z", now).is_some());
        assert!(parse_until("abc", now).is_none());
        assert!(parse_until("5x", now).is_none());
    }
}

/// Durations of the steps of one operation, logged at debug level (to see where start time goes).
#[derive(Debug)]
pub struct Phases {
    last: std::time::Instant,
    steps: Vec<(&'static str, std::time::Duration)>,
}

impl Default for Phases {
    fn default() -> Self {
        Self::new()
    }
}

impl Phases {
    /// Starts timing now.
    pub fn new() -> Self {
        Self {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Ends the step called `name`.
    pub fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }

    /// Logs the steps of `what` for container `id`.
    pub fn log(&self, what: &str, id: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let s: Vec<String> = self
                .steps
                .iter()
                .map(|(n, d)| format!("{n}={:.2}ms", d.as_secs_f64() * 1e3))
                .collect();
            tracing::debug!(id, "{what} phases: {}", s.join(" "));
        }
    }
}
