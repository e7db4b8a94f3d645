//! Tests of the real binary as a process: crash with SIGKILL mid-stream,
//! SIGTERM with open streams, a second server on a locked directory, and the
//! allocator the binary runs on.

mod common;

use std::{collections::HashMap, time::Duration};

use article_archive::proto::{self, IngestOutcome, SortOrder};
use common::*;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt};
use tonic::Code;

/// SIGKILL in the middle of a stream that creates and updates (moving dates)
/// loses no acknowledged article, and the index is consistent afterwards.
#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(&data, &[]);
    let mut client = server.client().await;

    // 3000 requests over 1000 ids: every id is written three times with a
    // different date, so updates that move index entries are in flight.
    let versions: Vec<proto::Article> = (0..3000i64)
        .map(|i| proto::Article {
            body: format!(
                "version {} of article {}. {}",
                i / 1000,
                i % 1000,
                "text ".repeat(300)
            ),
            ..article(
                &format!("k{:04}", i % 1000),
                (i % 1000) * 86_400 - 1_000_000_000 + (i / 1000) * 3_600,
            )
        })
        .collect();
    let (tx, rx) = mpsc::channel(64);
    let feeder = {
        let versions = versions.clone();
        tokio::spawn(async move {
            for v in versions {
                if tx.send(request(v)).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut responses = client
        .ingest_articles(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    let mut count = 0;
    while let Some(response) = responses.next().await {
        let Ok(response) = response else { break };
        assert_ne!(outcome(&response), IngestOutcome::Rejected);
        let sent = &versions[response.index as usize];
        acknowledged.insert(response.id.clone(), sha_of(sent));
        count += 1;
        if count == 1500 {
            server.child.kill().unwrap();
        }
    }
    feeder.abort();
    server.child.wait().unwrap();
    assert!(
        count >= 1500,
        "only {count} acknowledgements before the kill"
    );

    let server = ServerProcess::start(&data, &[]);
    let mut client = server.client().await;
    for (id, sha) in &acknowledged {
        let got = client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: id.clone(),
            })
            .await
            .unwrap();
        // The stored version is the acknowledged one or a later one that was
        // written but not yet acknowledged when the process died.
        let stored = got.into_inner().article.unwrap().content_sha256;
        let later = versions
            .iter()
            .filter(|v| &v.id == id)
            .map(sha_of)
            .collect::<Vec<_>>();
        assert!(
            stored == *sha || later.contains(&stored),
            "{id}: stored {stored}, acknowledged {sha}"
        );
        let position = later.iter().position(|s| *s == stored).unwrap();
        let acked_position = later.iter().position(|s| s == sha).unwrap();
        assert!(
            position >= acked_position,
            "{id} went back to an older version"
        );
    }
    let listed = list_all(
        &mut client,
        proto::ListArticlesRequest {
            page_size: 1000,
            order: SortOrder::OldestFirst as i32,
            ..Default::default()
        },
    )
    .await;
    let mut ids: Vec<_> = listed.iter().map(|a| a.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), listed.len(), "no article listed twice");
    assert!(listed.len() >= acknowledged.len());

    server.signal("TERM");
    let (status, _) = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let store = open_store(&data);
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.articles, report.date_entries);
    assert_eq!(report.revision_entries, report.records - report.articles);
    assert_eq!(report.articles as usize, listed.len());
}

/// A second server on a directory in use exits non-zero and says why.
#[tokio::test]
async fn a_second_server_on_a_locked_directory_exits_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), &[]);
    let second = spawn(dir.path(), &[]).wait_with_output().unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("is locked by another process"), "{stderr}");
    first.signal("TERM");
    let (status, log) = first.wait(Duration::from_secs(30));
    assert!(status.success(), "{status} {log:#?}");
}

