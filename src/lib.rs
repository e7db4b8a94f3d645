//! article-archive: a gRPC archive of news articles on an embedded sled
//! database. One binary and one data directory are a complete archive.
//!
//! # Layout
//! - [`proto`]: code generated from `proto/archive/v1/archive.proto`, and the
//!   descriptor set served by reflection.
//! - [`config`]: command-line flags and environment variables.
//! - [`telemetry`]: tracing subscriber set-up.
//! - [`server`]: [`server::run`] serves the archive, health and reflection on
//!   a bound listener until a shutdown future completes.
//! - [`service`]: the RPC handlers: parse, call the store, map back.
//! - [`article`]: the validated domain article, id derivation, content hash.
//! - [`page_token`]: opaque, signed keyset page tokens.
//! - [`auth`]: optional bearer tokens for writing and reading.
//! - [`store`]: the sled store; [`store::keys`] is the order-preserving key
//!   encoding, [`store::record`] the on-disk record, and a single writer
//!   thread does group commit, flush and filesystem sync, then acknowledge;
//!   it refuses writes while the disk is short of space.
//! - [`error`]: the one error type and its mapping to gRPC status codes.
//! - [`cli`]: the client commands (`ingest`, `export`, `get`, `list`), which
//!   talk to a server over gRPC like any other client; [`jsonl`] is their
//!   JSON Lines mapping (protobuf JSON and news-please).
//!
//! Dependencies point one way: server → service → (article, store) → keys.

pub mod article;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod jsonl;
pub mod page_token;
pub mod proto;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;

pub use error::{Error, Result};
pub use server::{run, ServeOptions};
pub use store::{Store, StoreConfig};
