//! The one error type of the service and its mapping to gRPC status codes.

use std::{io, path::PathBuf, sync::Arc};

use tonic::{Code, Status};

use crate::article::ValidationError;

/// Everything that can go wrong in the archive.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A request field breaks a rule.
    #[error("{0}")]
    InvalidArgument(#[from] ValidationError),

    /// A page token that is garbage, was tampered with, or belongs to another
    /// query.
    #[error("invalid page_token: {0}")]
    InvalidPageToken(&'static str),

    /// No article is stored under the id.
    #[error("article {0:?} not found")]
    NotFound(String),

    /// The article was deleted (a takedown).
    #[error("article {id:?} was deleted on {} (change {sequence})", at.to_rfc3339())]
    Deleted {
        /// The article.
        id: String,
        /// When.
        at: crate::article::Timestamp,
        /// The sequence number of the DELETED change.
        sequence: u64,
    },

    /// The article is stored, but not the revision asked for.
    #[error("article {id:?} has no revision {revision} (its current revision is {current}{pruned})",
        pruned = if *pruned { "; older revisions are pruned by --keep-revisions" } else { "" })]
    NoSuchRevision {
        /// The article.
        id: String,
        /// The revision asked for.
        revision: u64,
        /// Its current revision.
        current: u64,
        /// Whether it may have been pruned.
        pruned: bool,
    },

    /// Some ids of a batch get are not stored (or were deleted).
    #[error("{total} of the requested ids are not in the archive (unknown or deleted): {}{}",
        first.join(", "),
        if *total > first.len() { format!(" and {} more", total - first.len()) } else { String::new() })]
    MissingArticles {
        /// The first few of them, in request order.
        first: Vec<String>,
        /// How many in all.
        total: usize,
    },

    /// The answer would not fit in one response.
    #[error(
        "the {articles} articles would make a response of about {bytes} bytes, more than the \
             {limit}-byte limit; ask for fewer ids, or the BASIC view"
    )]
    ResponseTooLarge {
        /// Articles asked for.
        articles: usize,
        /// Bytes they would take.
        bytes: usize,
        /// The limit.
        limit: usize,
    },

    /// Another process holds the data directory.
    #[error(
        "data directory {} is locked by another process (is another article-archive \
         running on it?)",
        path.display()
    )]
    DataDirLocked {
        /// The directory that could not be locked.
        path: PathBuf,
    },

    /// The data directory holds an older storage format, which this binary
    /// converts only when asked (`article-archive upgrade`).
    #[error(
        "data directory {} holds storage format 1; this binary serves format 2. Stop here, \
         take a backup (or an export) if you can, and run `article-archive upgrade --data-dir {}` \
         to convert it in place (crash-safe: interrupted, it leaves format 1 intact)",
        path.display(),
        path.display()
    )]
    UpgradeNeeded {
        /// The directory.
        path: PathBuf,
    },

    /// The data directory cannot be used: missing and not creatable, not a
    /// directory, no permission.
    #[error("data directory {}: {doing}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What was being done with it.
        doing: &'static str,
        /// The underlying error.
        source: Arc<io::Error>,
    },

    /// sled reported an error. Shared so one failed group commit can be
    /// reported to every article in it.
    #[error("storage error: {0}")]
    Storage(Arc<sled::Error>),

    /// Syncing the data directory's filesystem after a commit failed. After
    /// a failed sync the kernel may have dropped the unsynced pages, so what
    /// the commit wrote cannot be trusted to be on disk.
    #[error("syncing the data directory's filesystem failed: {0}")]
    SyncFailed(Arc<io::Error>),

    /// A stored record or index entry cannot be decoded.
    #[error("stored data is corrupt at {key}: {reason}")]
    Corrupt {
        /// The tree and key of the damaged entry.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The disk is short of space: writes are refused until there is room
    /// again. Temporary: the store takes writes again by itself.
    #[error(
        "the archive's disk has {} MiB free, less than the {} MiB it keeps free \
         (--min-free-mb); this article was not stored, retry once there is room",
        free_bytes / (1024 * 1024),
        min_free_bytes / (1024 * 1024)
    )]
    DiskLow {
        /// Bytes free when the write was refused.
        free_bytes: u64,
        /// The configured minimum.
        min_free_bytes: u64,
    },

    /// A write failed in storage (a disk turned read-only, or full after
    /// all), and the store refuses every write until the server is restarted
    /// on a repaired disk. Permanent for this process. Holds the failure
    /// ([`Error::Storage`] or [`Error::SyncFailed`]).
    #[error(
        "the archive cannot write until it is restarted on a repaired disk ({0}); \
         this article was not stored"
    )]
    WritesStopped(Arc<Error>),

    /// Records are damaged, so a server will not start on the directory.
    #[error(
        "{records} stored record(s) are damaged (first: {first}); run \
         `article-archive check --data-dir DIR` to list them and \
         `check --repair` to move them to quarantine"
    )]
    Damaged {
        /// How many records are damaged.
        records: u64,
        /// The first problem found.
        first: String,
    },

    /// The PostgreSQL database cannot be reached (down, restarting, the
    /// network, or no pooled connection came free in time). Temporary: the
    /// engine reconnects by itself, and a client should retry.
    #[error(
        "the archive's database is unavailable ({0}); retry the call (an ingest that did reach \
         the database answers UNCHANGED when sent again)"
    )]
    DatabaseUnavailable(String),

    /// PostgreSQL refused a statement for a reason other than being
    /// unreachable.
    #[error("database error: {0}")]
    Database(Arc<tokio_postgres::Error>),

    /// The database holds a newer schema than this binary knows: it was
    /// migrated by a newer release.
    #[error(
        "the database has archive schema version {found}, newer than the {known} this binary \
         knows; run the release that migrated it (or a newer one)"
    )]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this binary applies.
        known: i64,
    },

    /// The store's writer has stopped: the server is shutting down.
    #[error("the store is closed")]
    Closed,

    /// A setting that cannot work (for example a feature this binary was
    /// built without).
    #[error("{0}")]
    Config(String),

    /// The TLS certificate, key or client CA cannot be used (unreadable,
    /// not PEM, or key and certificate do not match).
    #[error("TLS configuration: {0}")]
    Tls(String),

    /// The gRPC transport failed while serving.
    #[error("serving gRPC: {0}")]
    Transport(String),

    /// A background task panicked or was cancelled: a bug.
    #[error("internal task failed: {0}")]
    TaskFailed(String),

    /// An I/O error outside the store (binding, reading configuration
    /// files).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: Arc<io::Error>,
    },
}

