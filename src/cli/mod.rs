//! The command line: [`Cli`] is every command and flag, and [`run`]
//! dispatches to one. `serve` runs the server; `ingest`, `export`, `get`,
//! `list`, `urls`, `count`, `revisions`, `delete` and `changes` talk to a
//! running server over gRPC, like any other client;
//! `check` works on a data directory no server is using. Only this module
//! knows the command line: the layers below take plain settings structs.

pub mod check;
pub mod export;
pub mod history;
pub mod ingest;
pub mod jsonl;
mod progress;
pub mod queries;
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
    /// Show articles by id (several ids: one BatchGetArticles call, all or
    /// nothing).
    Get(show::GetArgs),
    /// Show articles by publication date, one per line.
    List(show::ListArgs),
    /// Show articles by url: exactly, by prefix, by host or by domain.
    Urls(queries::UrlsArgs),
    /// Count articles per day, month or year, as a calendar.
    Count(queries::CountArgs),
    /// Show an article's revisions, newest first.
    Revisions(history::RevisionsArgs),
    /// Delete an article for good (a takedown): every revision's content is
    /// erased and a later ingest of the id is refused (unless
    /// --allow-reingest). Needs an admin token when tokens are configured.
    Delete(history::DeleteArgs),
    /// Print the archive's changes (created, updated, deleted) in sequence
    /// order, from --after on; --follow waits for new ones. Prints the last
    /// sequence seen on exit, to pass back as --after.
    Changes(history::ChangesArgs),
    /// Verify a data directory offline (every record decodes and matches its
    /// hash; every index agrees with the record log); --repair sets damaged
    /// records aside and rebuilds the indexes from the log. Exit status 0
    /// when consistent, 1 when problems remain.
    Check(check::CheckArgs),
    /// Convert a data directory of an older storage format (1) to the
    /// current one (2), in place; crash-safe (interrupted, it leaves the old
    /// format intact, and running it again finishes the job). No server may
    /// be running on the directory.
    Upgrade(check::UpgradeArgs),
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
        Command::Urls(args) => runtime.block_on(queries::urls(args)),
        Command::Count(args) => runtime.block_on(queries::count(args)),
        Command::Revisions(args) => runtime.block_on(history::revisions(args)),
        Command::Delete(args) => runtime.block_on(history::delete(args)),
        Command::Changes(args) => runtime.block_on(history::changes(args)),
        Command::Check(args) => check::run(&args),
        Command::Upgrade(args) => check::upgrade(&args),
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
    /// A call failed: the server answered with an error status, or the
    /// connection broke.
    #[error("{context}: {}", describe(status))]
    Rpc {
        /// The call that failed.
        context: String,
        /// Its status.
        status: Box<tonic::Status>,
    },
    /// An `http://` server answered in TLS.
    #[error("{url}: the server speaks TLS; use {https_url} (with --ca-file FILE unless the system trusts its certificate)")]
    SpeaksTls {
        /// The address given.
        url: String,
        /// The same address with `https://`.
        https_url: String,
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
    /// Server address: a URL (`http://host:port`, `https://host:port`) or
    /// `host:port` as grpcurl takes it, which means `https://` when a CA file
    /// is given and `http://` otherwise.
    #[arg(long, env = "ARCHIVE_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,

    /// File holding the bearer token to send (first line). The environment
    /// variable `ARCHIVE_TOKEN` may hold it instead; never an argument, which
    /// `ps` would show.
    #[arg(long, env = "ARCHIVE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate to trust for an `https://` server; without one the
    /// system's trusted CAs are used.
    #[arg(long, env = "ARCHIVE_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ServerArg {
    /// The URL to connect to: `--server` as given when it has a scheme,
    /// otherwise `host:port` with the scheme the CA file implies.
    ///
    /// # Errors
    /// [`CliError::BadServer`] for an address with neither a scheme nor a
    /// port.
    pub fn url(&self) -> Result<String, CliError> {
        server_url(&self.server, self.ca_file.is_some())
    }

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
        connect(&self.url()?, token.as_deref(), ca).await
    }

    /// The error for a failed call named `context`. A plaintext connection
    /// to a TLS server fails as an opaque protocol error, so when a call over
    /// `http://` breaks on the client's side, the server is asked whether it
    /// speaks TLS, and if it does the error says to use `https://`.
    pub async fn call_failed(&self, context: &str, status: tonic::Status) -> CliError {
        // A status the server sent has no source; one made here does.
        let broke_locally = std::error::Error::source(&status).is_some();
        let plaintext = self.url().ok().and_then(|given| {
            let url = url::Url::parse(&given)
                .ok()
                .filter(|u| u.scheme() == "http")?;
            let host = url.host_str()?;
            Some((given, format!("{host}:{}", url.port_or_known_default()?)))
        });
        if let (true, Some((url, authority))) = (broke_locally, plaintext) {
            if speaks_tls(authority.clone()).await {
                return CliError::SpeaksTls {
                    url,
                    https_url: format!("https://{authority}"),
                };
            }
        }
        CliError::rpc(context, status)
    }
}

