//! Output helpers that reproduce docker's formatting: Go's tabwriter, go-units sizes and durations,
//! truncated IDs and commands, and `table`/raw `--format` rendering.

use std::time::Duration;

use crate::template::{Template, TemplateError};
use crate::value::Value;

/// Aligns tab-separated text like Go's `tabwriter.NewWriter(w, minwidth, tabwidth, padding, ' ', 0)`.
pub fn tabwrite(text: &str, minwidth: usize, padding: usize) -> String {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<Vec<&str>> = if text.is_empty() {
        vec![]
    } else {
        body.split('\n').map(|l| l.split('\t').collect()).collect()
    };
    let mut out = String::new();
    let mut widths = Vec::new();
    format_block(
        &lines,
        0,
        lines.len(),
        &mut widths,
        minwidth,
        padding,
        &mut out,
    );
    out
}

fn width_of(s: &str) -> usize {
    s.chars().count()
}

fn format_block(
    lines: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    minwidth: usize,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = minwidth;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(width_of(lines[this][column]) + padding);
            this += 1;
        }
        widths.push(width);
        format_block(lines, line0, this, widths, minwidth, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &lines[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                for _ in width_of(cell)..widths[j] {
                    out.push(' ');
                }
            }
        }
        out.push('\n');
    }
}

/// go-units `HumanDuration`: "Less than a second", "3 seconds", "About a minute", "2 hours", ...
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if seconds < 1 {
        "Less than a second".into()
    } else if seconds == 1 {
        "1 second".into()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
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

/// "N units ago" for a Unix timestamp, as docker's `RunningFor`/`CreatedSince`.
pub fn ago(unix: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let d = Duration::from_secs(now.saturating_sub(unix).max(0) as u64);
    format!("{} ago", human_duration(d))
}

/// Go's `strconv.FormatFloat(f, 'g', prec, 64)`.
pub fn go_fmt_g(f: f64, prec: usize) -> String {
    let prec = prec.max(1);
    if f == 0.0 {
        return "0".into();
    }
    let e = format!("{:.*e}", prec - 1, f.abs());
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = prec as i32;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    let sign = if f < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let p = (prec as i32).min(nd);
        let mut s = String::from(sign);
        s.push_str(&digits[..1]);
        if p > 1 {
            s.push('.');
            s.push_str(&digits[1..p as usize]);
        }
        s.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
        return s;
    }
    let mut p = prec as i32;
    if p > dp {
        p = nd;
    }
    let decimals = (p - dp).max(0) as usize;
    format!("{sign}{:.*}", decimals, f.abs())
}

/// go-units `HumanSizeWithPrecision(size, 3)`: decimal units, "4.26MB", "13.3kB", "0B".
pub fn human_size(size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut s = size;
    let mut i = 0;
    while s >= 1000.0 && i < UNITS.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_fmt_g(s, 3), UNITS[i])
}

/// go-units `BytesSize`: binary units with 4 significant digits, "1.5GiB".
pub fn bytes_size(size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut s = size;
    let mut i = 0;
    while s >= 1024.0 && i < UNITS.len() - 1 {
        s /= 1024.0;
        i += 1;
    }
    format!("{}{}", go_fmt_g(s, 4), UNITS[i])
}

/// go-units `RAMInBytes`: "512m" → 536870912 (binary multipliers, optional "b"/"ib").
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("invalid size: '{s}'"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mul: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(format!("invalid suffix: '{unit}'")),
    };
    Ok((n * mul) as i64)
}

/// First 12 hex digits of an ID, without any `sha256:` prefix.
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(12).collect()
}

/// docker's `Ellipsis`: cut to `max` characters, the last one replaced by `…`.
pub fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `time.Time.String()` for a Unix timestamp, in local time: `2024-01-02 15:04:05 +0000 UTC`.
pub fn go_time_string(unix: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(unix, 0).single() {
        Some(t) => {
            let off = t.format("%z").to_string();
            let zone = if off == "+0000" {
                "UTC".to_string()
            } else {
                off.clone()
            };
            format!("{} {off} {zone}", t.format("%Y-%m-%d %H:%M:%S"))
        }
        None => String::new(),
    }
}

