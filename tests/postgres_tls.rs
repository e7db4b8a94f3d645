//! TLS to the database, with a private CA made at test time (rcgen): the
//! store and `serve --store-ca-file` connect over TLS with
//! `sslmode=require`, and the server's certificate is really verified (no
//! CA, or another CA, and the store does not open).
//!
//! A binary of its own: enabling TLS on the process's PostgreSQL cluster
//! changes it for every database of the process.

mod common;

use std::{net::IpAddr, path::Path};

use article_archive::{
    article::{Article, ArticleId},
    proto,
    store::postgres::{schema, PostgresConfig},
    Store,
};
use common::{postgres, ServerProcess};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// A private CA and a server certificate it signed.
struct Pki {
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
}

/// A CA, and a server certificate for 127.0.0.1 (an IP address SAN, which
/// is what a url with host 127.0.0.1 is checked against) and localhost.
fn make_pki() -> Pki {
    let (ca, ca_key) = make_ca("archive test database CA");
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "archive test database");
    params.subject_alt_names = vec![
        SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
        SanType::DnsName("localhost".try_into().unwrap()),
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, key)
}

/// The CA of the certificate the cluster serves, once TLS is on.
static TLS_CA: OnceCell<String> = OnceCell::const_new();

/// A new database on the process's cluster with TLS on (enabled by the
/// first test to get here), as (its plain url, the CA's PEM); None when
/// PostgreSQL cannot run here (a failure under CI, a loud skip elsewhere).
async fn database_with_tls(test: &str) -> Option<(String, String)> {
    let url = postgres::database_or_skip(test).await?;
    let ca = TLS_CA
        .get_or_init(|| async {
            let pki = make_pki();
            postgres::cluster()
                .unwrap()
                .enable_tls(&pki.server_cert_pem, &pki.server_key_pem)
                .await;
            pki.ca_pem
        })
        .await;
    Some((url, ca.clone()))
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A superuser connection without TLS, to look at the server's view.
async fn plain_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The archive's connections to `url`'s database as (over TLS, not over
/// TLS), from `pg_stat_ssl` (the engine names itself `article-archive`).
async fn archive_connections(admin: &tokio_postgres::Client) -> (i64, i64) {
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'article-archive'
               AND a.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// With `sslmode=require` and the CA, the store opens, takes an article
/// and reads it back, and every connection it holds is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn the_store_connects_over_tls_with_the_ca_file() {
    let Some((url, ca)) = database_with_tls("the_store_connects_over_tls_with_the_ca_file").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = PostgresConfig::new(format!("{url}?sslmode=require"));
    config.ca_file = Some(write_pem(dir.path(), "ca.pem", &ca));
    let store = Store::open_postgres(&config)
        .await
        .unwrap_or_else(|e| panic!("opening the store over TLS: {e}"));

    let outcome = store
        .submit(Article::from_proto(common::article("over-tls", 1_700_000_000)).unwrap())
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    assert_eq!(
        outcome,
        article_archive::store::WriteOutcome::Created,
        "{outcome:?}"
    );
    let id = ArticleId::parse("id", "over-tls").unwrap();
    let stored = store
        .get(&id)
        .await
        .unwrap()
        .expect("the article reads back");
    assert_eq!(stored.id, id);
    assert_eq!(stored.revision, 1);
    let back = stored.into_proto(true);
    assert_eq!(back.title, "Title of over-tls");
    assert_eq!(back.body, "Body of over-tls");

    // The server's side: the store's connections (pool, writer, feed
    // listener) are TLS, none plaintext.
    let admin = plain_client(&url).await;
    let (tls, plain) = archive_connections(&admin).await;
    eprintln!("the store's connections: {tls} over TLS, {plain} not");
    assert!(tls > 0, "no TLS connection from the store");
    assert_eq!(plain, 0, "the store has plaintext connections");
    let (version, cipher): (String, String) = {
        let row = admin
            .query_one(
                "SELECT s.version, s.cipher FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = 'article-archive'
                   AND a.datname = current_database() AND s.ssl
                 LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    eprintln!("negotiated {version} {cipher}");
    assert!(version.starts_with("TLSv1."), "{version}");
}

/// With `sslmode=require` but without the CA (only the system's roots), or
/// with another CA, the certificate is not trusted and the store does not
/// open: verification is real, and the error says why (the certificate's
/// issuer is unknown); so does the engine's own connector (`schema::tls`)
/// connecting the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn the_store_refuses_a_certificate_it_cannot_verify() {
    let Some((url, _ca)) =
        database_with_tls("the_store_refuses_a_certificate_it_cannot_verify").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (other_ca, _) = make_ca("some other CA");
    let other_ca = write_pem(dir.path(), "other-ca.pem", &other_ca.pem());
    let require = format!("{url}?sslmode=require");
    for (what, ca_file) in [("no CA file", None), ("another CA", Some(other_ca))] {
        let mut config = PostgresConfig::new(&require);
        config.ca_file = ca_file.clone();
        let error = match Store::open_postgres(&config).await {
            Ok(_) => panic!("the store opened over TLS with {what}"),
            Err(e) => e.to_string(),
        };
        eprintln!("the store, with {what}: {error}");
        // The store's message names the certificate it refused, and that
        // it could not connect (not "retry": a start-up failure).
        assert!(
            error.contains("cannot connect to the database")
                && error.contains("invalid peer certificate: UnknownIssuer"),
            "with {what}: {error}"
        );

        let connector = schema::tls(ca_file.as_deref()).unwrap();
        let error = match tokio_postgres::connect(&require, connector).await {
            Ok(_) => panic!("the engine's TLS connector connected with {what}"),
            Err(e) => with_sources(&e),
        };
        eprintln!("the engine's connector, with {what}: {error}");
        let lower = error.to_lowercase();
        assert!(
            lower.contains("certificate") && lower.contains("issuer"),
            "with {what}, the handshake did not fail on the certificate: {error}"
        );
    }
}

/// `error` and its sources, joined by ": ".
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// `serve --store URL?sslmode=require --store-ca-file CA`, the real binary,
/// starts and answers over gRPC, its connections encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    missing_postgres,
    ignore = "PostgreSQL is not installed (apt-get install postgresql)"
)]
async fn serve_connects_over_tls_with_store_ca_file() {
    let Some((url, ca)) = database_with_tls("serve_connects_over_tls_with_store_ca_file").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_path = write_pem(dir.path(), "ca.pem", &ca);
    let store_url = format!("{url}?sslmode=require");
    let server = tokio::task::spawn_blocking(move || {
        ServerProcess::start_on_database(
            &store_url,
            &["--store-ca-file", ca_path.to_str().unwrap()],
        )
    })
    .await
    .unwrap();
    let mut client = server.client().await;
    let status = client
        .get_article(proto::GetArticleRequest {
            id: "never-ingested".into(),
            revision: 0,
        })
        .await
        .expect_err("an unknown id is not found");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    let (tls, plain) = archive_connections(&plain_client(&url).await).await;
    eprintln!("the server's connections: {tls} over TLS, {plain} not");
    assert!(tls > 0, "no TLS connection from the server");
    assert_eq!(plain, 0, "the server has plaintext connections");
}
