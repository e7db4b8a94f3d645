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

    /// sled reported an error. Shared so one failed group commit can be
    /// reported to every article in it.
    #[error("storage error: {0}")]
    Storage(Arc<sled::Error>),

    /// A stored record or index entry cannot be decoded.
    #[error("stored data is corrupt at {key}: {reason}")]
    Corrupt {
        /// The tree and key of the damaged entry.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The disk is short of space: writes are refused until there is room.
    #[error(
        "the archive's disk has {} MiB free, less than the {} MiB it keeps free \
         (--min-free-mb); this article was not stored, retry once there is room",
        free_bytes / (1024 * 1024),
        min_free_bytes / (1024 * 1024)
    )]
    DiskFull {
        /// Bytes free when the write was refused.
        free_bytes: u64,
        /// The configured minimum.
        min_free_bytes: u64,
    },

    /// sled failed a write (a disk turned read-only, or full after all), and
    /// the store refuses writes until the server is restarted on a repaired
    /// disk. Holds the cause.
    #[error(
        "the archive cannot write until it is restarted on a repaired disk ({0}); \
         this article was not stored"
    )]
    NotWritable(Arc<sled::Error>),

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

    /// The store's writer has stopped: the server is shutting down.
    #[error("the store is closed")]
    Closed,

    /// The TLS certificate, key or client CA cannot be used (unreadable,
    /// not PEM, or key and certificate do not match).
    #[error("TLS configuration: {0}")]
    Tls(String),

    /// An I/O error outside sled (binding, reading configuration).
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

/// The gRPC code for a sled error: a full or read-only disk is something an
/// operator can fix and a client can retry later, corruption is data loss,
/// anything else is a bug.
fn sled_code(e: &sled::Error) -> Code {
    match e {
        sled::Error::Io(io) => match io.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Code::ResourceExhausted,
            _ => Code::Unavailable,
        },
        sled::Error::Corruption { .. } => Code::DataLoss,
        sled::Error::CollectionNotFound(_)
        | sled::Error::Unsupported(_)
        | sled::Error::ReportableBug(_) => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        // No `_` arm: a new variant must choose its code here.
        let code = match &e {
            Error::InvalidArgument(_) | Error::InvalidPageToken(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::DataDirLocked { .. } | Error::Closed => Code::Unavailable,
            Error::DiskFull { .. } => Code::ResourceExhausted,
            // The same code as the failure that made the store stop writing:
            // RESOURCE_EXHAUSTED for a full disk, UNAVAILABLE for a
            // read-only one. Both tell a client to retry later.
            Error::Storage(inner) | Error::NotWritable(inner) => sled_code(inner),
            Error::Corrupt { .. } => Code::DataLoss,
            // Startup errors: a client never sees them.
            Error::Io { .. } | Error::Tls(_) | Error::Damaged { .. } => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
