//! The event bus: every container and image state change, kept in a ring for `since` and
//! broadcast to `GET /events` streams.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use berth_api::Filters;
use berth_api::events::{Actor, Event};
use tokio::sync::broadcast;

use crate::container::Record;
use crate::error::{Error, Result};

const RING: usize = 1024;

/// An event with its sequence number.
pub type Numbered = Arc<(u64, Event)>;

/// The event bus.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Numbered>,
    ring: Mutex<(u64, VecDeque<Numbered>)>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(256).0,
            ring: Mutex::new((0, VecDeque::new())),
        }
    }
}

impl Events {
    /// Publishes an event.
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or(0);
        let legacy = kind == "container" || kind == "image";
        let ev = Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: (kind == "container")
                .then(|| attributes.get("image").cloned())
                .flatten(),
            kind: kind.into(),
            action: action.into(),
            actor: Actor {
                id: id.into(),
                attributes,
            },
            scope: "local".into(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        };
        let mut ring = self.ring.lock().expect("events");
        ring.0 += 1;
        let item = Arc::new((ring.0, ev));
        ring.1.push_back(item.clone());
        if ring.1.len() > RING {
            ring.1.pop_front();
        }
        let _ = self.tx.send(item);
    }

    /// A container event with Docker's attributes (image, name, labels).
    pub fn container(&self, rec: &Record, action: &str, extra: &[(&str, String)]) {
        let mut attrs: BTreeMap<String, String> = rec.config.labels.clone();
        attrs.insert("image".into(), rec.config.image.clone());
        attrs.insert("name".into(), rec.name.trim_start_matches('/').to_string());
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.emit("container", action, &rec.id, attrs);
    }

    /// An image event.
    pub fn image(&self, action: &str, id: &str, name: &str) {
        let mut attrs = BTreeMap::new();
        attrs.insert("name".to_string(), name.to_string());
        self.emit("image", action, id, attrs);
    }

    /// Past events (from the ring) and a receiver for the ones after them.
    pub fn subscribe(&self) -> (Vec<Numbered>, broadcast::Receiver<Numbered>) {
        let ring = self.ring.lock().expect("events");
        (ring.1.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// Checks the filters of `GET /events`.
pub fn validate(f: &Filters) -> Result<()> {
    f.validate(&[
        "container",
        "event",
        "image",
        "label",
        "type",
        "volume",
        "network",
        "daemon",
        "scope",
    ])
    .map_err(Error::Invalid)
}

/// Whether an event passes the filters.
pub fn matches(f: &Filters, e: &Event) -> bool {
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        let v = f.get(key);
        v.is_empty() || v.iter().any(|x| pred(x))
    };
    let name = e
        .actor
        .attributes
        .get("name")
        .map(String::as_str)
        .unwrap_or("");
    any("type", &|t| t == e.kind)
        && any("event", &|a| {
            a == e.action || e.action.split(':').next() == Some(a)
        })
        && (f.get("container").is_empty()
            || (e.kind == "container"
                && f.get("container")
                    .iter()
                    .any(|c| e.actor.id.starts_with(c.as_str()) || c == name)))
        && (f.get("image").is_empty()
            || f.get("image").iter().any(|i| {
                let img = if e.kind == "image" {
                    name
                } else {
                    e.actor
                        .attributes
                        .get("image")
                        .map(String::as_str)
                        .unwrap_or("")
                };
                img == i || e.actor.id == *i || img.split(':').next() == Some(i.as_str())
            }))
        && (f.get("volume").is_empty()
            || (e.kind == "volume" && f.get("volume").contains(&e.actor.id)))
        && crate::container::list::labels_match(f.get("label"), &e.actor.attributes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_and_filters() {
        let ev = Events::default();
        let rec = Record {
            id: "abc".into(),
            name: "/web".into(),
            config: berth_api::container::Config {
                image: "busybox".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        ev.container(&rec, "start", &[]);
        ev.container(&rec, "die", &[("exitCode", "3".into())]);
        ev.image("tag", "sha256:x", "busybox:local");
        let (past, _rx) = ev.subscribe();
        assert_eq!(past.len(), 3);
        assert_eq!(past[1].1.actor.attributes["exitCode"], "3");
        let mut f = Filters::default();
        f.add("type", "container");
        assert!(matches(&f, &past[0].1));
        assert!(!matches(&f, &past[2].1));
        let mut f = Filters::default();
        f.add("container", "web");
        f.add("event", "die");
        assert!(!matches(&f, &past[0].1));
        assert!(matches(&f, &past[1].1));
        let mut f = Filters::default();
        f.add("image", "busybox");
        assert!(matches(&f, &past[0].1));
        assert!(matches(&f, &past[2].1));
    }
}
