//! Signal names and numbers as Docker accepts them (`SIGTERM`, `TERM`, `15`).

use crate::error::{Error, Result};

const SIGNALS: &[(&str, i32)] = &[
    ("ABRT", 6),
    ("ALRM", 14),
    ("BUS", 7),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("FPE", 8),
    ("HUP", 1),
    ("ILL", 4),
    ("INT", 2),
    ("IO", 29),
    ("IOT", 6),
    ("KILL", 9),
    ("PIPE", 13),
    ("POLL", 29),
    ("PROF", 27),
    ("PWR", 30),
    ("QUIT", 3),
    ("SEGV", 11),
    ("STKFLT", 16),
    ("STOP", 19),
    ("SYS", 31),
    ("TERM", 15),
    ("TRAP", 5),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("USR1", 10),
    ("USR2", 12),
    ("VTALRM", 26),
    ("WINCH", 28),
    ("XCPU", 24),
    ("XFSZ", 25),
];

/// Parses a signal name or number; unknown is dockerd's 400 `Invalid signal: X`.
pub fn parse(s: &str) -> Result<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(Error::invalid(format!("Invalid signal: {s}")));
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = rest
            .strip_prefix('+')
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        return Ok(34 + off);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = rest
            .strip_prefix('-')
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        return Ok(64 - off);
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| Error::invalid(format!("Invalid signal: {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("SIGTERM").unwrap(), 15);
        assert_eq!(parse("kill").unwrap(), 9);
        assert_eq!(parse("9").unwrap(), 9);
        assert_eq!(parse("SIGRTMIN+1").unwrap(), 35);
        assert!(parse("NOPE").is_err());
        assert!(parse("0").is_err());
    }
}
