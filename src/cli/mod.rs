//! The command line: [`Cli`] is every command and flag, and [`run`]
//! dispatches to one. `serve` runs the server; `ingest`, `export`, `get` and
//! `list` talk to a running server over gRPC, like any other client;
//! `check` works on a data directory no server is using. Only this module
//! knows the command line: the layers below take plain settings structs.

pub mod check;
pub mod export;
pub mod ingest;
pub mod jsonl;
mod progress;
pub mod serve;
pub mod show;

use std::{path::PathBuf, process::ExitCode, str::FromStr};

use clap::{Args, Parser, Subcommand};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::proto::archive_service_client::ArchiveServiceClient;

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
    Serve(serve::ServeArgs),
    /// Load JSON Lines files (archive or news-please JSON, plain or .gz) into
    /// a running server. Exit status: 0 everything stored, 2 some lines
    /// rejected or unreadable, 1 the load could not finish.
    Ingest(ingest::IngestArgs),
    /// Write articles from a running server as JSON Lines (protobuf JSON).
    Export(export::ExportArgs),
    /// Show one article.
    Get(show::GetArgs),
    /// Show articles by publication date, one per line.
    List(show::ListArgs),
    /// Verify a data directory offline (every record decodes and matches its
    /// hash; the date index has exactly one entry per record, at its date);
    /// --repair rebuilds the index from the records. Exit status 0 when
    /// consistent, 1 when problems remain.
    Check(check::CheckArgs),
}

/// Runs one command to its end and gives the process's exit status.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("article-archive: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client_result = match cli.command {
        Command::Serve(args) => {
            crate::telemetry::init(args.log_format.into());
            return match runtime.block_on(serve::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Logged once, on stderr like every log line.
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Ingest(args) => runtime.block_on(ingest::run(args)),
        Command::Export(args) => runtime.block_on(export::run(args)),
        Command::Get(args) => runtime.block_on(show::get(args)),
        Command::List(args) => runtime.block_on(show::list(args)),
        Command::Check(args) => check::run(&args),
    };
    // Do not wait for a reader thread still blocked on standard input.
    runtime.shutdown_background();
    client_result.unwrap_or_else(|e| {
        eprintln!("article-archive: {e}");
        ExitCode::FAILURE
    })
}

/// What can stop a client command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server address is not a URL tonic can use.
    #[error("invalid --server {url:?}: {reason}")]
    BadServer {
        /// The address given.
        url: String,
        /// Why it is not usable.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The address given.
        url: String,
        /// The transport's explanation.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{context}: {code:?}: {message}", code = status.code(), message = status.message())]
    Rpc {
        /// The call that failed.
        context: String,
        /// Its status.
        status: Box<tonic::Status>,
    },
    /// Reading input or writing output failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved, or `-` for standard input/output.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The command's own arguments do not fit together.
    #[error("{0}")]
    Usage(String),
    /// The archive itself reported an error (for `check`).
    #[error(transparent)]
    Archive(#[from] crate::Error),
}

impl CliError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into().display().to_string(),
            source,
        }
    }

    pub(crate) fn rpc(context: impl Into<String>, status: tonic::Status) -> Self {
        Self::Rpc {
            context: context.into(),
            status: Box::new(status),
        }
    }
}

/// The server a client command talks to, and the token to show it.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// Server address.
    #[arg(long, env = "ARCHIVE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,

    /// File holding the bearer token to send (first line). The environment
    /// variable `ARCHIVE_TOKEN` may hold it instead; never an argument, which
    /// `ps` would show.
    #[arg(long, env = "ARCHIVE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate to trust for an `https://` server.
    #[arg(long, env = "ARCHIVE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ServerArg {
    /// Connects to the server, sending the token with every call.
    ///
    /// # Errors
    /// As [`connect`], or the token file cannot be read.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| CliError::io(path, e))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("ARCHIVE_TOKEN").ok(),
        };
        let ca = self
            .ca_file
            .as_ref()
            .map(|path| std::fs::read(path).map_err(|e| CliError::io(path, e)))
            .transpose()?;
        connect(&self.server, token.as_deref(), ca).await
    }
}

/// Adds `authorization: Bearer <token>` to every call when there is a token.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The generated client as the commands use it.
pub type Client = ArchiveServiceClient<InterceptedService<Channel, BearerToken>>;

/// A range of publication times, `--from` inclusive, `--to` exclusive.
#[derive(Debug, Clone, Args)]
pub struct DateRangeArgs {
    /// Only articles published at or after this time (2022-09-01 or RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub from: Option<prost_types::Timestamp>,

    /// Only articles published before this time.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<prost_types::Timestamp>,
}

/// The generated client, connected to `url` (for example
/// `http://127.0.0.1:50051`, or `https://…` with `ca_pem`, the CA to trust),
/// sending `token` as a bearer token.
///
/// # Errors
/// [`CliError::BadServer`] or [`CliError::Connect`]; [`CliError::Usage`] for
/// a token that is not printable ASCII or an `https` url without a CA.
pub async fn connect(
    url: &str,
    token: Option<&str>,
    ca_pem: Option<Vec<u8>>,
) -> Result<Client, CliError> {
    let token = token
        .map(|t| {
            MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| CliError::Usage("the token must be printable ASCII".into()))
        })
        .transpose()?;
    let mut endpoint = Endpoint::from_str(url).map_err(|e| CliError::BadServer {
        url: url.into(),
        reason: e.to_string(),
    })?;
    if url.starts_with("https://") {
        let ca = ca_pem.ok_or_else(|| {
            CliError::Usage(format!(
                "{url}: an https server needs --ca-file (or ARCHIVE_CA_FILE)"
            ))
        })?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls).map_err(|e| CliError::BadServer {
            url: url.into(),
            reason: e.to_string(),
        })?;
    }
    let channel = endpoint
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| CliError::Connect {
            url: url.into(),
            reason: std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), ToString::to_string),
        })?;
    Ok(ArchiveServiceClient::with_interceptor(
        channel,
        BearerToken(token),
    ))
}

/// Parses a `--from`/`--to` value: an RFC 3339 timestamp
/// (`2022-09-01T08:00:00Z`) or a date (`2022-09-01`, midnight UTC).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    prost_types::Timestamp::from_str(text).map_err(|_| {
        format!("{text:?} is not a date (2022-09-01) or an RFC 3339 time (2022-09-01T08:00:00Z)")
    })
}
