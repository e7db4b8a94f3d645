//! `article-archive serve`: flags, then open, check and serve.
//!
//! Flags are checked when they are parsed (clap ranges), so a value that
//! would make the server refuse everything, or make sled panic, stops the
//! command with a message naming the flag. TLS material is loaded and
//! checked before anything is bound or created; the data directory is
//! opened only once the address is bound, so a start that cannot bind
//! leaves no directory behind.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{builder::RangedU64ValueParser, Args, ValueEnum};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

use crate::{
    auth::Tokens,
    metrics::{MetricsListener, StartCheck},
    server::{self, ServeOptions},
    service::CallLimits,
    store::{postgres::PostgresConfig, Store, StoreConfig},
    telemetry::LogFormat,
    Error,
};

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

    /// Store the archive in PostgreSQL instead of a data directory: a url
    /// such as `postgres://user:password@host:5432/archive?sslmode=require`.
    /// Any number of servers may share one database. The schema is created
    /// or migrated at start.
    #[arg(
        long,
        env = "ARCHIVE_STORE",
        value_name = "URL",
        conflicts_with = "data_dir"
    )]
    pub store: Option<String>,

    /// PEM file of CA certificates to trust for the database's TLS
    /// certificate, besides the system's (with `--store`).
    #[arg(
        long,
        env = "ARCHIVE_STORE_CA_FILE",
        value_name = "FILE",
        requires = "store"
    )]
    pub store_ca_file: Option<PathBuf>,

    /// Database connections this server keeps for reads (with `--store`);
    /// the writer and the feed listener have one each besides.
    #[arg(long, env = "ARCHIVE_STORE_POOL_SIZE", default_value_t = 16,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub store_pool_size: usize,

    /// sled page cache size in MiB, at least 1 (a target, not a hard cap on
    /// memory).
    // 64: with the query indexes out of sled, sled holds ids, dates and
    // small trees; at 1M articles 64 was as fast as 128 for ingest and Get
    // with about 60 MiB less resident memory (BENCHMARKS.md "The sled cache").
    #[arg(long, env = "ARCHIVE_CACHE_MB", default_value_t = 64,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..=1024 * 1024))]
    pub cache_mb: u64,

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
    /// first bytes are the HTTP/2 preface or the TLS hello); at least 1.
    #[arg(long, env = "ARCHIVE_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub handshake_timeout_secs: u64,

    /// Most IngestArticles and ExportArticles streams open at once, at least
    /// 1; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARCHIVE_MAX_STREAMS", default_value_t = 64,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_streams: usize,

    /// Most unary calls (GetArticle, ListArticles, ...) running at once, at
    /// least 1; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "ARCHIVE_MAX_CALLS", default_value_t = 1024,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
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

    /// File of admin bearer tokens, which may delete articles (and read and
    /// write); `ARCHIVE_ADMIN_TOKENS` adds more. Once any token is
    /// configured, DeleteArticle needs one of these.
    #[arg(long, env = "ARCHIVE_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Revisions kept per article, the current one included; 0 keeps every
    /// revision. An update that makes more erases the oldest.
    #[arg(long, env = "ARCHIVE_KEEP_REVISIONS", default_value_t = 0)]
    pub keep_revisions: u64,

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

    /// Serve Prometheus metrics at http://ADDR/metrics (host:port, plain
    /// HTTP, its own listener: no gRPC limits, no tokens); port 0 picks a
    /// free port, which is logged. Off unless given: then nothing is
    /// recorded.
    #[arg(long, env = "ARCHIVE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// Log line format.
    #[arg(long, env = "ARCHIVE_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

impl ServeArgs {
    /// Store settings derived from the flags.
    pub fn store_config(&self) -> StoreConfig {
        let mut config = StoreConfig::new(&self.data_dir);
        config.cache_capacity_bytes = self.cache_mb.saturating_mul(1024 * 1024);
        config.min_free_bytes = self.min_free_mb.saturating_mul(1024 * 1024);
        config.keep_revisions = self.keep_revisions;
        config
    }

