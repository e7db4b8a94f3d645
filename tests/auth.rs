//! Bearer tokens: who may write and read, over real TCP and from the CLI.

mod common;

use std::process::Command;

use article_archive::{auth::Tokens, proto, ServeOptions};
use common::*;
use tonic::{Code, Request};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

async fn ingest_as(
    client: &mut Client,
    token: Option<&str>,
    id: &str,
) -> Result<usize, tonic::Status> {
    let requests = tokio_stream::iter(vec![request(article(id, 1))]);
    let mut responses = client
        .ingest_articles(with_token(requests, token))
        .await?
        .into_inner();
    let mut acks = 0;
    while let Some(ack) = tokio_stream::StreamExt::next(&mut responses).await {
        ack?;
        acks += 1;
    }
    Ok(acks)
}

/// Writing needs a write token (either of two, for rotation); reading needs
/// a read or write token; health and reflection stay open; nothing is read
/// from a refused ingest stream.
#[tokio::test]
async fn tokens_guard_writes_and_reads_but_not_health() {
    let options = ServeOptions {
        tokens: Tokens::new(&["w-old", "w-new"], &["r1"]),
        ..Default::default()
    };
    let mut server = TestServer::start_in(tempfile::tempdir().unwrap(), options).await;
    let client = &mut server.client;

    for token in [None, Some("wrong"), Some("r1")] {
        let refused = ingest_as(client, token, "refused").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{token:?}");
        assert!(
            !refused.message().contains("wrong"),
            "the token is never echoed"
        );
    }
    assert_eq!(
        server.store.check().unwrap().records,
        0,
        "a refused stream stores nothing"
    );
    assert_eq!(ingest_as(client, Some("w-old"), "a").await.unwrap(), 1);
    assert_eq!(ingest_as(client, Some("w-new"), "b").await.unwrap(), 1);

    let get = |token| {
        with_token(
            proto::GetArticleRequest {
                revision: 0,
                id: "a".into(),
            },
            token,
        )
    };
    assert_eq!(
        client.get_article(get(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .get_article(get(Some("bad")))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    client.get_article(get(Some("r1"))).await.unwrap();
    client.get_article(get(Some("w-new"))).await.unwrap();
    let list = |token| with_token(proto::ListArticlesRequest::default(), token);
    assert_eq!(
        client.list_articles(list(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        client
            .list_articles(list(Some("r1")))
            .await
            .unwrap()
            .into_inner()
            .articles
            .len(),
        2
    );
    let export = |token| with_token(proto::ExportArticlesRequest::default(), token);
    assert_eq!(
        client
            .export_articles(export(None))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    client.export_articles(export(Some("r1"))).await.unwrap();

    let mut health = HealthClient::new(channel(server.addr).await);
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

/// The client commands send the token from ARCHIVE_TOKEN or --token-file;
/// the server takes its tokens from a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_send_the_token_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("write-tokens");
    std::fs::write(&tokens, "# loaders\nsecret-1\nsecret-2\n").unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--write-token-file",
            tokens.to_str().unwrap(),
            "--read-token-file",
            tokens.to_str().unwrap(),
        ],
    );
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, serde_json::json!({"id": "t1", "title": "T", "body": "B", "publishedAt": "2020-01-01T00:00:00Z"}).to_string()).unwrap();
    let url = format!("http://{}", server.addr);
    let run = |args: &[&str], token: Option<&str>| {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .env("ARCHIVE_SERVER", &url)
            .env_remove("ARCHIVE_TOKEN");
        if let Some(token) = token {
            command.env("ARCHIVE_TOKEN", token);
        }
        command.output().unwrap()
    };

    let refused = run(&["ingest", input.to_str().unwrap()], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    let stored = run(&["ingest", input.to_str().unwrap()], Some("secret-2"));
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );

    let token_file = dir.path().join("my-token");
    std::fs::write(&token_file, "secret-1\n").unwrap();
    let listed = run(
        &["list", "--token-file", token_file.to_str().unwrap()],
        None,
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("t1"));
    server.signal("TERM");
    assert!(server.wait(std::time::Duration::from_secs(30)).0.success());
}

fn delete_request(id: &str, token: Option<&str>) -> Request<proto::DeleteArticleRequest> {
    with_token(
        proto::DeleteArticleRequest {
            id: id.into(),
            reason: "court order".into(),
            allow_reingest: false,
        },
        token,
    )
}

/// Deleting is not writing: once any token is configured only an admin
/// token may delete (a write or read token is PERMISSION_DENIED, an unknown
/// one UNAUTHENTICATED); an admin token also writes and reads; with no
/// tokens configured at all the archive stays open, deletion included.
#[tokio::test]
async fn deleting_needs_an_admin_token_once_tokens_are_configured() {
    let options = ServeOptions {
        tokens: Tokens::with_admin(&["w"], &["r"], &["a-old", "a-new"]),
        ..Default::default()
    };
    let mut server = TestServer::start_in(tempfile::tempdir().unwrap(), options).await;
    let client = &mut server.client;
    assert_eq!(ingest_as(client, Some("w"), "x").await.unwrap(), 1);
    assert_eq!(
        ingest_as(client, Some("a-old"), "y").await.unwrap(),
        1,
        "an admin token writes"
    );

    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("nobody"), Code::Unauthenticated),
        (Some("w"), Code::PermissionDenied),
        (Some("r"), Code::PermissionDenied),
    ] {
        let refused = client
            .delete_article(delete_request("x", token))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{token:?}: {}", refused.message());
        if code == Code::PermissionDenied {
            assert!(refused.message().contains("admin"), "{}", refused.message());
        }
    }
    let get = |token| {
        with_token(
            proto::GetArticleRequest {
                id: "x".into(),
                revision: 0,
            },
            token,
        )
    };
    client
        .get_article(get(Some("a-new")))
        .await
        .expect("a refused delete leaves the article, and an admin token reads");

    let deleted = client
        .delete_article(delete_request("x", Some("a-new")))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.sequence > 0);
    let gone = client.get_article(get(Some("r"))).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    server.stop().await;

    // No tokens at all: open, as before tokens existed.
    let mut open = TestServer::start().await;
    ingest(&mut open.client, vec![article("z", 1)]).await;
    open.client
        .delete_article(delete_request("z", None))
        .await
        .expect("with no tokens configured anyone may delete");
    open.stop().await;
}

/// The server reads admin tokens from --admin-token-file or
/// ARCHIVE_ADMIN_TOKENS, and the delete command sends ARCHIVE_TOKEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delete_command_needs_an_admin_token_from_the_server_file() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin-tokens");
    std::fs::write(&admin, "# takedowns desk\nboss\n").unwrap();
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &["--admin-token-file", admin.to_str().unwrap()],
    );
    let url = format!("http://{}", server.addr);
    let run = |args: &[&str], token: &str| {
        Command::new(BINARY)
            .args(args)
            .env("ARCHIVE_SERVER", &url)
            .env("ARCHIVE_TOKEN", token)
            .output()
            .unwrap()
    };
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, serde_json::json!({"id": "t1", "title": "T", "body": "B", "publishedAt": "2020-01-01T00:00:00Z"}).to_string()).unwrap();
    let stored = run(&["ingest", input.to_str().unwrap()], "boss");
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );

    let refused = run(&["delete", "t1", "--reason", "privacy request"], "guess");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
    let deleted = run(&["delete", "t1", "--reason", "privacy request"], "boss");
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    server.signal("TERM");
    assert!(server.wait(std::time::Duration::from_secs(30)).0.success());
}
