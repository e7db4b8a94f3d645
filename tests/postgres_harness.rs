//! The PostgreSQL test harness (tests/common/postgres.rs) itself: a database
//! that takes writes, and a cluster that stops and starts again with what
//! was committed still there.

mod common;

use common::postgres;
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn a_database_takes_writes_and_survives_a_restart() {
    let Some(url) =
        postgres::database_or_skip("a_database_takes_writes_and_survives_a_restart").await
    else {
        return;
    };
    let cluster = postgres::cluster().unwrap();
    assert!(url.starts_with(&format!(
        "postgres://postgres@127.0.0.1:{}/",
        cluster.port()
    )));

    let client = connect(&url).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);
             INSERT INTO notes VALUES (1, 'first');",
        )
        .await
        .unwrap();
    let body: String = client
        .query_one("SELECT body FROM notes WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "first");
    // The cluster sorts text bytewise (C locale), as the archive does.
    let collate: String = client
        .query_one(
            "SELECT datcollate FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(collate, "C");
    // A second database is a different, empty one.
    let other = postgres::database_or_skip("a_database_takes_writes_and_survives_a_restart")
        .await
        .unwrap();
    assert_ne!(other, url);
    let other = connect(&other).await.unwrap();
    let tables: i64 = other
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'notes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);
    drop((client, other));

    tokio::task::spawn_blocking(|| cluster.stop_server())
        .await
        .unwrap();
    let refused = connect(&url).await;
    assert!(refused.is_err(), "a stopped server accepted a connection");

    tokio::task::spawn_blocking(|| cluster.start_server())
        .await
        .unwrap();
    let client = connect(&url)
        .await
        .expect("the restarted server accepts connections");
    let body: String = client
        .query_one("SELECT body FROM notes WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "first", "the committed row survives the restart");
}
