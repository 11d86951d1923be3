//! Logging drivers: `--log-driver`/`--log-opt` validation as dockerd does it, and the shim
//! arguments that carry rotation and attributes to the shim, which writes the log.

use berth_api::container::LogConfig;

use super::Record;
use crate::error::{Error, Result};

/// Options every driver accepts (dockerd's generic log options).
const GENERIC: &[&str] = &["mode", "max-buffer-size"];
/// Options of the json-file driver (and `local`, stored the same way here).
const JSON_FILE: &[&str] = &[
    "max-file",
    "max-size",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

/// Go's `units.FromHumanSize`: decimal units (`k` = 1000), optional `i`/`b` suffixes.
pub fn from_human_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    let v: f64 = num.parse().ok()?;
    let mut u = unit.trim_start().to_ascii_lowercase();
    if u.ends_with('b') {
        u.pop();
    }
    if u.ends_with('i') {
        u.pop();
    }
    let mul = match u.as_str() {
        "" => 1e0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "p" => 1e15,
        _ => return None,
    };
    Some((v * mul) as u64)
}

/// Checks a container's log configuration at create, with dockerd's messages.
pub fn validate(lc: &LogConfig) -> Result<()> {
    match lc.kind.as_str() {
        "none" => return Ok(()),
        "json-file" | "local" => {}
        other => {
            return Err(Error::invalid(format!(
                "logger: no log driver named '{other}' is registered"
            )));
        }
    }
    for k in lc.config.keys() {
        if !GENERIC.contains(&k.as_str()) && !JSON_FILE.contains(&k.as_str()) {
            return Err(Error::invalid(format!(
                "unknown log opt '{k}' for {} log driver",
                lc.kind
            )));
        }
    }
    let (size, files) = rotation(lc)?;
    if lc.kind == "json-file" && compress(lc)? && (files < 2 || size.is_none()) {
        return Err(Error::invalid(
            "compress cannot be true when max-file is less than 2 or max-size is not set",
        ));
    }
    Ok(())
}

/// json-file's `compress` (Go's `strconv.ParseBool`).
fn compress(lc: &LogConfig) -> Result<bool> {
    match lc.config.get("compress").map(String::as_str) {
        None => Ok(false),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(s) => Err(Error::invalid(format!(
            "strconv.ParseBool: parsing \"{s}\": invalid syntax"
        ))),
    }
}

/// `(max-size, max-file)` of a json-file configuration.
fn rotation(lc: &LogConfig) -> Result<(Option<u64>, u32)> {
    let size = match lc.config.get("max-size") {
        None => None,
        Some(s) => {
            let v =
                from_human_size(s).ok_or_else(|| Error::invalid(format!("invalid size: '{s}'")))?;
            if v == 0 {
                return Err(Error::invalid("max-size must be a positive number"));
            }
            Some(v)
        }
    };
    let files = match lc.config.get("max-file") {
        None => 1,
        Some(s) => {
            let n: i64 = s.parse().map_err(|_| {
                Error::invalid(format!("strconv.Atoi: parsing \"{s}\": invalid syntax"))
            })?;
            if n < 1 {
                return Err(Error::invalid("max-file cannot be less than 1"));
            }
            n.min(u32::MAX as i64) as u32
        }
    };
    Ok((size, files))
}

/// `logs` on a driver that keeps nothing: dockerd's 501.
pub fn check_readable(lc: &LogConfig) -> Result<()> {
    if lc.kind == "none" {
        return Err(Error::NotImplemented(
            "configured logging driver does not support reading".into(),
        ));
    }
    Ok(())
}

