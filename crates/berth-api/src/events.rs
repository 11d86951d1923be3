//! `GET /events` messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The object an event is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Actor {
    /// Container ID, image ID or reference, volume name, ...
    #[serde(rename = "ID")]
    pub id: String,
    /// `name`, `image`, `exitCode`, labels, ...
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One event, as dockerd streams it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Deprecated: same as `Action` (containers and images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Deprecated: same as `Actor.ID` (containers and images only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Deprecated: the image of a container event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `container`, `image`, `volume`, `network`, `daemon`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, `destroy`, `tag`, ...
    #[serde(rename = "Action")]
    pub action: String,
    /// What the event is about.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// `local`.
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let e = Event {
            status: Some("start".into()),
            id: Some("abc".into()),
            from: Some("busybox".into()),
            kind: "container".into(),
            action: "start".into(),
            actor: Actor {
                id: "abc".into(),
                attributes: [("name".to_string(), "web".to_string())].into(),
            },
            scope: "local".into(),
            time: 1,
            time_nano: 1_000_000_000,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Actor"]["ID"], "abc");
        assert_eq!(v["Actor"]["Attributes"]["name"], "web");
        assert_eq!(v["timeNano"], 1_000_000_000i64);
        assert_eq!(v["status"], "start");
    }
}
