//! API version negotiation, as dockerd does it.

use std::fmt;

/// An Engine API version such as `1.44`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// Major part (always 1 so far).
    pub major: u32,
    /// Minor part.
    pub minor: u32,
}

/// The version berthd advertises.
pub const CURRENT: ApiVersion = ApiVersion {
    major: 1,
    minor: 44,
};
/// The oldest version berthd accepts.
pub const MINIMUM: ApiVersion = ApiVersion {
    major: 1,
    minor: 24,
};

impl ApiVersion {
    /// Parses `1.44`; `None` when malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }

    /// Checks a client's requested version, returning dockerd's 400 message when it is out of range.
    pub fn check(self) -> Result<Self, String> {
        if self > CURRENT {
            Err(format!(
                "client version {self} is too new. Maximum supported API version is {CURRENT}"
            ))
        } else if self < MINIMUM {
            Err(format!(
                "client version {self} is too old. Minimum supported API version is {MINIMUM}, please upgrade your client to a newer version"
            ))
        } else {
            Ok(self)
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Splits a request path into its optional `/vX.Y` prefix and the rest.
/// `"/v1.44/containers/json"` gives `(Some("1.44"), "/containers/json")`.
pub fn split_versioned_path(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.') {
            let tail = &rest[end..];
            return (Some(v), if tail.is_empty() { "/" } else { tail });
        }
    }
    (None, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check() {
        assert_eq!(ApiVersion::parse("1.44"), Some(CURRENT));
        assert!(ApiVersion::parse("x").is_none());
        assert!(ApiVersion::parse("1.41").unwrap().check().is_ok());
        assert_eq!(
            ApiVersion::parse("1.50").unwrap().check().unwrap_err(),
            "client version 1.50 is too new. Maximum supported API version is 1.44"
        );
        assert!(
            ApiVersion::parse("1.12")
                .unwrap()
                .check()
                .unwrap_err()
                .contains("too old")
        );
    }

    #[test]
    fn versioned_paths() {
        assert_eq!(
            split_versioned_path("/v1.44/containers/json"),
            (Some("1.44"), "/containers/json")
        );
        assert_eq!(
            split_versioned_path("/containers/json"),
            (None, "/containers/json")
        );
        assert_eq!(split_versioned_path("/volumes"), (None, "/volumes"));
        assert_eq!(split_versioned_path("/v1.40"), (Some("1.40"), "/"));
    }
}