/// SIGTERM while three ingest streams are open: the one that finishes within
/// the grace period ends normally, the two that never end get UNAVAILABLE
/// after it, everything acknowledged is durable, and the process exits 0
/// well within grace period plus the stream-end timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_streams_finishes_or_ends_them_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--shutdown-grace-secs", "1"]);
    let mut streams = Vec::new();
    for s in 0..3 {
        let mut client = server.client().await;
        let (tx, rx) = mpsc::channel(8);
        let mut responses = client
            .ingest_articles(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        for i in 0..3 {
            tx.send(request(article(&format!("open{s}-{i}"), i)))
                .await
                .unwrap();
            let ack = responses.next().await.unwrap().unwrap();
            assert_eq!(outcome(&ack), IngestOutcome::Created);
        }
        streams.push((tx, responses));
    }
    let signalled = std::time::Instant::now();
    server.signal("TERM");
    // Stream 0 sends one more article and closes: it finishes normally.
    let (tx, mut finishing) = streams.remove(0);
    tx.send(request(article("open0-last", 9))).await.unwrap();
    drop(tx);
    let last = finishing.next().await.unwrap().unwrap();
    assert_eq!(outcome(&last), IngestOutcome::Created);
    assert!(
        finishing.next().await.is_none(),
        "a finished stream ends cleanly"
    );
    // Streams 1 and 2 stay open and send nothing more.
    for (tx, mut responses) in streams {
        let end = tokio::time::timeout(Duration::from_secs(20), responses.next())
            .await
            .expect("the stream is ended by the server");
        let status = end.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        drop(tx);
    }
    let (exit, log) = server.wait(Duration::from_secs(20));
    assert!(exit.success(), "{exit}: {log:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(7),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(
        log.iter().any(|l| l.contains("grace period over")),
        "{log:?}"
    );

    let server = ServerProcess::start(dir.path(), &[]);
    let mut client = server.client().await;
    for id in ["open0-0", "open0-last", "open1-2", "open2-1"] {
        client
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: id.into(),
            })
            .await
            .unwrap();
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(20)).0.success());
}

/// Runs `article-archive ARGS` to its end and returns (exit code, stderr).
fn run_binary(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let output = std::process::Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Flags that would make sled panic or the server refuse everything are
/// refused when they are parsed, naming the flag (exit status 2, clap's
/// usage error), before anything is bound or created.
#[test]
fn flags_that_cannot_work_are_refused_at_parse_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (flag, value) in [
        ("--cache-mb", "0"),
        ("--max-calls", "0"),
        ("--max-streams", "0"),
        ("--handshake-timeout-secs", "0"),
    ] {
        let (code, stderr) = run_binary(&[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            flag.as_ref(),
            value.as_ref(),
        ]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!data.exists(), "{flag}: nothing is created");
    }
}

/// A data directory that cannot be used is named in the one error line,
/// with what was being done; a start that cannot bind creates nothing.
#[test]
fn start_errors_name_the_path_and_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let (code, stderr) = run_binary(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        not_a_dir.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("data directory {}", not_a_dir.display())),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("data directory").count(),
        1,
        "one error line: {stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("never-created");
    let (code, stderr) = run_binary(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        address.as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("binding {address}")), "{stderr}");
    assert_eq!(stderr.matches("binding").count(), 1, "{stderr}");
    assert!(
        !data.exists(),
        "a start that cannot bind creates no directory"
    );
}

/// A TLS key that does not belong to its certificate stops the start before
/// the address is bound or logged, with a message that says TLS.
#[test]
fn a_tls_key_that_does_not_match_its_certificate_stops_the_start_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, one.cert.pem()).unwrap();
    std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = run_binary(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--tls-cert".as_ref(),
        cert.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TLS configuration"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert!(!data.exists(), "{stderr}");
}

/// The binary runs on jemalloc with the options `src/main.rs` builds in
/// (a symbol jemalloc silently ignores when misnamed): asked to print its
/// statistics at exit, it shows them in effect.
#[test]
fn the_binary_allocates_with_jemalloc_and_its_built_in_options() {
    let output = std::process::Command::new(BINARY)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stats = String::from_utf8_lossy(&output.stderr);
    for option in [
        "opt.narenas: 2",
        "opt.background_thread: true",
        "opt.dirty_decay_ms: 1000",
        "opt.muzzy_decay_ms: 0",
    ] {
        assert!(
            stats.contains(option),
            "`{option}` not in jemalloc's statistics:\n{stats}"
        );
    }
}