/// `server` as a URL: unchanged when it has a scheme; `host:port` (grpcurl's
/// form, `[::1]:port` for IPv6) gets `https://` when `tls` and `http://`
/// otherwise.
fn server_url(server: &str, tls: bool) -> Result<String, CliError> {
    if server.contains("://") {
        return Ok(server.to_owned());
    }
    let has_port = server
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port {
        return Err(CliError::BadServer {
            url: server.into(),
            reason: "give host:port (localhost:50051) or a URL (http://localhost:50051)".into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{server}"))
}

/// Whether the server at `authority` (`host:port`) answers the HTTP/2
/// preface with a TLS record, as a TLS server does (with an alert).
async fn speaks_tls(authority: String) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
    let probe = move || -> std::io::Result<bool> {
        use std::io::{Read, Write};
        let address = std::net::ToSocketAddrs::to_socket_addrs(authority.as_str())?
            .next()
            .ok_or(std::io::ErrorKind::NotFound)?;
        let mut stream = std::net::TcpStream::connect_timeout(&address, WAIT)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.write_all(PREFACE)?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head)?;
        // A TLS record: alert (0x15) or handshake (0x16), version 3.x.
        Ok(matches!(head, [0x15 | 0x16, 0x03]))
    };
    tokio::task::spawn_blocking(probe)
        .await
        .is_ok_and(|answer| answer.unwrap_or(false))
}

/// A status as one line: its code and message and, for a failure on this
/// side (a broken connection), the underlying cause; never the `Debug` dump
/// of the source that `Status`'s `Display` includes.
pub fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(cause) = root_cause(status) {
        if !text.contains(&cause) {
            text.push_str(&format!(" ({cause})"));
        }
    }
    text
}

/// Why a transport operation failed: its first cause (tonic's own error
/// only says "transport error") and, when different, the innermost one
/// ("tcp connect error: Connection refused (os error 111)").
fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let Some(first) = error.source() else {
        return error.to_string();
    };
    let first = first.to_string();
    match root_cause(error) {
        Some(root) if !first.contains(&root) => format!("{first}: {root}"),
        _ => first,
    }
}

/// The innermost error in `error`'s source chain, as text.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = error.source()?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
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

/// Which articles, by their labels (repeat a flag for several values: any
/// of them matches; different flags must all match).
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only articles from this source (case-insensitive).
    #[arg(long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,

    /// Only articles of this section.
    #[arg(long = "section", value_name = "SECTION")]
    pub sections: Vec<String>,

    /// Only articles in this language (a BCP-47 tag such as en).
    #[arg(long = "language", value_name = "TAG")]
    pub languages: Vec<String>,

    /// Only articles with this tag.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,

    /// Only articles by this author.
    #[arg(long = "author", value_name = "NAME")]
    pub authors: Vec<String>,
}

impl FilterArgs {
    /// The API's filter; `None` when no flag was given.
    pub fn to_proto(&self) -> Option<crate::proto::ArticleFilter> {
        let filter = crate::proto::ArticleFilter {
            sources: self.sources.clone(),
            sections: self.sections.clone(),
            languages: self.languages.clone(),
            tags: self.tags.clone(),
            authors: self.authors.clone(),
        };
        (filter != crate::proto::ArticleFilter::default()).then_some(filter)
    }
}

/// The generated client, connected to `url` (for example
/// `http://127.0.0.1:50051`, or `https://…` trusting `ca_pem`, or the
/// system's CAs without it), sending `token` as a bearer token.
///
/// # Errors
/// [`CliError::BadServer`] or [`CliError::Connect`]; [`CliError::Usage`] for
/// a token that is not printable ASCII.
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
    let mut tls_without_ca = false;
    if url.starts_with("https://") {
        let has_ca = ca_pem.is_some();
        let tls = match ca_pem {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            // The operating system's trust store (tonic's `tls-native-roots`),
            // as curl and browsers use it: it follows the system's updates
            // and any CA an administrator adds to it.
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint.tls_config(tls).map_err(|e| {
            if has_ca {
                CliError::BadServer {
                    url: url.into(),
                    reason: cause(&e),
                }
            } else {
                CliError::Usage(format!(
                    "{url}: cannot use the system's trusted CAs ({}); name the server's CA with --ca-file",
                    cause(&e)
                ))
            }
        })?;
        tls_without_ca = !has_ca;
    }
    let channel = endpoint.tcp_nodelay(true).connect().await.map_err(|e| {
        let mut reason = cause(&e);
        if tls_without_ca && reason.contains("certificate") {
            reason.push_str(
                " (the system's CAs do not vouch for the server; name its CA with --ca-file)",
            );
        }
        CliError::Connect {
            url: url.into(),
            reason,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_become_a_url_with_the_scheme_the_ca_implies() {
        // grpcurl's `host:port` gets http://, or https:// with a CA file;
        // a URL is taken as it is; an address with no port is refused.
        let url = |server: &str, tls: bool| server_url(server, tls).map_err(|e| e.to_string());
        assert_eq!(
            url("localhost:50051", false).unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(
            url("localhost:50051", true).unwrap(),
            "https://localhost:50051"
        );
        assert_eq!(url("[::1]:50051", false).unwrap(), "http://[::1]:50051");
        assert_eq!(url("10.0.0.7:443", true).unwrap(), "https://10.0.0.7:443");
        assert_eq!(
            url("http://a.example:1", true).unwrap(),
            "http://a.example:1"
        );
        assert_eq!(
            url("https://a.example:1", false).unwrap(),
            "https://a.example:1"
        );
        for no_port in ["localhost", ":50051", "localhost:", "localhost:http"] {
            assert!(
                url(no_port, false).unwrap_err().contains("host:port"),
                "{no_port}"
            );
        }
    }

    #[test]
    fn a_status_is_described_without_debug_output() {
        // A status made from a broken connection carries its cause as a
        // source, which `Status`'s Display prints with {:?}; the description
        // keeps the code, the message and the cause's own words.
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let status = tonic::Status::from_error(Box::new(cause));
        assert!(status.to_string().contains("source:"), "{status}");
        let text = describe(&status);
        assert!(text.starts_with("Unknown: "), "{text}");
        assert!(text.contains("connection reset"), "{text}");
        assert!(
            !text.contains("source:") && !text.contains("Custom {"),
            "{text}"
        );
        assert_eq!(
            describe(&tonic::Status::not_found("no article x")),
            "NotFound: no article x"
        );
    }
}
