//! Replicas ride out a PostgreSQL restart under load: while the database
//! is down, calls fail UNAVAILABLE and health turns NOT_SERVING; once it is
//! back, health is SERVING again and ingest and reads go on, without a
//! restart of the replicas. Nothing acknowledged is lost.
//!
//! A test binary of its own: it stops the process's PostgreSQL cluster,
//! which every other test in the same process would feel.

mod common;

use std::{collections::BTreeMap, time::Duration};

use article_archive::proto::{self, IngestOutcome};
use common::*;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const SERVICE: &str = "archive.v1.ArchiveService";

/// Follows the archive's health on `server` and returns once it reports
/// `wanted` (a Watch stream: no polling).
async fn health_becomes(server: &ServerProcess, wanted: ServingStatus) {
    let mut health = HealthClient::new(channel(server.addr).await);
    let mut updates = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(update) = updates.next().await {
            if update.unwrap().status == wanted as i32 {
                return;
            }
        }
        panic!("the health stream ended before {wanted:?}");
    })
    .await;
    assert!(
        reached.is_ok(),
        "health did not become {wanted:?} within a minute"
    );
}

/// Ingests one article at a time through `client` until `stop` turns true;
/// returns what was acknowledged and the codes of the calls that failed.
async fn keep_ingesting(
    mut client: Client,
    mut stop: watch::Receiver<bool>,
) -> (BTreeMap<String, String>, Vec<Code>) {
    let mut acknowledged = BTreeMap::new();
    let mut failures = Vec::new();
    let mut n = 0u64;
    while !*stop.borrow_and_update() {
        n += 1;
        let article = article(&format!("load-{n:06}"), 1_700_000_000 + n as i64);
        let sha = sha_of(&article);
        let id = article.id.clone();
        let call = client.ingest_articles(tokio_stream::iter([request(article)]));
        let result = tokio::select! {
            result = call => result,
            _ = stop.changed() => break,
        };
        match result {
            Ok(responses) => {
                let mut responses = responses.into_inner();
                match responses.next().await {
                    Some(Ok(ack)) => {
                        assert_eq!(outcome(&ack), IngestOutcome::Created, "{ack:?}");
                        acknowledged.insert(id, sha);
                    }
                    Some(Err(status)) => failures.push(status.code()),
                    None => failures.push(Code::Unknown),
                }
            }
            Err(status) => failures.push(status.code()),
        }
    }
    (acknowledged, failures)
}

fn count_all() -> proto::CountArticlesRequest {
    proto::CountArticlesRequest {
        interval: proto::CountInterval::Year as i32,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn replicas_ride_out_a_database_restart_under_load() {
    let Some(url) = postgres::database_or_skip("replicas_ride_out_a_database_restart").await else {
        return;
    };
    let cluster = postgres::cluster().unwrap();
    let writer = ServerProcess::start_on_database(&url, &[]);
    let reader = ServerProcess::start_on_database(&url, &[]);
    health_becomes(&writer, ServingStatus::Serving).await;

    let (stop, stopping) = watch::channel(false);
    let load = tokio::spawn(keep_ingesting(writer.client().await, stopping));
    // Some load before the database goes away.
    let mut reads = reader.client().await;
    loop {
        let listed = reads
            .list_articles(proto::ListArticlesRequest {
                page_size: 20,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if listed.articles.len() >= 20 {
            break;
        }
        tokio::task::yield_now().await;
    }

    tokio::task::spawn_blocking(|| postgres::cluster().unwrap().stop_server())
        .await
        .unwrap();
    // Both replicas notice: health NOT_SERVING, calls UNAVAILABLE.
    health_becomes(&writer, ServingStatus::NotServing).await;
    health_becomes(&reader, ServingStatus::NotServing).await;
    let refused = reads
        .get_article(proto::GetArticleRequest {
            id: "load-000001".into(),
            revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // A write outlasts the writer's retries (about 1.6 s) and is refused
    // UNAVAILABLE, so its client knows to send it again.
    let mut writes = writer.client().await;
    let refused = match writes
        .ingest_articles(tokio_stream::iter([request(article("while-down", 1))]))
        .await
    {
        Ok(responses) => responses.into_inner().next().await.unwrap().unwrap_err(),
        Err(status) => status,
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("unavailable"), "{refused:?}");

    tokio::task::spawn_blocking(move || cluster.start_server())
        .await
        .unwrap();
    // Back by themselves, the same processes.
    health_becomes(&writer, ServingStatus::Serving).await;
    health_becomes(&reader, ServingStatus::Serving).await;
    let got = reads
        .get_article(proto::GetArticleRequest {
            id: "load-000001".into(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.article.unwrap().id, "load-000001");
    // Ingest goes on: wait for a few more acknowledgements after the
    // restart, then stop the load.
    let before_stop = reads
        .count_articles(count_all())
        .await
        .unwrap()
        .into_inner()
        .total;
    loop {
        let now = reads
            .count_articles(count_all())
            .await
            .unwrap()
            .into_inner()
            .total;
        if now >= before_stop + 20 {
            break;
        }
        tokio::task::yield_now().await;
    }
    stop.send(true).unwrap();
    let (acknowledged, failures) = load.await.unwrap();
    // The load's own calls may have waited out the outage in the writer's
    // retries; any that failed, failed UNAVAILABLE.
    assert!(
        failures.iter().all(|code| *code == Code::Unavailable),
        "failures while the database is down are UNAVAILABLE: {failures:?}"
    );

    // Nothing acknowledged is lost, read through the other replica.
    for (id, sha) in &acknowledged {
        let got = reads
            .get_article(proto::GetArticleRequest {
                id: id.clone(),
                revision: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .article
            .unwrap();
        assert_eq!(&got.content_sha256, sha, "{id}");
    }
}
