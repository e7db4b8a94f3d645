//! `run`: serves the archive, health and reflection on a bound listener
//! until a shutdown future completes.

use std::{future::Future, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
};
use tonic::{
    codec::CompressionEncoding,
    transport::{server::TcpIncoming, Server, ServerTlsConfig},
};
use tonic_health::ServingStatus;
use tracing::{info, info_span, warn};

use crate::{
    auth::Tokens,
    error::Error,
    proto::{self, archive_service_server::ArchiveServiceServer},
    service::{ArchiveService, CallLimits, ShutdownHooks},
    store::{Store, WriteHealth},
};

/// Largest request message accepted. Well above the largest valid article
/// (about 1.3 MiB), so an over-long field is answered with REJECTED naming
/// the field instead of breaking the stream.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The name health reports the archive under.
pub const SERVICE_NAME: &str = "archive.v1.ArchiveService";

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long open streams may run on after shutdown starts before they
    /// are ended with UNAVAILABLE.
    pub shutdown_grace: Duration,
    /// How many calls may run at once.
    pub limits: CallLimits,
    /// Bearer tokens for writing and reading; none means open.
    pub tokens: Tokens,
    /// Serve over TLS with this certificate (and optional client CA).
    pub tls: Option<ServerTlsConfig>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(10),
            limits: CallLimits::default(),
            tokens: Tokens::default(),
            tls: None,
        }
    }
}

/// Time given to open streams to end after they were told to.
const STREAM_END_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to connections to close once no call is running.
const CONNECTION_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Serves until `shutdown` completes, then: health turns NOT_SERVING, new
/// connections are refused, open calls get `options.shutdown_grace` to
/// finish, streams still open after that end with UNAVAILABLE, and the store
/// is flushed.
///
/// # Errors
/// [`Error::Io`] when the transport fails, [`Error::Storage`] when the final
/// flush fails.
pub async fn run(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> Result<(), Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ArchiveServiceServer<ArchiveService>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::io("building reflection", std::io::Error::other(e)))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::io("building reflection", std::io::Error::other(e)))?;

    let (stop_streams, streams_stopped) = watch::channel(false);
    let (in_flight, mut calls_done) = mpsc::channel::<()>(1);
    let hooks = ShutdownHooks {
        stop_streams: streams_stopped,
        in_flight: in_flight.downgrade(),
    };
    let archive = ArchiveServiceServer::new(ArchiveService::new(
        store.clone(),
        hooks,
        options.tokens.clone(),
        options.limits,
    ))
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(MAX_REQUEST_BYTES);

    // The archive is NOT_SERVING while the store cannot write: reads still
    // work, but a loader should go elsewhere or wait.
    let follow_store = tokio::spawn({
        let health = health.clone();
        let mut write_health = store.write_health();
        async move {
            loop {
                let writable = *write_health.borrow_and_update() == WriteHealth::Writable;
                if writable {
                    health
                        .set_serving::<ArchiveServiceServer<ArchiveService>>()
                        .await;
                } else {
                    health
                        .set_not_serving::<ArchiveServiceServer<ArchiveService>>()
                        .await;
                }
                if write_health.changed().await.is_err() {
                    return;
                }
            }
        }
    });

    let (shutdown_started_tx, shutdown_started) = tokio::sync::oneshot::channel();
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            // Stopped first, so it cannot turn the archive SERVING again.
            follow_store.abort();
            let _ = follow_store.await;
            info!("shutting down: refusing new connections");
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            health
                .set_not_serving::<ArchiveServiceServer<ArchiveService>>()
                .await;
            let _ = shutdown_started_tx.send(());
        }
    };

    // Socket options go on the incoming stream: the builder's TCP settings
    // apply only to listeners it binds itself. No Nagle delay on small
    // acknowledgements; TCP keepalive finds peers that vanished.
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut builder = Server::builder();
    if let Some(tls) = options.tls.clone() {
        builder = builder.tls_config(tls).map_err(|e| {
            Error::Tls(
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
            )
        })?;
    }
    let serve = builder
        .trace_fn(|request| info_span!("rpc", method = %request.uri().path()))
        // Detect dead peers on idle connections instead of holding them forever.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(archive)
        .serve_with_incoming_shutdown(incoming, signal);
    let mut serve = tokio::spawn(serve);

    let served = tokio::select! {
        served = &mut serve => Some(served),
        _ = shutdown_started => None,
    };
    let served = match served {
        Some(served) => served,
        None => {
            // Wait for the calls in flight, not for the connections: an idle
            // client connection would otherwise hold the process until the
            // grace period ends (hyper waits for the peer to close it).
            drop(in_flight);
            let drained = tokio::time::timeout(options.shutdown_grace, calls_done.recv()).await;
            if drained.is_err() {
                warn!(grace = ?options.shutdown_grace, "grace period over: ending open streams with UNAVAILABLE");
                let _ = stop_streams.send(true);
                if tokio::time::timeout(STREAM_END_TIMEOUT, calls_done.recv())
                    .await
                    .is_err()
                {
                    warn!("calls still running after the streams were told to end");
                }
            }
            // Every call has finished; give connections a moment to deliver
            // the last frames and close, then stop waiting for them.
            match tokio::time::timeout(CONNECTION_CLOSE_TIMEOUT, &mut serve).await {
                Ok(served) => served,
                Err(_) => {
                    info!("closing idle connections");
                    serve.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::io("serving gRPC", std::io::Error::other(e))),
        Err(e) => return Err(Error::io("server task", std::io::Error::other(e))),
    }
    if let WriteHealth::Failed(cause) = &*store.write_health().borrow() {
        warn!(%cause, "stopped; the store had failed, so nothing is left to flush (every acknowledged article was synced before its acknowledgement)");
        return Ok(());
    }
    store.flush()?;
    info!("stopped; store flushed");
    Ok(())
}

/// Checks a store that was not closed cleanly before it is served: the
/// index is repaired when it disagrees with the records (it is derived from
/// them, so that is always safe), and the server refuses to start when
/// records are damaged (setting them aside is the operator's call:
/// `article-archive check --repair`). A cleanly closed store is served at
/// once.
///
/// # Errors
/// [`Error::Damaged`] when records are damaged, [`Error::Storage`] when sled
/// fails.
pub async fn check_at_open(store: &Store) -> Result<(), Error> {
    if store.closed_cleanly() {
        return Ok(());
    }
    warn!("the archive was not closed cleanly; checking it before serving");
    let started = std::time::Instant::now();
    let checking = store.clone();
    let result = tokio::task::spawn_blocking(move || checking.check_after_unclean_stop())
        .await
        .map_err(|e| Error::io("startup check", std::io::Error::other(e)))??;
    let report = &result.report;
    info!(
        records = report.records,
        index_entries = report.index_entries,
        problems = report.problems.len(),
        elapsed = ?started.elapsed(),
        "startup check done"
    );
    if let Some(repaired) = result.repaired {
        for problem in &report.problems {
            warn!("startup check: {problem}");
        }
        warn!(
            added = repaired.added,
            removed = repaired.removed,
            "startup check: rebuilt the date index from the records"
        );
    }
    Ok(())
}
