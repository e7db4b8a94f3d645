//! The client commands, run as the real binary against a real server.

mod common;

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use article_archive::proto::{self, ArticleView};
use common::*;
use flate2::{write::GzEncoder, Compression};
use serde_json::json;

fn cli(server: &str, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("ARCHIVE_SERVER", server)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn url(server: &TestServer) -> String {
    format!("http://{}", server.addr)
}

/// A good article in the archive's own JSON shape.
fn good_line(i: usize) -> String {
    json!({
        "id": format!("g{i:04}"),
        "title": format!("Good {i}"),
        "body": format!("Body {i} “quoted”"),
        "publishedAt": format!("19{:02}-01-02T03:04:05Z", 10 + i % 80),
        "authors": ["Agn├Ęs"],
    })
    .to_string()
}

fn news_please_line(i: usize) -> String {
    json!({
        "authors": ["Jane Roe"],
        "date_download": "2021-01-01 00:00:00",
        "date_modify": null,
        "date_publish": format!("2020-05-{:02} 14:30:00", 1 + i),
        "description": "Lede",
        "filename": "x.json",
        "image_url": null,
        "language": "en",
        "localpath": null,
        "maintext": format!("News-please text {i}"),
        "source_domain": "np.example.org",
        "title": format!("News-please {i}"),
        "title_page": null,
        "title_rss": null,
        "url": format!("https://np.example.org/story/{i}?utm_medium=feed"),
    })
    .to_string()
}

async fn count_all(client: &mut Client) -> usize {
    list_all(
        client,
        proto::ListArticlesRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .len()
}

/// A file of good, news-please, unreadable and invalid lines: every line is
/// accounted for, failures carry their line number and reason in the
/// rejects file, and the exit status says not everything was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reports_every_bad_line_and_stores_the_rest() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for i in 0..40 {
        lines.push(good_line(i).into_bytes());
    }
    for i in 0..5 {
        lines.push(news_please_line(i).into_bytes());
    }
    lines.push(b"{broken json".to_vec()); // 46
    lines.push(b"[1, 2, 3]".to_vec()); // 47
    lines.push(
        json!({"title": "t", "body": "b", "publishedAt": "yesterday"})
            .to_string()
            .into_bytes(),
    ); // 48
    lines.push(
        json!({"title": "   ", "body": "b", "publishedAt": "2020-01-01T00:00:00Z"})
            .to_string()
            .into_bytes(),
    ); // 49
    lines.push(json!({"title": "t", "body": "b", "url": "ftp://x.example/", "publishedAt": "2020-01-01T00:00:00Z"}).to_string().into_bytes()); // 50
    lines.push(Vec::new()); // 51: blank, skipped
    lines.push(vec![b'{', 0xFF, 0xFE, b'}']); // 52: not UTF-8
    lines.push(good_line(99).into_bytes()); // 53
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    let rejects = dir.path().join("rejects.jsonl");

    let output = cli(
        &url(&server),
        &[
            "ingest",
            "--rejects",
            rejects.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("created 46, updated 0, unchanged 0, rejected 2, unreadable 4"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:46: unreadable: invalid JSON"),
        "{err}"
    );
    assert!(
        err.contains("mixed.jsonl:49: rejected: title: must not be blank"),
        "{err}"
    );

    let records: Vec<serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Unreadable lines are written when read, rejected ones when answered.
    let mut records = records;
    records.sort_by_key(|r| r["line"].as_u64());
    let summary: Vec<(u64, &str)> = records
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            (46, "unreadable"),
            (47, "unreadable"),
            (48, "unreadable"),
            (49, "rejected"),
            (50, "rejected"),
            (52, "unreadable")
        ]
    );
    assert_eq!(records[0]["text"], "{broken json");
    assert!(records[2]["reason"]
        .as_str()
        .unwrap()
        .contains("publishedAt"));
    assert!(records[4]["reason"].as_str().unwrap().starts_with("url:"));

    assert_eq!(count_all(&mut server.client).await, 46);
    let np = list_all(
        &mut server.client,
        proto::ListArticlesRequest {
            start_time: Some(ts(1_588_291_200, 0)), // 2020-05-01
            end_time: Some(ts(1_591_000_000, 0)),
            view: ArticleView::Full as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(np.len(), 5);
    assert_eq!(np[0].title, "News-please 0");
    assert_eq!(np[0].body, "News-please text 0");
    assert_eq!(np[0].description, "Lede");
    assert_eq!(np[0].source, "np.example.org");
    assert_eq!(
        np[0].published_at,
        Some(ts(1_588_343_400, 0)),
        "2020-05-01 14:30:00 read as UTC"
    );
    assert!(np[0].id.starts_with("u-"));
}

/// gzip files and standard input are read, and loading the same articles
/// again changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_files_and_stdin_load_and_a_second_load_is_unchanged() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("articles.jsonl.gz");
    let text: String = (0..30).map(|i| good_line(i) + "\n").collect();
    let mut encoder = GzEncoder::new(std::fs::File::create(&gz).unwrap(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();

    let output = cli(&url(&server), &["ingest", gz.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("created 30, updated 0, unchanged 0"),
        "{}",
        stderr(&output)
    );

    let mut child = Command::new(BINARY)
        .args(["ingest", "-"])
        .env("ARCHIVE_SERVER", url(&server))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("created 0, updated 0, unchanged 30"),
        "{}",
        stderr(&output)
    );
    assert_eq!(count_all(&mut server.client).await, 30);
}

/// The server dies mid-load: the command says how far it got and exits
/// non-zero; re-running it after a restart stores the rest and duplicates
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_load_says_how_far_it_got_and_a_rerun_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = dir.path().join("load.jsonl");
    let text: String = (0..2_000).map(|i| good_line(i) + "\n").collect();
    std::fs::write(&input, &text).unwrap();

    let mut server = ServerProcess::start(&data, &[]);
    let mut client = server.client().await;
    // Feed the first half through stdin and keep the pipe open, so the load
    // cannot finish before the server is killed.
    let mut loader = Command::new(BINARY)
        .args(["ingest", "-"])
        .env("ARCHIVE_SERVER", format!("http://{}", server.addr))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = loader.stdin.take().unwrap();
    let first_half: String = text.lines().take(1_000).map(|l| format!("{l}\n")).collect();
    stdin.write_all(first_half.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "g0999".into(),
        })
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the first half was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let output = loader.wait_with_output().unwrap();
    drop(stdin);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("ingest interrupted"), "{err}");
    // Acknowledgements still on the wire when the server died are lost, so
    // the command knows of at most the first 1000.
    let acknowledged: u64 = err
        .split("everything up to -:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no last acknowledged line in: {err}"));
    assert!((1..=1_000).contains(&acknowledged), "{err}");
    assert!(err.contains("re-run the same command"), "{err}");
    // The broken stream is told as code and message, not as Debug output.
    assert!(
        !err.contains("Status {") && !err.contains("source:"),
        "{err}"
    );

    let server = ServerProcess::start(&data, &[]);
    let output = cli(
        &format!("http://{}", server.addr),
        &["ingest", input.to_str().unwrap()],
    );
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let count = |label: &str| -> u64 {
        let after = err.split(&format!("{label} ")).nth(1).unwrap();
        after.split([',', ';']).next().unwrap().parse().unwrap()
    };
    // Whatever the killed server had acknowledged comes back UNCHANGED.
    assert_eq!(count("created") + count("unchanged"), 2_000, "{err}");
    assert!(count("unchanged") >= acknowledged, "{err}");
    let failed = (count("updated"), count("rejected"), count("unreadable"));
    assert_eq!(failed, (0, 0, 0), "{err}");
    let mut client = server.client().await;
    assert_eq!(count_all(&mut client).await, 2_000);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
}

