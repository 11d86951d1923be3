//! Progress lines as dockerd streams them for pull and push (`berth_api::progress::JsonMessage`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::progress::{JsonMessage, ProgressDetail};

/// Where progress lines go (e.g. into the HTTP response stream); called from several tasks.
pub type ProgressSink = Arc<dyn Fn(JsonMessage) + Send + Sync>;

/// A sink that drops everything.
pub fn no_progress() -> ProgressSink {
    Arc::new(|_| {})
}

/// Docker's `units.HumanSize`: decimal units, 4 significant digits (`1.235MB`, `32.77kB`, `999B`).
pub fn human_size(n: i64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = n as f64;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g4(size), UNITS[i])
}

/// Go's `%.4g` for the non-negative values `human_size` produces.
fn format_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = format!("{v:.3e}")
        .split('e')
        .nth(1)
        .and_then(|e| e.parse::<i32>().ok())
        .unwrap_or(0);
    let mut s = format!("{:.*}", (3 - exp).max(0) as usize, v);
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

/// The `progress` string dockerd renders (no terminal: width 200, so with the bar; no time left as
/// the daemon does not set a start time): `[=====>       ]  1.2MB/4.5MB`.
pub fn progress_bar(current: i64, total: i64) -> String {
    if current <= 0 && total <= 0 {
        return String::new();
    }
    if total <= 0 {
        return format!("{:>8}", human_size(current));
    }
    let pct = (((current as f64 / total as f64) * 100.0) as i64 / 2).clamp(0, 50) as usize;
    let bar = format!("[{}>{}] ", "=".repeat(pct), " ".repeat(50 - pct));
    let numbers = if current > total {
        format!("{:>8}", human_size(current))
    } else {
        format!("{:>8}/{}", human_size(current), human_size(total))
    };
    bar + &numbers
}

/// Sends progress lines; rate-limits byte updates per layer like dockerd (every 100 ms).
#[derive(Clone)]
pub(crate) struct Reporter {
    sink: ProgressSink,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reporter")
    }
}

impl Reporter {
    pub fn new(sink: ProgressSink) -> Self {
        Reporter { sink }
    }

    /// The last line of a pull: `Status: Downloaded newer image for x` or `... up to date for x`.
    pub fn status(&self, shown: &str, downloaded: bool) {
        self.message(
            None,
            if downloaded {
                format!("Status: Downloaded newer image for {shown}")
            } else {
                format!("Status: Image is up to date for {shown}")
            },
        );
    }

    /// A message without progress (`progress.Message`): `{"status":..,"id":..}`.
    pub fn message(&self, id: Option<&str>, text: impl Into<String>) {
        (self.sink)(JsonMessage {
            status: Some(text.into()),
            id: id.map(str::to_string),
            ..Default::default()
        });
    }

    /// A status update (`progress.Update`): `{"status":..,"progressDetail":{},"id":..}`.
    pub fn update(&self, id: &str, action: &str) {
        (self.sink)(JsonMessage {
            status: Some(action.to_string()),
            progress_detail: Some(ProgressDetail::default()),
            id: Some(id.to_string()),
            ..Default::default()
        });
    }

    /// Byte progress: `{"status":"Downloading","progressDetail":{"current":..,"total":..},"progress":"[=>  ] ..","id":..}`.
    pub fn bytes(&self, id: &str, action: &str, current: i64, total: i64) {
        let bar = progress_bar(current, total);
        (self.sink)(JsonMessage {
            status: Some(action.to_string()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total: (total > 0).then_some(total),
            }),
            progress: (!bar.is_empty()).then_some(bar),
            id: Some(id.to_string()),
            ..Default::default()
        });
    }

    /// An aux line (`{"progressDetail":{},"aux":{...}}`), as after a push.
    pub fn aux(&self, aux: serde_json::Value) {
        (self.sink)(JsonMessage {
            progress_detail: Some(ProgressDetail::default()),
            aux: Some(aux),
            ..Default::default()
        });
    }
}

/// Rate limiter for byte progress of one layer.
#[derive(Debug)]
pub(crate) struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    pub fn new() -> Self {
        Throttle { last: None }
    }

    /// True if an update should be sent now (first, last, or 100 ms after the previous one).
    pub fn ready(&mut self, done: bool) -> bool {
        let now = Instant::now();
        match self.last {
            Some(t) if !done && now.duration_since(t) < Duration::from_millis(100) => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(32768), "32.77kB");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(2_147_483_648), "2.147GB");
        assert_eq!(human_size(100_000), "100kB");
        assert_eq!(human_size(999_999), "1000kB");
    }

    #[test]
    fn bar_like_dockerd() {
        assert_eq!(
            progress_bar(1_048_576, 2_097_152),
            format!("[{}>{}]  1.049MB/2.097MB", "=".repeat(25), " ".repeat(25))
        );
        assert_eq!(
            progress_bar(100, 100),
            format!("[{}>]     100B/100B", "=".repeat(50))
        );
        assert_eq!(progress_bar(0, 0), "");
        assert_eq!(progress_bar(5000, 0), "     5kB");
        let m = JsonMessage {
            status: Some("Downloading".into()),
            progress_detail: Some(ProgressDetail {
                current: Some(1),
                total: Some(2),
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"status":"Downloading","progressDetail":{"current":1,"total":2}}"#
        );
    }
}
