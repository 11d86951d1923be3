//! Docker image references (`busybox`, `127.0.0.1:5000/team/app:1.2`, `name@sha256:...`), parsed and
//! normalized like Docker's `distribution/reference` (`ParseNormalizedNamed`, `FamiliarString`).

use std::fmt;

use crate::digest::{Digest, is_hex64};
use crate::error::{Error, Result};

const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// The tag a reference without tag or digest gets.
pub const DEFAULT_TAG: &str = "latest";

/// A normalized image reference: domain, repository path, optional tag and digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn invalid_format() -> Error {
    Error::invalid("invalid reference format")
}

impl Reference {
    /// Parses and normalizes a reference as `docker` does (`busybox` → `docker.io/library/busybox`),
    /// without adding a default tag.
    pub fn parse(s: &str) -> Result<Reference> {
        if is_hex64(s) {
            return Err(Error::invalid(format!(
                "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => &remainder[..],
        };
        if remote.to_lowercase() != remote {
            return Err(Error::invalid(format!(
                "invalid reference format: repository name ({remote}) must be lowercase"
            )));
        }
        parse_full(&domain, &remainder)
    }

    /// Parses like [`Reference::parse`] and adds the tag `latest` if the reference has neither tag nor digest.
    pub fn parse_tagged(s: &str) -> Result<Reference> {
        Ok(Reference::parse(s)?.with_default_tag())
    }

    /// Adds tag `latest` if there is neither a tag nor a digest (Docker's `TagNameOnly`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// The domain, e.g. `docker.io`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path without domain, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The full repository name, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The familiar repository name, e.g. `busybox` or `127.0.0.1:5000/team/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The full string, e.g. `docker.io/library/busybox:latest`.
    pub fn full_string(&self) -> String {
        self.render(self.name())
    }

    /// The familiar string, e.g. `busybox:latest` (also what `Display` prints).
    pub fn familiar_string(&self) -> String {
        self.render(self.familiar_name())
    }

    fn render(&self, mut name: String) -> String {
        if let Some(t) = &self.tag {
            name.push(':');
            name.push_str(t);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(d.as_str());
        }
        name
    }

    /// This repository with `tag` (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !valid_tag(tag) {
            return Err(invalid_format());
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// This repository with `digest` (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar_string())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({})", self.full_string())
    }
}

fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i) => {
            let first = &name[..i];
            if !first.contains(['.', ':']) && first != "localhost" && first.to_lowercase() == first
            {
                (DEFAULT_DOMAIN.to_string(), name.to_string())
            } else {
                (first.to_string(), name[i + 1..].to_string())
            }
        }
        None => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// Parses `remainder` = `path[:tag][@digest]` below `domain` with the reference grammar.
fn parse_full(domain: &str, remainder: &str) -> Result<Reference> {
    let (rest, digest) = match remainder.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (remainder, None),
    };
    let (path, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let lower_ok = path.split('/').all(valid_path_component);
    if !valid_domain(domain) || !lower_ok {
        let lowered = path.to_lowercase();
        if valid_domain(domain) && lowered.split('/').all(valid_path_component) {
            return Err(Error::invalid(
                "invalid reference format: repository name must be lowercase",
            ));
        }
        return Err(invalid_format());
    }
    if let Some(t) = tag
        && !valid_tag(t)
    {
        return Err(invalid_format());
    }
    let digest = match digest {
        None => None,
        Some(d) => {
            if !valid_digest_syntax(d) {
                return Err(invalid_format());
            }
            Some(Digest::parse(d)?)
        }
    };
    if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(Error::invalid(format!(
            "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )));
    }
    Ok(Reference {
        domain: domain.to_string(),
        path: path.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `host[:port]` where host is a domain name or `[ipv6]`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return false;
        };
        let ip = &rest[..end];
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    match host {
        None => true,
        Some(h) => h.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }),
    }
}

/// `[\w][\w.-]{0,127}`
pub(crate) fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let w = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    !b.is_empty()
        && b.len() <= 128
        && w(b[0])
        && b.iter().all(|x| w(*x) || *x == b'.' || *x == b'-')
}

/// `algorithm:hex` with the reference grammar's loose syntax.
fn valid_digest_syntax(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(|x| x.is_ascii_alphanumeric())
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse_tagged(s).unwrap().full_string()
    }

    fn fam(s: &str) -> String {
        Reference::parse_tagged(s).unwrap().familiar_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(fam("busybox"), "busybox:latest");
        assert_eq!(fam("busybox:local"), "busybox:local");
        assert_eq!(fam("library/busybox"), "busybox:latest");
        assert_eq!(fam("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(fam("index.docker.io/library/busybox"), "busybox:latest");
        assert_eq!(fam("team/app"), "team/app:latest");
        assert_eq!(full("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            fam("127.0.0.1:5000/team/app:1.2"),
            "127.0.0.1:5000/team/app:1.2"
        );
        assert_eq!(fam("localhost/app"), "localhost/app:latest");
        assert_eq!(fam("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(fam("[::1]:5000/app:v1"), "[::1]:5000/app:v1");
        assert_eq!(
            fam("a__b-c---d/f_g.h:V1.0-rc_2"),
            "a__b-c---d/f_g.h:V1.0-rc_2"
        );
        // A first component with a dot is a domain, and this one is not valid.
        assert!(Reference::parse("a__b.c/d").is_err());
        let r = Reference::parse_tagged("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "team/app");
        assert_eq!(r.tag(), Some("1.2"));
        assert_eq!(r.familiar_name(), "127.0.0.1:5000/team/app");
    }

    #[test]
    fn digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse_tagged(&format!("busybox@sha256:{hex}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), hex);
        assert_eq!(r.familiar_string(), format!("busybox@sha256:{hex}"));
        let r = Reference::parse(&format!("busybox:1@sha256:{hex}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert!(Reference::parse("busybox@sha256:abc").is_err());
    }

    #[test]
    fn invalid_references() {
        let msg = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert_eq!(
            msg("library/Foo"),
            "invalid reference format: repository name (library/Foo) must be lowercase"
        );
        assert_eq!(
            msg("Foo"),
            "invalid reference format: repository name (library/Foo) must be lowercase"
        );
        assert_eq!(msg(""), "invalid reference format");
        assert_eq!(msg("a b"), "invalid reference format");
        assert_eq!(msg("busybox:"), "invalid reference format");
        assert_eq!(msg("busybox:-x"), "invalid reference format");
        assert_eq!(msg("-busybox"), "invalid reference format");
        assert_eq!(msg("bus..box"), "invalid reference format");
        assert_eq!(msg("busybox/"), "invalid reference format");
        assert_eq!(msg("//x"), "invalid reference format");
        assert_eq!(
            msg("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            "invalid repository name (e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855), cannot specify 64-byte hexadecimal strings"
        );
        assert!(Reference::parse(&"a".repeat(300)).is_err());
        assert!(Reference::parse(&format!("x:{}", "t".repeat(129))).is_err());
        for e in ["library/Foo", "", "a b"] {
            assert_eq!(
                Reference::parse(e).unwrap_err().kind(),
                crate::ErrorKind::InvalidArgument
            );
        }
    }
}
