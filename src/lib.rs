//! article-archive: a gRPC archive of news articles on an embedded sled
//! database. One binary and one data directory are a complete archive;
//! where one machine is not enough, the same API runs on PostgreSQL, with
//! any number of servers on one database.
//!
//! # Layout
//! - [`cli`]: the command line (only it knows flags and environment
//!   variables): `serve` ([`cli::serve`]), the client commands (`ingest`,
//!   `export`, `get`, `list`, `urls`, `count`, `revisions`, `delete`,
//!   `changes`) that talk to a server over gRPC like any other client,
//!   `check` and `upgrade`, and [`cli::jsonl`], the JSON Lines mapping
//!   (protobuf JSON and news-please).
//! - [`server`]: [`server::run`] serves the archive, health and reflection on
//!   a bound listener until a shutdown future completes; admission of
//!   connections, the check at start.
//! - [`service`]: the RPC handlers, one file per RPC family; they parse,
//!   call the store, and map back. [`service::query`] parses ranges, orders,
//!   views and page tokens once for every RPC.
//! - [`article`]: the validated domain article, id derivation, content hash.
//! - [`page_token`]: opaque, signed keyset page tokens.
//! - [`auth`]: optional bearer tokens for writing, reading and deleting.
//! - [`store`]: the storage interface the service calls, and its sled
//!   engine ([`store::sled`], storage format 2: a record log of every
//!   version and deletion, the id, date and query indexes in sorted runs
//!   of our own, small indexes and counters in sled; a
//!   single writer thread does group commit, flush and filesystem sync,
//!   then acknowledges, and refuses writes while the disk is short of
//!   space), and its PostgreSQL engine ([`store::postgres`]: tables with
//!   the same keys and rules, one writer per server whose transactions take
//!   the feed head's row lock first, so the change feed commits in order
//!   across servers). The gRPC layer sees neither: [`store::Store`] is an
//!   enum over the two, async, with domain types only.
//!   [`store::keys`] is the order-preserving key encoding,
//!   [`store::url_key`] the host-reversed url keys, [`store::calendar`]
//!   the count buckets.
//! - [`metrics`]: what the server records for Prometheus (atomics shared
//!   with the service, the RPC layer and the store's writer) and the
//!   `/metrics` endpoint on its own listener (`serve --metrics-listen`).
//! - [`error`]: the one error type and its mapping to gRPC status codes.
//! - [`telemetry`]: tracing subscriber set-up.
//! - [`proto`]: code generated from `proto/archive/v1/archive.proto`, and the
//!   descriptor set served by reflection.
//!
//! Dependencies point one way: cli → server → service → (article, store) →
//! keys; `metrics` depends on none of them (the server hands it a probe of
//! the store), so any of them may record into it. Settings structs belong to the layer that uses them
//! ([`store::StoreConfig`], [`store::postgres::PostgresConfig`],
//! [`server::ServeOptions`]).

pub mod article;
pub mod auth;
pub mod cli;
pub mod error;
pub mod metrics;
pub mod page_token;
pub mod proto;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;

pub use error::{Error, Result};
pub use server::{run, ServeOptions};
pub use store::{Store, StoreConfig};
