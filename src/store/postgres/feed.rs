//! The feed listener: one connection per replica that LISTENs for the
//! writers' notifications (every replica's writer NOTIFYs the new head in
//! its transaction, delivered at commit) and moves the replica's durable
//! mark, which followers of the feed wait on. It also reads the head every
//! `poll_interval`, so a notification lost with a connection delays a
//! follower by at most that; and it is the replica's eye on the database:
//! while it cannot connect, the store reports itself unreachable (health
//! NOT_SERVING), and writable again once it can.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{metrics::Metrics, store::WriteHealth};

/// Longest wait between attempts to reconnect.
const MOST_BACKOFF: Duration = Duration::from_secs(2);

/// Runs until aborted (when the store is dropped).
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    poll_interval: Duration,
    health: Arc<watch::Sender<WriteHealth>>,
    durable: Arc<watch::Sender<u64>>,
    metrics: Arc<std::sync::OnceLock<Arc<Metrics>>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let reason = match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                // The connection delivers notifications only while polled.
                let (notified, mut notifications) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if notified.send(n.payload().to_owned()).is_err() {
                                    return String::from("listener stopped");
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return e.to_string(),
                            None => return String::from("the connection ended"),
                        }
                    }
                });
                let reason = follow(
                    &client,
                    &mut notifications,
                    poll_interval,
                    (&health, &durable),
                    &metrics,
                )
                .await;
                driver.abort();
                backoff = Duration::from_millis(50);
                reason
            }
            Err(e) => e.to_string(),
        };
        let reason = format!("the database cannot be reached: {reason}");
        tracing::warn!(%reason, "feed listener lost the database; reconnecting");
        health.send_if_modified(|current| {
            let changed = !matches!(current, WriteHealth::Unreachable(_));
            *current = WriteHealth::Unreachable(reason.clone());
            changed
        });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MOST_BACKOFF);
    }
}

/// Follows the head on a live connection; returns why it stopped.
async fn follow(
    client: &tokio_postgres::Client,
    notifications: &mut mpsc::UnboundedReceiver<String>,
    poll_interval: Duration,
    (health, durable): (&watch::Sender<WriteHealth>, &watch::Sender<u64>),
    metrics: &std::sync::OnceLock<Arc<Metrics>>,
) -> String {
    if let Err(e) = client.batch_execute("LISTEN archive_changes").await {
        return e.to_string();
    }
    let advance = |head: u64| {
        durable.send_if_modified(|current| {
            let newer = head > *current;
            *current = (*current).max(head);
            newer
        });
    };
    loop {
        // Read the head (after LISTEN, so nothing committed in between is
        // missed), then mark the database reachable.
        match client
            .query_one("SELECT last_sequence, live_articles FROM feed_head", &[])
            .await
        {
            Ok(row) => {
                advance(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0));
                if let Some(metrics) = metrics.get() {
                    metrics.set_articles(u64::try_from(row.get::<_, i64>(1)).unwrap_or(0));
                }
            }
            Err(e) => return e.to_string(),
        }
        health.send_if_modified(|current| {
            let changed = matches!(current, WriteHealth::Unreachable(_));
            if changed {
                *current = WriteHealth::Writable;
            }
            changed
        });
        let deadline = tokio::time::sleep(poll_interval);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                payload = notifications.recv() => match payload {
                    Some(payload) => {
                        if let Ok(head) = payload.parse::<u64>() {
                            advance(head);
                        }
                    }
                    None => return String::from("the connection ended"),
                },
                () = &mut deadline => break,
            }
        }
    }
}