impl Error {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Self::Storage(Arc::new(e))
    }
}

/// A sled transaction whose closure never aborts fails only in storage.
impl From<sled::transaction::TransactionError<std::convert::Infallible>> for Error {
    fn from(e: sled::transaction::TransactionError<std::convert::Infallible>) -> Self {
        match e {
            sled::transaction::TransactionError::Storage(e) => Error::from(e),
            sled::transaction::TransactionError::Abort(never) => match never {},
        }
    }
}

/// The code for an I/O failure in storage: a full disk is something an
/// operator can fix and a client can retry later (RESOURCE_EXHAUSTED), as is
/// anything else the disk refuses (UNAVAILABLE).
fn io_code(e: &io::Error) -> Code {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Code::ResourceExhausted,
        _ => Code::Unavailable,
    }
}

/// The gRPC code for a sled error: I/O as above, corruption is data loss,
/// anything else is a bug.
fn sled_code(e: &sled::Error) -> Code {
    match e {
        sled::Error::Io(io) => io_code(io),
        sled::Error::Corruption { .. } => Code::DataLoss,
        sled::Error::CollectionNotFound(_)
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_) => Code::Internal,
    }
}

/// The gRPC code for a PostgreSQL error that is not a lost connection
/// (those are [`Error::DatabaseUnavailable`]): a conflict that outlasted
/// the engine's retries is ABORTED (retry the call), a database short of
/// disk or memory RESOURCE_EXHAUSTED, anything else a bug or a schema
/// problem (INTERNAL).
fn database_code(e: &tokio_postgres::Error) -> Code {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            Code::Aborted
        }
        Some(code) if code.code().starts_with("53") => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

impl Error {
    /// The gRPC code a client receives for this error.
    pub fn code(&self) -> Code {
        // No `_` arm: a new variant must choose its code here.
        match self {
            Error::InvalidArgument(_) | Error::InvalidPageToken(_) => Code::InvalidArgument,
            Error::NotFound(_)
            | Error::Deleted { .. }
            | Error::NoSuchRevision { .. }
            | Error::MissingArticles { .. } => Code::NotFound,
            Error::ResponseTooLarge { .. } => Code::ResourceExhausted,
            Error::DataDirLocked { .. } | Error::Closed => Code::Unavailable,
            Error::DiskLow { .. } => Code::ResourceExhausted,
            Error::Storage(inner) => sled_code(inner),
            Error::SyncFailed(inner) => io_code(inner),
            // The same code as the failure that stopped writes:
            // RESOURCE_EXHAUSTED for a full disk, UNAVAILABLE for a
            // read-only one. Both tell a client to retry later.
            Error::WritesStopped(cause) => cause.code(),
            Error::Corrupt { .. } => Code::DataLoss,
            // Retry later: the engine reconnects by itself.
            Error::DatabaseUnavailable(_) => Code::Unavailable,
            Error::Database(inner) => database_code(inner),
            Error::TaskFailed(_) => Code::Internal,
            // Start-up and serving errors: a client never sees them.
            Error::Io { .. }
            | Error::DataDir { .. }
            | Error::UpgradeNeeded { .. }
            | Error::Config(_)
            | Error::Tls(_)
            | Error::Transport(_)
            | Error::Damaged { .. }
            | Error::SchemaTooNew { .. } => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
