//! imgate-adapters: the storage back-ends behind [`imgate_core::Store`].
//!
//! - [`embedded`]: the default store, redb files under the data directory,
//!   group-committed with fsync, in-process fan-out.
//!
//! Adapters never see codecs: they store and route `Message`s only.
#![forbid(unsafe_code)]

pub mod embedded;

pub use embedded::{EmbeddedConfig, EmbeddedStore};