/// A `--format` value: `table ...`, a raw template, or one of docker's names (`table`, `json`).
#[derive(Debug)]
pub struct Formatter {
    table: bool,
    tmpl: Template,
}

impl Formatter {
    /// Builds a formatter; `default_table` is used for an empty format or plain `table`.
    pub fn new(format: &str, default_table: &str) -> Result<Self, TemplateError> {
        let f = match format {
            "" | "table" => default_table,
            "json" => "{{json .}}",
            f => f,
        };
        let table = f.starts_with("table");
        let body = if table { &f[5..] } else { f };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        Ok(Formatter {
            table,
            tmpl: Template::parse(&body)?,
        })
    }

    /// Renders rows (and a header built from `header` when this is a table).
    pub fn render(&self, rows: &[Value], header: &Value) -> Result<String, TemplateError> {
        let mut buf = String::new();
        if self.table {
            buf.push_str(&self.tmpl.execute_header(header)?);
            buf.push('\n');
        }
        for r in rows {
            buf.push_str(&self.tmpl.execute(r)?);
            buf.push('\n');
        }
        Ok(if self.table {
            tabwrite(&buf, 10, 3)
        } else {
            buf
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_like_go() {
        let t = "CONTAINER ID\tIMAGE\tCOMMAND\tNAMES\nabc\tbusybox:local\t\"sh\"\tweb\n";
        assert_eq!(
            tabwrite(t, 10, 3),
            "CONTAINER ID   IMAGE           COMMAND   NAMES\nabc            busybox:local   \"sh\"      web\n"
        );
        // Lines with fewer cells end a column block.
        assert_eq!(tabwrite("a\tb\nccc\n", 0, 1), "a b\nccc\n");
        assert_eq!(tabwrite("", 10, 3), "");
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(3)), "3 seconds");
        assert_eq!(human_duration(s(60)), "About a minute");
        assert_eq!(human_duration(s(119)), "About a minute");
        assert_eq!(human_duration(s(120)), "2 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(2 * 3600)), "2 hours");
        assert_eq!(human_duration(s(47 * 3600)), "47 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(15 * 86400)), "2 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(800 * 86400)), "2 years");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(4_261_234.0), "4.26MB");
        assert_eq!(human_size(13_312.0), "13.3kB");
        assert_eq!(human_size(999.0), "999B");
        assert_eq!(human_size(1_000.0), "1kB");
        assert_eq!(human_size(12_000.0), "12kB");
        assert_eq!(human_size(999_500.0), "1e+03kB");
        assert_eq!(human_size(100_000_000.0), "100MB");
        assert_eq!(bytes_size(1536.0 * 1024.0 * 1024.0), "1.5GiB");
        assert_eq!(ram_in_bytes("512m").unwrap(), 512 * 1024 * 1024);
        assert_eq!(ram_in_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(ram_in_bytes("100").unwrap(), 100);
        assert!(ram_in_bytes("12x").is_err());
    }

    #[test]
    fn ids_and_commands() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(
            go_quote(&ellipsis("sh -c 'while true; do date; sleep 1; done'", 20)),
            "\"sh -c 'while true; …\""
        );
        assert_eq!(go_quote(&ellipsis("echo hi", 20)), "\"echo hi\"");
    }

    #[test]
    fn table_formatter() {
        let f = Formatter::new("table {{.ID}}\\t{{.Names}}", "").unwrap();
        let rows = vec![Value::object([
            ("ID", Value::from("abc")),
            ("Names", Value::from("web")),
        ])];
        let header = Value::object([
            ("ID", Value::from("CONTAINER ID")),
            ("Names", Value::from("NAMES")),
        ]);
        assert_eq!(
            f.render(&rows, &header).unwrap(),
            "CONTAINER ID   NAMES\nabc            web\n"
        );
        let raw = Formatter::new("{{.ID}} {{.Names}}", "").unwrap();
        assert_eq!(raw.render(&rows, &header).unwrap(), "abc web\n");
    }
}