/// The extra attributes of each entry: `labels=`/`env=` name container labels and variables.
pub fn attrs(rec: &Record) -> Vec<(String, String)> {
    let lc = &rec.host_config.log_config;
    let mut out = Vec::new();
    if let Some(names) = lc.config.get("labels") {
        for k in names.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            if let Some(v) = rec.config.labels.get(k) {
                out.push((k.to_string(), v.clone()));
            }
        }
    }
    if let Some(names) = lc.config.get("env") {
        for k in names.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            let v = rec.config.env.iter().find_map(|e| {
                e.split_once('=')
                    .filter(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            });
            if let Some(v) = v {
                out.push((k.to_string(), v));
            }
        }
    }
    out
}

/// The shim's logging arguments for this container.
pub fn shim_args(rec: &Record) -> Vec<String> {
    let lc = &rec.host_config.log_config;
    if lc.kind == "none" {
        return vec!["--no-log".into()];
    }
    let mut a = Vec::new();
    if let Ok((Some(s), files)) = rotation(lc) {
        a.push("--log-max-size".into());
        a.push(s.to_string());
        a.push("--log-max-file".into());
        a.push(files.to_string());
        if lc.kind == "json-file" && files > 1 && compress(lc).unwrap_or(false) {
            a.push("--log-compress".into());
        }
    }
    for (k, v) in attrs(rec) {
        a.push("--log-attr".into());
        a.push(format!("{k}={v}"));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(kind: &str, opts: &[(&str, &str)]) -> LogConfig {
        LogConfig {
            kind: kind.into(),
            config: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(from_human_size("10"), Some(10));
        assert_eq!(from_human_size("1k"), Some(1000));
        assert_eq!(from_human_size("1.5m"), Some(1_500_000));
        assert_eq!(from_human_size("2MB"), Some(2_000_000));
        assert_eq!(from_human_size("x"), None);
        assert_eq!(from_human_size("1q"), None);
    }

    #[test]
    fn validation_messages() {
        assert!(validate(&lc("json-file", &[("max-size", "1k"), ("max-file", "3")])).is_ok());
        assert!(validate(&lc("none", &[("whatever", "1")])).is_ok());
        assert_eq!(
            validate(&lc("json-file", &[("foo", "1")]))
                .unwrap_err()
                .to_string(),
            "unknown log opt 'foo' for json-file log driver"
        );
        assert_eq!(
            validate(&lc("syslogx", &[])).unwrap_err().to_string(),
            "logger: no log driver named 'syslogx' is registered"
        );
        assert_eq!(
            validate(&lc("json-file", &[("max-file", "0")]))
                .unwrap_err()
                .to_string(),
            "max-file cannot be less than 1"
        );
        assert_eq!(
            validate(&lc(
                "json-file",
                &[("max-size", "1k"), ("compress", "true")]
            ))
            .unwrap_err()
            .to_string(),
            "compress cannot be true when max-file is less than 2 or max-size is not set"
        );
        assert_eq!(
            validate(&lc("json-file", &[("compress", "yes")]))
                .unwrap_err()
                .to_string(),
            "strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
        let e = check_readable(&lc("none", &[])).unwrap_err();
        assert_eq!(e.status(), 501);
        assert_eq!(
            e.to_string(),
            "configured logging driver does not support reading"
        );
    }

    #[test]
    fn args_for_shim() {
        let mut r = Record::default();
        r.host_config.log_config = lc("json-file", &[("max-size", "2k"), ("labels", "a,b")]);
        r.config.labels.insert("a".into(), "1".into());
        assert_eq!(
            shim_args(&r),
            [
                "--log-max-size",
                "2000",
                "--log-max-file",
                "1",
                "--log-attr",
                "a=1"
            ]
        );
        r.host_config.log_config = lc(
            "json-file",
            &[("max-size", "2k"), ("max-file", "3"), ("compress", "true")],
        );
        assert_eq!(
            shim_args(&r),
            [
                "--log-max-size",
                "2000",
                "--log-max-file",
                "3",
                "--log-compress"
            ]
        );
        r.host_config.log_config = lc("none", &[]);
        assert_eq!(shim_args(&r), ["--no-log"]);
    }
}
