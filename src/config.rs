//! Command-line flags and environment variables.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand, ValueEnum};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use crate::cli::{
    check::CheckArgs,
    export::ExportArgs,
    ingest::IngestArgs,
    show::{GetArgs, ListArgs},
};
use crate::{auth::Tokens, server::ServeOptions, service::CallLimits, store::StoreConfig, Error};

/// A gRPC archive of news articles on an embedded sled database.
#[derive(Debug, Parser)]
#[command(name = "article-archive", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Load JSON Lines files (archive or news-please JSON, plain or .gz) into
    /// a running server. Exit status: 0 everything stored, 2 some lines
    /// rejected or unreadable, 1 the load could not finish.
    Ingest(IngestArgs),
    /// Write articles from a running server as JSON Lines (protobuf JSON).
    Export(ExportArgs),
    /// Show one article.
    Get(GetArgs),
    /// Show articles by publication date, one per line.
    List(ListArgs),
    /// Verify a data directory offline (every record decodes and matches its
    /// hash; the date index has exactly one entry per record, at its date);
    /// --repair rebuilds the index from the records. Exit status 0 when
    /// consistent, 1 when problems remain.
    Check(CheckArgs),
}

/// Settings of `article-archive serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port); port 0 picks a free port, which is
    /// logged.
    #[arg(long, env = "ARCHIVE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,

    /// Directory of the sled database; created when missing.
    #[arg(long, env = "ARCHIVE_DATA_DIR", default_value = "./archive-data")]
    pub data_dir: PathBuf,

    /// sled page cache size in MiB (a target, not a hard cap on memory).
    #[arg(long, env = "ARCHIVE_CACHE_MB", default_value_t = 256)]
    pub cache_mb: u64,

    /// zstd-compress stored data (needs a build with `--features
    /// compression`; fixed when the data directory is created).
    #[arg(long, env = "ARCHIVE_COMPRESSION")]
    pub compression: bool,

    /// Refuse writes (RESOURCE_EXHAUSTED, health NOT_SERVING) while the data
    /// directory's filesystem has less than this many MiB free; they resume
    /// by themselves at an eighth above it. sled does not survive running
    /// into a full disk without a restart. 0 turns the check off.
    #[arg(long, env = "ARCHIVE_MIN_FREE_MB", default_value_t = 256)]
    pub min_free_mb: u64,

    /// Seconds that open streams get to finish after SIGTERM or Ctrl-C before
    /// they are ended with UNAVAILABLE.
    #[arg(long, env = "ARCHIVE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Seconds a new connection may stay silent before it is closed (its
    /// first bytes are the HTTP/2 preface or the TLS hello).
    #[arg(long, env = "ARCHIVE_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Most IngestArticles and ExportArticles streams open at once; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARCHIVE_MAX_STREAMS", default_value_t = 64)]
    pub max_streams: usize,

    /// Most GetArticle and ListArticles calls running at once; more are
    /// refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARCHIVE_MAX_CALLS", default_value_t = 1024)]
    pub max_calls: usize,

    /// File of bearer tokens (one per line) that may call IngestArticles;
    /// `ARCHIVE_WRITE_TOKENS` (comma-separated) adds more. None: anyone may
    /// write. Tokens are never taken as arguments, which `ps` would show.
    #[arg(long, env = "ARCHIVE_WRITE_TOKEN_FILE", value_name = "FILE")]
    pub write_token_file: Option<PathBuf>,

    /// File of bearer tokens that may read (Get, List, Export); write tokens
    /// may read too. `ARCHIVE_READ_TOKENS` adds more. None: anyone may read.
    #[arg(long, env = "ARCHIVE_READ_TOKEN_FILE", value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,

    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(
        long,
        env = "ARCHIVE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "ARCHIVE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): require clients to present a certificate signed
    /// by one of them (mutual TLS).
    #[arg(
        long,
        env = "ARCHIVE_TLS_CLIENT_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "ARCHIVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

impl ServeArgs {
    /// Store settings derived from the flags.
    pub fn store_config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(&self.data_dir);
        config.cache_capacity_bytes = self.cache_mb.saturating_mul(1024 * 1024);
        config.compression = self.compression;
        config.min_free_bytes = self.min_free_mb.saturating_mul(1024 * 1024);
        config
    }

    /// Server settings derived from the flags, with the tokens and TLS files
    /// read.
    ///
    /// # Errors
    /// A token, certificate or key file that cannot be read.
    pub fn serve_options(&self) -> Result<ServeOptions, Error> {
        let tokens = Tokens::load(
            self.write_token_file.as_deref(),
            std::env::var("ARCHIVE_WRITE_TOKENS").ok().as_deref(),
            self.read_token_file.as_deref(),
            std::env::var("ARCHIVE_READ_TOKENS").ok().as_deref(),
        )
        .map_err(|e| Error::io("loading bearer tokens", e))?;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let mut tls =
                    ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
                if let Some(ca) = &self.tls_client_ca {
                    tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
                }
                Some(tls)
            }
            _ => None,
        };
        Ok(ServeOptions {
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            limits: CallLimits {
                streams: self.max_streams,
                calls: self.max_calls,
            },
            tokens,
            tls,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
        })
    }
}
