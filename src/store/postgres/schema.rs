//! Connecting to the database (pool, TLS) and bringing its schema up to
//! date with the migrations in `migrations/`.

use std::{path::Path, sync::Arc, time::Duration};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db_error;
use crate::error::{Error, Result};

/// The migrations, in order: migration `i` (0-based) brings the schema to
/// version `i + 1`. Applied files are never edited; a change is a new file.
pub const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_archive.sql",
    include_str!("migrations/0001_archive.sql"),
)];

/// The schema version this binary knows.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The TLS connector for the database: the system's roots, plus the CA
/// certificates in `ca_file` when given (a private CA). Whether TLS is used
/// is the url's `sslmode` (libpq's meaning: `disable`, `prefer`, the
/// default, or `require`).
///
/// # Errors
/// [`Error::Config`] when `ca_file` cannot be read or holds no certificate.
pub fn tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Config(format!("--store-ca-file {}: {e}", path.display())))?
        {
            let cert = cert
                .map_err(|e| Error::Config(format!("--store-ca-file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| Error::Config(format!("--store-ca-file {}: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::Config(format!(
                "--store-ca-file {}: no PEM certificate in it",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A pool of `size` connections to `config`'s database. Connections are
/// made when first needed; one that the server closed (a restart) is found
/// out when it fails and replaced.
///
/// # Errors
/// [`Error::Config`] when the pool cannot be built.
pub fn pool(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    size: usize,
    connect_timeout: Duration,
) -> Result<Pool> {
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            // A closed connection is dropped on return; one the server
            // closed while it sat idle fails its next query, which the
            // engine retries once on a new connection.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(connect_timeout))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .build()
        .map_err(|e| Error::Config(format!("the database connection pool: {e}")))
}

/// Applies the migrations the database lacks, each in its own transaction
/// with the row that records it, and returns the schema version. Replicas
/// starting at once race harmlessly: the loser's transaction fails on the
/// version row (or the tables) and it looks again.
///
/// # Errors
/// [`Error::SchemaTooNew`] when the database has a newer schema than this
/// binary knows; [`Error::Database`] or [`Error::DatabaseUnavailable`].
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<i64> {
    for _attempt in 0..5 {
        match migrate_once(client).await {
            Err(Error::Database(e))
                if matches!(
                    e.code(),
                    Some(&SqlState::UNIQUE_VIOLATION)
                        | Some(&SqlState::DUPLICATE_TABLE)
                        | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                ) =>
            {
                continue
            }
            other => return other,
        }
    }
    migrate_once(client).await
}

async fn migrate_once(client: &mut tokio_postgres::Client) -> Result<i64> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS archive_schema (
                version    bigint PRIMARY KEY,
                name       text NOT NULL,
                applied_s  bigint NOT NULL
            )",
        )
        .await
        .map_err(db_error)?;
    let found: i64 = client
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM archive_schema",
            &[],
        )
        .await
        .map_err(db_error)?
        .get(0);
    if found > current_version() {
        return Err(Error::SchemaTooNew {
            found,
            known: current_version(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i64 + 1;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute(
            "INSERT INTO archive_schema (version, name, applied_s) VALUES ($1, $2, $3)",
            &[&version, name, &crate::article::Timestamp::now().seconds],
        )
        .await
        .map_err(db_error)?;
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        tracing::info!(version, name, "applied a schema migration");
    }
    Ok(current_version())
}

/// The key that signs page tokens, made by the first replica that needs it
/// and shared by all.
///
/// # Errors
/// [`Error::Database`] or [`Error::DatabaseUnavailable`].
pub async fn page_token_key(client: &tokio_postgres::Client) -> Result<[u8; 32]> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh)
        .map_err(|e| Error::TaskFailed(format!("no randomness for the page-token key: {e}")))?;
    client
        .execute(
            "INSERT INTO archive_settings (name, value) VALUES ('page_token_key', $1)
             ON CONFLICT (name) DO NOTHING",
            &[&fresh.as_slice()],
        )
        .await
        .map_err(db_error)?;
    let stored: Vec<u8> = client
        .query_one(
            "SELECT value FROM archive_settings WHERE name = 'page_token_key'",
            &[],
        )
        .await
        .map_err(db_error)?
        .get(0);
    stored.try_into().map_err(|_| Error::Corrupt {
        key: "archive_settings/page_token_key".into(),
        reason: "not 32 bytes".into(),
    })
}
