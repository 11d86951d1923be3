//! Container names: validation like Docker's and generated `adjective_surname` names.

use crate::error::{Error, Result};
use crate::util::random_below;

const ADJECTIVES: &[&str] = &[
    "agile", "amber", "ample", "brave", "breezy", "bright", "calm", "candid", "clever", "cosmic",
    "crisp", "curious", "daring", "dazzling", "deft", "eager", "earnest", "fearless", "fervent",
    "gentle", "gleaming", "glad", "graceful", "hardy", "hearty", "humble", "jolly", "keen", "kind",
    "lively", "lucid", "mellow", "merry", "mighty", "modest", "nimble", "noble", "patient",
    "placid", "plucky", "polite", "proud", "quick", "quiet", "radiant", "rapid", "serene", "sharp",
    "sleek", "smooth", "snug", "spry", "steady", "stoic", "sturdy", "sunny", "swift", "tender",
    "tidy", "trusty", "vivid", "warm", "wise", "witty", "zealous", "zesty",
];

const SURNAMES: &[&str] = &[
    "agnesi",
    "archimedes",
    "babbage",
    "bohr",
    "boole",
    "cantor",
    "carson",
    "cerf",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euclid",
    "euler",
    "faraday",
    "fermat",
    "fermi",
    "feynman",
    "franklin",
    "galileo",
    "gauss",
    "goodall",
    "hamilton",
    "hawking",
    "heisenberg",
    "hertz",
    "hodgkin",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "knuth",
    "lamarr",
    "lamport",
    "leavitt",
    "liskov",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "mirzakhani",
    "morse",
    "newton",
    "noether",
    "pascal",
    "pasteur",
    "planck",
    "ramanujan",
    "ritchie",
    "shannon",
    "somerville",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "volta",
    "wiles",
    "wozniak",
    "wu",
    "yalow",
];

/// Validates a user-given name (with or without the leading `/`) and returns it with a leading `/`.
pub fn validate(name: &str) -> Result<String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {
            let rest: Vec<char> = chars.collect();
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        }
        _ => false,
    };
    if ok {
        Ok(format!("/{bare}"))
    } else {
        Err(Error::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// A random `adjective_surname`; after `retry` collisions a digit is appended, as Docker does.
pub fn generate(retry: usize) -> String {
    let name = format!(
        "{}_{}",
        ADJECTIVES[random_below(ADJECTIVES.len())],
        SURNAMES[random_below(SURNAMES.len())]
    );
    if retry > 0 {
        format!("{name}{}", random_below(10))
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert_eq!(validate("web").unwrap(), "/web");
        assert_eq!(validate("/web-1.a_b").unwrap(), "/web-1.a_b");
        assert!(validate("a").is_err());
        assert!(validate("_x").is_err());
        assert!(validate("we b").is_err());
        assert_eq!(
            validate("x!").unwrap_err().to_string(),
            "Invalid container name (x!), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        );
    }

    #[test]
    fn generated_names_are_valid() {
        for i in 0..50 {
            let n = generate(i % 2);
            assert!(validate(&n).is_ok(), "{n}");
            assert!(n.contains('_'));
        }
    }
}
