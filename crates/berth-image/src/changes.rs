//! `--change` instructions of `import` (a Dockerfile subset applied to the image config).

use std::collections::BTreeMap;

use crate::config::ContainerConfig;
use crate::error::{Error, Result};

/// Splits `s` into words on whitespace, honouring double and single quotes and backslash escapes.
fn words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Error::invalid(format!(
            "unexpected end of statement while looking for matching quote: {s}"
        )));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// `k=v k2="v 2"` pairs, or the legacy `k v` form.
fn key_values(instr: &str, rest: &str) -> Result<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if first.is_empty() {
        return Err(Error::invalid(format!(
            "{instr} requires at least one argument"
        )));
    }
    if !first.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let v = words(v.trim())?.join(" ");
        return Ok(vec![(k.to_string(), v)]);
    }
    words(rest)?
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::invalid(format!("{instr} names can not be blank"))),
        })
        .collect()
}

/// Exec form (`["a","b"]`) or shell form (`a b` → `/bin/sh -c "a b"`).
fn command(rest: &str) -> Vec<String> {
    if rest.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(rest)
    {
        return v;
    }
    vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
}

/// Applies one change instruction (`CMD`, `ENTRYPOINT`, `ENV`, `EXPOSE`, `LABEL`, `ONBUILD`, `STOPSIGNAL`,
/// `USER`, `VOLUME`, `WORKDIR`) to `cfg`, as `docker import --change` does.
pub fn apply_change(cfg: &mut ContainerConfig, change: &str) -> Result<()> {
    let change = change.trim();
    let (instr, rest) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    let upper = instr.to_ascii_uppercase();
    match upper.as_str() {
        "CMD" => cfg.cmd = Some(command(rest)),
        "ENTRYPOINT" => {
            cfg.entrypoint = Some(if rest.is_empty() {
                Vec::new()
            } else {
                command(rest)
            });
            // As in a Dockerfile, ENTRYPOINT resets CMD.
            cfg.cmd = None;
        }
        "ENV" => {
            for (k, v) in key_values("ENV", rest)? {
                let entry = format!("{k}={v}");
                match cfg
                    .env
                    .iter_mut()
                    .find(|e| e.split('=').next() == Some(k.as_str()))
                {
                    Some(e) => *e = entry,
                    None => cfg.env.push(entry),
                }
            }
        }
        "LABEL" => {
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in key_values("LABEL", rest)? {
                labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in words(rest)? {
                let p = if p.contains('/') {
                    p.to_ascii_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                let num = p.split('/').next().unwrap_or("");
                if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                    return Err(Error::invalid(format!("invalid containerPort: {num}")));
                }
                ports.insert(p, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|e| Error::invalid(format!("VOLUME: {e}")))?
            } else {
                words(rest)?
            };
            let map = cfg.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                if v.trim().is_empty() {
                    return Err(Error::invalid(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                map.insert(v, serde_json::json!({}));
            }
        }
        "USER" => cfg.user = rest.to_string(),
        "WORKDIR" => {
            cfg.working_dir = if rest.starts_with('/') {
                rest.to_string()
            } else {
                let base = if cfg.working_dir.is_empty() {
                    "/"
                } else {
                    cfg.working_dir.as_str()
                };
                format!("{}/{rest}", base.trim_end_matches('/'))
            }
        }
        "STOPSIGNAL" => cfg.stop_signal = rest.to_string(),
        "ONBUILD" => cfg
            .on_build
            .get_or_insert_with(Vec::new)
            .push(rest.to_string()),
        _ => {
            return Err(Error::invalid(format!(
                "{instr} is not a valid change command"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_docker_changes() {
        let mut c = ContainerConfig::default();
        for ch in [
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENV A=1 B=\"two words\"",
            "ENV A 3",
            "WORKDIR /app",
            "WORKDIR sub",
            "USER nobody",
            "EXPOSE 80 53/udp",
            "LABEL version=1.0 \"x y\"=z",
            "VOLUME /data",
            "STOPSIGNAL SIGTERM",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(c.cmd.as_ref().unwrap(), &["sh", "-c", "echo hi"]);
        assert_eq!(c.env, vec!["A=3", "B=two words"]);
        assert_eq!(c.working_dir, "/app/sub");
        assert_eq!(c.user, "nobody");
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("80/tcp"));
        assert!(c.exposed_ports.as_ref().unwrap().contains_key("53/udp"));
        assert_eq!(c.labels.as_ref().unwrap()["x y"], "z");
        assert!(c.volumes.as_ref().unwrap().contains_key("/data"));
        assert_eq!(c.stop_signal, "SIGTERM");
        apply_change(&mut c, "cmd echo hi").unwrap();
        assert_eq!(c.cmd.as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
        apply_change(&mut c, "ENTRYPOINT [\"/bin/busybox\"]").unwrap();
        assert_eq!(c.cmd, None);
        let e = apply_change(&mut c, "RUN rm -rf /").unwrap_err();
        assert_eq!(e.to_string(), "RUN is not a valid change command");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
        assert!(apply_change(&mut c, "ENV").is_err());
    }
}