fn without_ingest_time(mut articles: Vec<proto::Article>) -> BTreeMap<String, proto::Article> {
    articles
        .drain(..)
        .map(|mut a| {
            a.ingested_at = None;
            (a.id.clone(), a)
        })
        .collect()
}

async fn full_listing(client: &mut Client) -> Vec<proto::Article> {
    list_all(
        client,
        proto::ListArticlesRequest {
            page_size: 1000,
            view: ArticleView::Full as i32,
            ..Default::default()
        },
    )
    .await
}

/// Export an archive, ingest the file into an empty server: same ids,
/// content and content_sha256 for every article.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_ingest_into_an_empty_server_reproduces_the_archive() {
    let mut source = TestServer::start().await;
    let mut articles: Vec<proto::Article> = (0..120)
        .map(|i| proto::Article {
            url: if i % 2 == 0 {
                format!("https://example.com/{i}?utm_source=x")
            } else {
                String::new()
            },
            id: if i % 3 == 0 {
                format!("given-{i}")
            } else {
                String::new()
            },
            title: format!("Title {i} “quoted”"),
            body: format!("{i}\n{}", fixture_body()),
            published_at: Some(ts(-3_755_289_600 + i * 40_000_000, (i as i32) * 7)),
            authors: vec!["S├╕ren Ekdahl".into(), format!("Author {i}")],
            source: "example.com".into(),
            section: "World".into(),
            tags: vec!["t1".into(), "t2".into()],
            language: "en".into(),
            description: if i % 5 == 0 {
                "Summary".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .collect();
    articles.push(proto::Article {
        body: "\u{0}control\u{1b}[0m".into(),
        ..article("odd", 0)
    });
    ingest(&mut source.client, articles).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    let output = cli(&url(&source), &["export", "-o", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 121);

    let mut target = TestServer::start().await;
    let output = cli(&url(&target), &["ingest", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("created 121"),
        "{}",
        stderr(&output)
    );

    let before = without_ingest_time(full_listing(&mut source.client).await);
    let after = without_ingest_time(full_listing(&mut target.client).await);
    assert_eq!(before.len(), 121);
    assert_eq!(before, after);
}

/// An export cut off mid-line is resumed with --resume: the partial line is
/// dropped and the file ends up identical to an uninterrupted export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_export_is_resumed_from_the_last_complete_line() {
    let mut server = TestServer::start().await;
    ingest(
        &mut server.client,
        (0..200)
            .map(|i| article(&format!("x{i:03}"), i * 1_000 - 100_000))
            .collect(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.jsonl");
    let output = cli(
        &url(&server),
        &[
            "export",
            "--from",
            "1969-12-31",
            "-o",
            full.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let full_text = std::fs::read(&full).unwrap();

    let broken = dir.path().join("broken.jsonl");
    let cut = full_text
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(40)
        .unwrap()
        .0
        + 30;
    std::fs::write(&broken, &full_text[..cut]).unwrap();
    let output = cli(
        &url(&server),
        &[
            "export",
            "--from",
            "1969-12-31",
            "--resume",
            "-o",
            broken.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("resuming after"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&broken).unwrap(), full_text);
}

/// get and list give one line per article, or the JSON mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_list_show_articles_for_humans_and_as_json() {
    let mut server = TestServer::start().await;
    let articles = vec![
        proto::Article {
            title: "Line\nbreak".into(),
            ..article("b", 86_400)
        },
        article("a", 0),
        article("c", 2 * 86_400),
    ];
    ingest(&mut server.client, articles).await;
    let output = cli(
        &url(&server),
        &["list", "--from", "1970-01-02", "--limit", "5"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "1970-01-02T00:00:00Z  example.com  Line break  b",
            "1970-01-03T00:00:00Z  example.com  Title of c  c"
        ]
    );
    let output = cli(
        &url(&server),
        &["list", "--newest-first", "--limit", "1", "--json"],
    );
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["id"], "c");

    let output = cli(&url(&server), &["get", "a", "--json"]);
    assert!(output.status.success());
    let got: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(got["body"], "Body of a");
    let output = cli(&url(&server), &["get", "a"]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with("1970-01-01T00:00:00Z  example.com  Title of a  a\n"),
        "{text}"
    );
    assert!(text.ends_with("\nBody of a\n"), "{text}");

    let missing = cli(&url(&server), &["get", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("NotFound"),
        "{}",
        stderr(&missing)
    );
    let unreachable = cli("http://127.0.0.1:1", &["list"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("cannot connect"),
        "{}",
        stderr(&unreachable)
    );
}

/// `--server host:port` (grpcurl's form, no scheme) reaches a plaintext
/// server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_given_as_host_and_port_is_reached_over_plaintext() {
    let mut server = TestServer::start().await;
    ingest(&mut server.client, vec![article("hp", 0)]).await;
    let output = Command::new(BINARY)
        .args(["list", "--server", &server.addr.to_string()])
        .env_remove("ARCHIVE_SERVER")
        .env_remove("ARCHIVE_CA_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).ends_with("  hp\n"));
}

/// The number after `label ` in a summary line ("created 12, …").
fn count_after(text: &str, label: &str) -> u64 {
    text.split(&format!("{label} "))
        .nth(1)
        .and_then(|after| after.split([',', ';', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {label:?} in: {text}"))
}

/// Lines found unreadable after the server's last answer (the last lines of
/// the input) are still counted: the summary's line count is every
/// non-blank line read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_count_includes_unreadable_lines_at_the_end_of_the_input() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tail.jsonl");
    let mut text: String = (0..2_000).map(|i| good_line(i) + "\n").collect();
    text.push('\n'); // blank, not counted
    for i in 0..11 {
        text.push_str(&format!("{{broken {i}\n"));
    }
    std::fs::write(&input, text).unwrap();

    let output = cli(&url(&server), &["ingest", input.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert_eq!(count_after(&err, "created"), 2_000, "{err}");
    assert_eq!(count_after(&err, "unreadable"), 11, "{err}");
    assert!(err.contains(" s, 2011 lines, "), "{err}");
}

/// A line that is not UTF-8 is kept in the rejects file byte for byte:
/// `text_base64` decodes to exactly the line (without its newline), and
/// `text` stays readable; valid lines carry only `text`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rejects_file_keeps_the_exact_bytes_of_a_line_that_is_not_utf8() {
    use base64::Engine as _;

    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("latin1.jsonl");
    let latin1: Vec<u8> =
        b"{\"title\": \"Agn\xe8s\", \"body\": \"b\", \"publishedAt\": \"2020-01-01T00:00:00Z\"}"
            .to_vec();
    let mut bytes = good_line(1).into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(&latin1);
    bytes.extend_from_slice(b"\r\n{broken\n");
    std::fs::write(&input, &bytes).unwrap();
    let rejects = dir.path().join("rejects.jsonl");

    let output = cli(
        &url(&server),
        &[
            "ingest",
            "--rejects",
            rejects.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let records: BTreeMap<u64, serde_json::Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["line"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(records.keys().copied().collect::<Vec<_>>(), [2, 3]);
    let not_utf8 = &records[&2];
    assert_eq!(not_utf8["reason"], "not valid UTF-8");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(not_utf8["text_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, latin1);
    assert!(not_utf8["text"].as_str().unwrap().contains("Agn\u{FFFD}s"));
    assert_eq!(records[&3]["text"], "{broken");
    assert!(records[&3].get("text_base64").is_none());
}

/// `list` stops at its limit and says how to get the rest: the same command
/// with `--page-token` continues exactly after the last article shown, and
/// `--limit 0` is the API's default page size, 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_says_how_to_continue_past_its_limit_and_limit_0_means_50() {
    let mut server = TestServer::start().await;
    ingest(
        &mut server.client,
        (0..60)
            .map(|i| article(&format!("p{i:02}"), i * 60))
            .collect(),
    )
    .await;
    let ids = |output: &Output| -> Vec<String> {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.rsplit("  ").next().unwrap().to_string())
            .collect()
    };
    let token_in = |output: &Output| -> String {
        let err = stderr(output);
        err.split("--page-token ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no --page-token in: {err}"))
            .to_string()
    };

    let first = cli(&url(&server), &["list", "--limit", "25"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(ids(&first).len(), 25);
    assert!(
        stderr(&first).contains("more articles follow"),
        "{}",
        stderr(&first)
    );
    let token = token_in(&first);
    let rest = cli(
        &url(&server),
        &["list", "--limit", "100", "--page-token", &token],
    );
    assert!(rest.status.success(), "{}", stderr(&rest));
    assert!(!stderr(&rest).contains("--page-token"), "{}", stderr(&rest));
    let all: Vec<String> = (0..60).map(|i| format!("p{i:02}")).collect();
    assert_eq!([ids(&first), ids(&rest)].concat(), all);

    let default_page = cli(&url(&server), &["list", "--limit", "0"]);
    assert!(default_page.status.success(), "{}", stderr(&default_page));
    assert_eq!(ids(&default_page), all[..50]);
    assert!(stderr(&default_page).contains("--page-token"));

    // A limit that reaches the end exactly has nothing more to announce.
    let everything = cli(&url(&server), &["list", "--limit", "60"]);
    assert_eq!(ids(&everything).len(), 60);
    assert!(stderr(&everything).is_empty(), "{}", stderr(&everything));
}

/// Counts of one are singular: "1 line" after loading one line, "exported
/// 1 article" after exporting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_of_one_are_singular() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("one.jsonl");
    std::fs::write(&input, good_line(1) + "\n").unwrap();
    let loaded = cli(&url(&server), &["ingest", input.to_str().unwrap()]);
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert!(stderr(&loaded).contains(" 1 line, "), "{}", stderr(&loaded));

    let exported = cli(
        &url(&server),
        &[
            "export",
            "-o",
            dir.path().join("out.jsonl").to_str().unwrap(),
        ],
    );
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert!(
        stderr(&exported).contains("exported 1 article, "),
        "{}",
        stderr(&exported)
    );
}

/// The revisions of an id, newest first, as lines or JSON.
async fn revision_list(client: &mut Client, id: &str) -> Vec<proto::Article> {
    client
        .list_article_revisions(proto::ListArticleRevisionsRequest {
            id: id.into(),
            page_size: 1000,
            view: ArticleView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions
}

/// `revisions`, `changes` (resumable by the printed last sequence, JSON
/// Lines, --follow until interrupted) and `delete` with its errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_changes_and_delete_from_the_command_line() {
    let mut server = TestServer::start().await;
    let url = url(&server);
    let first = proto::Article {
        title: "First take".into(),
        ..article("h", -86_400 * 400)
    };
    let corrected = proto::Article {
        title: "Corrected “take”".into(),
        body: "Corrected body".into(),
        ..first.clone()
    };
    ingest(&mut server.client, vec![first, corrected, article("k", 5)]).await;

    let output = cli(&url, &["revisions", "h"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("revision 2") && lines[0].contains("Corrected “take”"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("revision 1") && lines[1].contains("First take"),
        "{text}"
    );
    let output = cli(&url, &["revisions", "h", "--json", "--limit", "1"]);
    let newest: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(newest["revision"], "2");

    let output = cli(&url, &["changes"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().nth(1).unwrap().contains("updated  h"),
        "{text}"
    );
    assert!(
        stderr(&output).contains("last sequence 3"),
        "{}",
        stderr(&output)
    );
    let output = cli(&url, &["changes", "--after", "3"]);
    assert!(output.stdout.is_empty());
    assert!(
        stderr(&output).contains("last sequence 3"),
        "resuming at the end says where it is"
    );
    let output = cli(&url, &["changes", "--after", "1", "--json"]);
    let sequences: Vec<u64> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let change: serde_json::Value = serde_json::from_str(line).unwrap();
            change["sequence"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(sequences, [2, 3]);

    let output = cli(&url, &["delete", "h", "--reason", "court order"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted h (change 4)"));
    let again = cli(&url, &["delete", "h", "--reason", "court order"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("deleted"), "{}", stderr(&again));
    let unknown = cli(&url, &["delete", "nope", "--reason", "x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("nope"), "{}", stderr(&unknown));
    let gone = cli(&url, &["revisions", "h"]);
    assert_eq!(gone.status.code(), Some(1));
    let output = cli(&url, &["changes", "--after", "3"]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.starts_with("4  deleted  h") && text.contains("reason: court order"),
        "{text}"
    );

    // --follow prints a change made after it started, and on interruption
    // the last sequence to resume from.
    let mut follower = Command::new(BINARY)
        .args(["changes", "--follow", "--after", "4"])
        .env("ARCHIVE_SERVER", &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ingest(&mut server.client, vec![article("late", 9)]).await;
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = follower.kill();
        panic!("the follower printed nothing within 60 s");
    };
    assert!(line.starts_with("5  created  late"), "{line}");
    let interrupted = Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while follower.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = follower.kill();
            panic!("the follower did not stop on SIGINT within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = follower.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(
        stderr(&output).contains("last sequence 5"),
        "{}",
        stderr(&output)
    );
}

/// `export --revisions` into `ingest --revisions` on an empty archive gives
/// every article the same revisions with the same hashes and ingest times;
/// a cut-off history export resumes to the same file; restoring twice
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_history_export_restores_the_same_revisions_and_resumes() {
    let mut source = TestServer::start().await;
    let mut versions = Vec::new();
    for i in 0..60i64 {
        for revision in 0..=(i % 3) {
            versions.push(proto::Article {
                title: format!("Story {i} take {revision}"),
                body: format!("{revision} {i}\n{}", fixture_body()),
                ..article(&format!("s{i:02}"), i * 86_400 * 300 - 3_000_000_000)
            });
        }
    }
    ingest(&mut source.client, versions).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.jsonl");
    let output = cli(
        &url(&source),
        &["export", "--revisions", "-o", file.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let history = std::fs::read(&file).unwrap();
    assert_eq!(history.iter().filter(|b| **b == b'\n').count(), 120);

    let broken = dir.path().join("broken.jsonl");
    let cut = history
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(50)
        .unwrap()
        .0
        + 100;
    std::fs::write(&broken, &history[..cut]).unwrap();
    let output = cli(
        &url(&source),
        &[
            "export",
            "--revisions",
            "--resume",
            "-o",
            broken.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read(&broken).unwrap(),
        history,
        "resumed to the same file"
    );

    let mut target = TestServer::start().await;
    let output = cli(
        &url(&target),
        &["ingest", "--revisions", file.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    for i in 0..60 {
        let id = format!("s{i:02}");
        let before = revision_list(&mut source.client, &id).await;
        let after = revision_list(&mut target.client, &id).await;
        assert_eq!(before.len() as i64, i % 3 + 1);
        assert_eq!(before, after, "{id}: revisions, hashes and ingest times");
    }
    let output = cli(
        &url(&target),
        &["ingest", "--revisions", file.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("unchanged 120"),
        "a second restore changes nothing: {}",
        stderr(&output)
    );
}

/// `get` with several ids (one BatchGet, all or nothing), `urls` with each
/// match and a continuation token, `count` as a calendar and as JSON, and
/// `list`'s filter flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_several_urls_count_and_filters_from_the_command_line() {
    let mut server = TestServer::start().await;
    let url = url(&server);
    let day = 86_400;
    let y2022 = 1_640_995_200;
    let mut articles = Vec::new();
    for i in 0..6i64 {
        articles.push(proto::Article {
            url: format!(
                "https://{}example.com/world/{i}",
                if i % 2 == 0 { "" } else { "news." }
            ),
            source: if i < 4 { "Example.com" } else { "other.org" }.into(),
            section: "World".into(),
            ..article(&format!("q{i}"), y2022 + i * 40 * day)
        });
    }
    ingest(&mut server.client, articles).await;

    let output = cli(&url, &["get", "q2", "q0", "q2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let summaries: Vec<&str> = text.lines().filter(|l| l.starts_with("2022-")).collect();
    assert_eq!(summaries.len(), 3, "{text}");
    assert!(
        summaries[0].ends_with("q2") && summaries[1].ends_with("q0"),
        "{text}"
    );
    let missing = cli(&url, &["get", "q1", "nope", "q3"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("nope"), "{}", stderr(&missing));
    let refused = cli(&url, &["get", "q1", "q2", "--revision", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("--revision takes one id"),
        "{}",
        stderr(&refused)
    );

    let output = cli(&url, &["urls", "https://EXAMPLE.com/world/2?utm_source=x"]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("https://example.com/world/2  2022-"),
        "{text}"
    );
    let output = cli(
        &url,
        &[
            "urls",
            "example.com",
            "--match",
            "domain",
            "--limit",
            "4",
            "--json",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--page-token"),
        "{}",
        stderr(&output)
    );
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 4);
    let output = cli(&url, &["urls", "example.com", "--match", "host"]);
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 3);
    let output = cli(
        &url,
        &["urls", "https://example.com/world/", "--match", "prefix"],
    );
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 3);
    let bad = cli(&url, &["urls", "no url here"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("url"), "{}", stderr(&bad));

    let output = cli(&url, &["count", "--by", "month"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("Jan"), "{text}");
    let row = text.lines().find(|l| l.starts_with(" 2022")).unwrap();
    // Jan 1, Feb 10, Mar 22, May 1, Jun 10, Jul 20: one each.
    assert!(row.trim_end().ends_with('6'), "{text}");
    assert!(text.contains("total 6 articles"), "{text}");
    let output = cli(
        &url,
        &[
            "count",
            "--by",
            "day",
            "--source",
            "other.org",
            "--to",
            "2022-07-01",
        ],
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("2022-06") && text.contains("total 1 article\n"),
        "{text}"
    );
    let output = cli(&url, &["count", "--by", "year", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["total"], "6");
    assert_eq!(json["buckets"][0]["startTime"], "2022-01-01T00:00:00Z");

    let output = cli(
        &url,
        &["list", "--source", "OTHER.org", "--section", "World"],
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
}
