//! Docker Engine API wire types and stream framings, shared by berthd (server) and berth (client).
//!
//! Field names follow the Engine API reference exactly (PascalCase), because scripts and tools parse them.
//! Structs that clients send keep unknown fields in `extra` so that nothing a client sent is lost when berthd
//! stores and returns it.
#![forbid(unsafe_code)]

pub mod container;
pub mod error;
pub mod events;
pub mod exec;
pub mod filters;
pub mod image;
pub mod network;
pub mod progress;
pub mod stdcopy;
pub mod system;
pub mod version;
pub mod volume;

pub use error::{ErrorBody, ErrorKind};
pub use filters::Filters;
pub use version::ApiVersion;

/// Deserialize helpers for fields that clients send in more than one shape.
pub mod de {
    use serde::{Deserialize, Deserializer};

    /// Accepts `null`, a string (split like a shell word list is NOT done: one element) or an array of strings.
    pub fn opt_str_or_vec<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<String>>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            S(String),
            V(Vec<String>),
        }
        Ok(match Option::<V>::deserialize(d)? {
            None => None,
            Some(V::S(s)) => Some(vec![s]),
            Some(V::V(v)) => Some(v),
        })
    }

    /// Treats `null` as the type's default value (Go clients send `null` for empty slices and maps).
    pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Default + Deserialize<'de>,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}
