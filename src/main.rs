//! The `article-archive` binary: parse the command line, set up tracing, and
//! hand over to the library.

use std::process::ExitCode;

use article_archive::{
    cli,
    config::{Cli, Command, ServeArgs},
    server, telemetry, Error, Store,
};
use clap::Parser;
use tokio::net::TcpListener;
use tracing::{error, info, warn};

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("article-archive: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client_result = match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            return match runtime.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    eprintln!("article-archive: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Ingest(args) => runtime.block_on(cli::ingest::run(args)),
        Command::Export(args) => runtime.block_on(cli::export::run(args)),
        Command::Get(args) => runtime.block_on(cli::show::get(args)),
        Command::List(args) => runtime.block_on(cli::show::list(args)),
        Command::Check(args) => cli::check::run(&args),
    };
    // Do not wait for a reader thread still blocked on standard input.
    runtime.shutdown_background();
    client_result.unwrap_or_else(|e| {
        eprintln!("article-archive: {e}");
        ExitCode::FAILURE
    })
}

/// glibc gives each thread that allocates under contention an arena of its
/// own and rarely returns their memory; with sled's threads, tonic's workers
/// and the writer, a server's resident memory ends up far above what is live
/// (615 MiB against 415 MiB with two arenas, at 100k articles, for the same
/// ingest rate: BENCHMARKS.md). An explicit `MALLOC_ARENA_MAX` wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), Error> {
    let options = args.serve_options()?;
    let shutdown = shutdown_signal();
    let store = Store::open(&args.store_config())?;
    server::check_at_open(&store).await?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|e| Error::io(format!("binding {}", args.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    info!(data_dir = %args.data_dir.display(), "listening on {addr}");
    if !addr.ip().is_loopback() {
        if options.tls.is_none() {
            warn!("listening on a non-loopback address without TLS: traffic, tokens included, is readable on the network (set --tls-cert and --tls-key)");
        }
        if !options.tokens.write_protected() {
            warn!("no write token is configured: anyone who can reach {addr} can write (set --write-token-file)");
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
                    error!("cannot listen for SIGTERM: {e}");
                    return std::future::pending().await;
                }
            };
            let mut sigint = match sigint {
                Ok(signal) => signal,
                Err(e) => {
                    error!("cannot listen for Ctrl-C: {e}");
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
                error!("cannot listen for Ctrl-C: {e}");
                std::future::pending::<()>().await;
            }
            info!("received Ctrl-C");
        }
    }
}
