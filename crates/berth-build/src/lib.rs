//! Berth's builder (placeholder docs, replaced below).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod parser;
pub mod shell;

pub use error::{BuildError, Result};
pub mod builder;
pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerignore;
pub mod graph;
