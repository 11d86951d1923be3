//! The `filters` query parameter: `{"name":["web"]}` or the older `{"name":{"web":true}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Parsed filters: each key maps to the values asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl<'de> Deserialize<'de> for Filters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Vals {
            List(Vec<String>),
            Map(BTreeMap<String, bool>),
        }
        let raw: Option<BTreeMap<String, Vals>> = Option::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in raw.unwrap_or_default() {
            let vals = match v {
                Vals::List(l) => l,
                Vals::Map(m) => m
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(k, _)| k)
                    .collect(),
            };
            out.insert(k, vals);
        }
        Ok(Filters(out))
    }
}

impl Filters {
    /// Parses the JSON text of a `filters` query parameter; empty text is no filter.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_str(text).map_err(|e| format!("invalid filter: {e}"))
    }

    /// The values given for `key` (empty when absent).
    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Adds a value for `key`.
    pub fn add(&mut self, key: &str, value: &str) {
        self.0
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }

    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rejects keys outside `allowed`, with dockerd's message.
    pub fn validate(&self, allowed: &[&str]) -> Result<(), String> {
        for k in self.0.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(format!("invalid filter '{k}'"));
            }
        }
        Ok(())
    }

    /// Serializes to the JSON a client puts in the query string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes() {
        let a = Filters::parse(r#"{"name":["web"],"status":["running","exited"]}"#).unwrap();
        assert_eq!(a.get("name"), ["web"]);
        assert_eq!(a.get("status").len(), 2);
        let b = Filters::parse(r#"{"name":{"web":true,"x":false}}"#).unwrap();
        assert_eq!(b.get("name"), ["web"]);
        assert!(Filters::parse("").unwrap().is_empty());
        assert!(a.validate(&["name"]).is_err());
    }
}
