//! The per-container supervisor's protocol types and helpers, shared with berthd.
//!
//! The binary (`src/main.rs`) implements the protocol of `docs/INTERNALS.md`; berthd uses
//! [`proto`] to speak it and [`logfmt`] if it needs to read or write json-file logs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod logfmt;
pub mod logwriter;
pub mod proto;