    /// PostgreSQL settings derived from the flags, when `--store` is given.
    pub fn postgres_config(&self) -> Option<PostgresConfig> {
        self.store.as_ref().map(|url| {
            let mut config = PostgresConfig::new(url);
            config.ca_file = self.store_ca_file.clone();
            config.pool_size = self.store_pool_size;
            config.keep_revisions = self.keep_revisions;
            config
        })
    }

    /// Opens the store the flags name: PostgreSQL with `--store`, else the
    /// data directory.
    ///
    /// # Errors
    /// Whatever the engine refuses (see [`Store::open`] and
    /// [`Store::open_postgres`]).
    pub async fn open_store(&self) -> Result<Store, Error> {
        match self.postgres_config() {
            Some(config) => Store::open_postgres(&config).await,
            None => Store::open_async(self.store_config()).await,
        }
    }

    /// Server settings derived from the flags, with the token and TLS files
    /// read and the TLS material checked.
    ///
    /// # Errors
    /// A token, certificate or key file that cannot be read; TLS material
    /// that cannot be used (a key that does not match its certificate).
    pub fn serve_options(&self) -> Result<ServeOptions, Error> {
        let env = |name| std::env::var(name).ok();
        let (write_env, read_env, admin_env) = (
            env("ARCHIVE_WRITE_TOKENS"),
            env("ARCHIVE_READ_TOKENS"),
            env("ARCHIVE_ADMIN_TOKENS"),
        );
        let tokens = Tokens::load([
            (self.write_token_file.as_deref(), write_env.as_deref()),
            (self.read_token_file.as_deref(), read_env.as_deref()),
            (self.admin_token_file.as_deref(), admin_env.as_deref()),
        ])
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
                server::check_tls(&tls)?;
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
            // Bound by `run`, after the gRPC address.
            metrics: None,
            start_check: StartCheck::NotRun,
        })
    }
}

/// Serves until SIGTERM or Ctrl-C: reads tokens and TLS, binds (gRPC, then
/// metrics), opens the store (checking it after an unclean stop), logs the
/// address, serves.
///
/// # Errors
/// Whatever stops the server from starting or serving; each names what
/// was being done.
pub async fn run(args: ServeArgs) -> Result<(), Error> {
    let mut options = args.serve_options()?;
    let shutdown = shutdown_signal();
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::io(format!("binding {}", args.listen), e))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    if let Some(metrics_listen) = &args.metrics_listen {
        let listener = MetricsListener::bind(metrics_listen)
            .await
            .map_err(|e| Error::io(format!("binding {metrics_listen} for metrics"), e))?;
        options.metrics = Some(listener);
    }
    let store = args.open_store().await?;
    options.start_check = match server::check_at_open(&store).await {
        Ok(found) => found,
        Err(e) => {
            store.close().await?;
            return Err(e);
        }
    };
    match &args.store {
        // The url may hold a password: only the engine is logged.
        Some(_) => info!(store = "postgres", "listening on {addr}"),
        None => info!(data_dir = %args.data_dir.display(), "listening on {addr}"),
    }
    if !addr.ip().is_loopback() {
        if options.tls.is_none() {
            warn!("listening on a non-loopback address without TLS: traffic, tokens included, is readable on the network (set --tls-cert and --tls-key)");
        }
        if !options.tokens.write_protected() {
            warn!("no write token is configured: anyone who can reach {addr} can write (set --write-token-file)");
        }
    }
    if let Some(metrics) = &options.metrics {
        if !metrics.local_addr().ip().is_loopback() {
            warn!("metrics on a non-loopback address without a token: anyone who can reach {} can read the archive's traffic and sizes (never article text, ids or tokens)", metrics.local_addr());
        }
    }
    server::run(listener, store, shutdown, options).await
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). The handlers are installed
/// when this is called, not when the future is first polled: a signal that
/// comes right after the address is logged must not find the default
/// action (which kills the process) still in place.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            let mut sigterm = match sigterm {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
            let mut sigint = match sigint {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::error!("cannot listen for Ctrl-C: {e}");
                    return std::future::pending().await;
                }
            };
            tokio::select! {
                _ = sigint.recv() => info!("received Ctrl-C"),
                _ = sigterm.recv() => info!("received SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!("cannot listen for Ctrl-C: {e}");
                std::future::pending::<()>().await;
            }
            info!("received Ctrl-C");
        }
    }
}
