//! A PostgreSQL cluster for the tests: one per test process, started on
//! first use in a temporary directory on a free loopback port, from
//! Debian's binaries (`/usr/lib/postgresql/<newest>/bin`).
//!
//! A static is never dropped, so the cluster is not stopped by a `Drop`:
//! it is started through a small watchdog shell whose stdin is a pipe this
//! process keeps open for its whole life. When the process ends, however it
//! ends (a normal exit, a panic, `SIGKILL`), the kernel closes the pipe, the
//! watchdog's `read` returns, and it stops the cluster (`-m immediate`) and
//! removes the directory. The watchdog has its own process group, so a
//! Ctrl-C at the terminal reaches the tests but not it; PostgreSQL itself
//! runs in its own session (`pg_ctl` calls `setsid`).
//!
//! The cluster runs with `fsync` and `synchronous_commit` on, as a real
//! server would: tests may check what survives a stop. It is initialised
//! with the C locale, so text sorts bytewise as the archive orders keys.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        OnceLock,
    },
};

use tempfile::TempDir;
use tokio_postgres::NoTls;

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// Whether PostgreSQL tests can run here: the process's cluster, started on
/// the first call (which blocks for a second or two while `initdb` runs);
/// Err(reason) when the binaries are missing or the cluster will not start.
/// A failure is remembered: later calls return the same reason at once.
pub fn cluster() -> Result<&'static Cluster, String> {
    CLUSTER
        .get_or_init(Cluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// The url of a new database for `test`, or None after saying loudly that
/// the test is skipped because PostgreSQL cannot run here. Under CI (env var
/// `CI` set) it panics instead of skipping: a PostgreSQL test that cannot
/// run fails in CI (see [`super::cannot_run`]).
pub async fn database_or_skip(test: &str) -> Option<String> {
    // Starting the cluster blocks; keep it off the test's runtime.
    let started = tokio::task::spawn_blocking(cluster)
        .await
        .expect("starting the PostgreSQL cluster panicked");
    match started {
        Ok(cluster) => Some(cluster.new_database().await),
        Err(reason) => {
            super::cannot_run(test, &reason);
            None
        }
    }
}

/// The running cluster. Every test of the process shares it; each takes
/// its own database with [`Cluster::new_database`].
pub struct Cluster {
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// Whether the PostgreSQL commands run through `runuser -u postgres`.
    as_postgres: bool,
    /// The watchdog shell. Its stdin must stay open until the process ends:
    /// held here, in a static, it is never closed before then.
    _watchdog: Child,
    /// Removed by the watchdog: at exit, or when setting the cluster up
    /// fails. (Dropping it removes it only if the watchdog never ran.)
    _dir: TempDir,
}

impl Cluster {
    /// The cluster's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database on the cluster (a unique name per call: a
    /// counter plus the process id), as a connection url
    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub async fn new_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test cluster on {}: {e}", self.port));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        drop(client);
        let _ = connection.await;
        self.url(&name)
    }

    /// Stops PostgreSQL (`pg_ctl stop -m fast`, waiting until it is down),
    /// for tests that restart the database under load. Every database of
    /// the process's cluster goes down with it: a test that stops the
    /// server belongs in a test binary of its own, or must not run beside
    /// other PostgreSQL tests of its binary. Blocks; panics if `pg_ctl`
    /// fails.
    pub fn stop_server(&self) {
        let output = self.pg_ctl(&["-m", "fast", "-w", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts it again on the same data directory and port, waiting until
    /// it accepts connections (`pg_ctl -w start`). Blocks; panics with the
    /// server's log if it does not start.
    pub fn start_server(&self) {
        let log = self.log.display().to_string();
        let output = self.pg_ctl(&["-l", &log, "-w", "start"]);
        assert!(
            output.status.success(),
            "pg_ctl start failed ({}): {}{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        command(self.as_postgres, &self.bin.join("pg_ctl"))
            .current_dir(self.data.parent().unwrap())
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("pg_ctl runs")
    }

    fn start() -> Result<Self, String> {
        let bin = bin_dir()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        let dir = tempfile::Builder::new()
            .prefix("archive-test-postgres-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let root = dir.path().to_owned();
        let data = root.join("data");
        let log = root.join("log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        // In postgresql.conf rather than on pg_ctl's command line, so that
        // start_server starts the same server.
        let settings = format!(
            "\n# The test harness (tests/common/postgres.rs)\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             shared_buffers = 128MB\n\
             fsync = on\n\
             synchronous_commit = on\n",
            root.display()
        );
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG])
            .env(
                "AS",
                if as_postgres {
                    "runuser -u postgres --"
                } else {
                    ""
                },
            )
            .env("BIN", &bin)
            .env("ROOT", &root)
            .env("DATA", &data)
            .env("LOG", &log)
            .env("SETTINGS", settings)
            .current_dir(&root)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let mut stdout = BufReader::new(watchdog.stdout.take().unwrap());
        let mut said = String::new();
        let _ = stdout.read_line(&mut said);
        if said != "ready\n" {
            // The watchdog says why, cleans up and exits.
            let _ = stdout.read_to_string(&mut said);
            let status = watchdog.wait().map_err(|e| e.to_string())?;
            return Err(format!(
                "the PostgreSQL cluster did not start (watchdog {status}): {said}"
            ));
        }
        Ok(Self {
            port,
            bin,
            data,
            log,
            as_postgres,
            _watchdog: watchdog,
            _dir: dir,
        })
    }
}

/// The watchdog shell: sets the cluster up, starts it, says "ready", then
/// waits for its stdin to close (this process has ended, however it ended)
/// and stops the cluster and removes its directory. Everything it does
/// after the directory exists is done here, not by the test process, so a
/// test process killed at any moment (during initdb too) leaves nothing
/// behind: with SIGPIPE ignored, saying "ready" to a dead process fails
/// harmlessly and `read` returns at once. On failure it says why on stdout
/// (initdb's or pg_ctl's output and the server log), then cleans up.
const WATCHDOG: &str = r#"
    exec 2>&1
    trap '' PIPE
    fail() {
        echo "$1"
        cat "$ROOT/setup.out" 2>/dev/null
        if [ -s "$LOG" ]; then echo "server log:"; cat "$LOG"; fi
        $AS "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
        rm -rf "$ROOT"
        exit 1
    }
    # initdb refuses to run as root: then Debian's postgres user, who runs
    # the cluster, must own its directory.
    if [ -n "$AS" ]; then
        chown postgres: "$ROOT" >"$ROOT/setup.out" 2>&1 \
            || fail "cannot hand $ROOT to the postgres user:"
    fi
    $AS "$BIN/initdb" -D "$DATA" --auth=trust -U postgres -E UTF8 --locale=C \
        >"$ROOT/setup.out" 2>&1 || fail "initdb failed:"
    printf '%s' "$SETTINGS" >>"$DATA/postgresql.conf" || fail "cannot write postgresql.conf"
    $AS "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w start >"$ROOT/setup.out" 2>&1 \
        || fail "pg_ctl start failed:"
    echo ready
    exec >/dev/null 2>&1
    read _ignored
    $AS "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop
    rm -rf "$ROOT"
"#;

/// `program`, run as the postgres user when `as_postgres`.
fn command(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an `initdb`,
/// comparing versions as numbers (16 is newer than 9.6).
fn bin_dir() -> Result<PathBuf, String> {
    let missing = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; \
                   apt-get install postgresql)";
    let versions = std::fs::read_dir("/usr/lib/postgresql").map_err(|_| missing.to_owned())?;
    versions
        .flatten()
        .filter(|v| v.path().join("bin/initdb").is_file())
        .filter_map(|v| {
            let name = v.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            Some((version, v.path().join("bin")))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| missing.to_owned())
}

impl Cluster {
    /// Turns TLS on for the whole cluster, without a restart: writes
    /// `cert_pem` (the server's certificate, optionally followed by its
    /// chain) and `key_pem` (its private key) into the cluster's temporary
    /// directory as `server.crt` and `server.key` (the key mode 0600 and,
    /// when the tests run as root, owned by the `postgres` user who runs the
    /// server: PostgreSQL refuses a key others can read), points
    /// `ssl_cert_file` and `ssl_key_file` at them and sets `ssl = on` with
    /// `ALTER SYSTEM`, then reloads the configuration (`pg_reload_conf()`).
    ///
    /// It returns once TLS really is available: it retries, a bounded number
    /// of times, a TLS request to the server (the protocol's SSLRequest,
    /// which a server without a loaded certificate answers "no") and then
    /// checks that `SHOW ssl` says on. Panics, with the server log, if TLS
    /// does not come up (a key that does not match the certificate, one
    /// the server cannot read).
    ///
    /// Plaintext connections still work afterwards (the cluster's
    /// `pg_hba.conf` trusts loopback `host` connections, TLS or not), but a
    /// client whose `sslmode` is `prefer` now attempts TLS and verifies the
    /// certificate: every database of the process is affected, so a test
    /// that enables TLS belongs in a test binary of its own.
    pub async fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};

        let root = self.root();
        let cert = root.join("server.crt");
        let key = root.join("server.key");
        std::fs::write(&cert, cert_pem)
            .unwrap_or_else(|e| panic!("writing {}: {e}", cert.display()));
        // Created 0600, so the key is never readable by others, not even
        // for a moment.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .unwrap_or_else(|e| panic!("creating {}: {e}", key.display()));
        file.write_all(key_pem.as_bytes())
            .and_then(|()| file.sync_all())
            .unwrap_or_else(|e| panic!("writing {}: {e}", key.display()));
        drop(file);
        if self.as_postgres {
            let (uid, gid) = (postgres_id("-u"), postgres_id("-g"));
            for path in [&cert, &key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap_or_else(|e| {
                    panic!("handing {} to the postgres user: {e}", path.display())
                });
            }
        }

        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test cluster on {}: {e}", self.port));
        let connection = tokio::spawn(connection);
        let quoted = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', "''"));
        // One statement per query: ALTER SYSTEM cannot run in a
        // transaction block, and a multi-statement query is one.
        for (setting, value) in [
            ("ssl_cert_file", quoted(&cert)),
            ("ssl_key_file", quoted(&key)),
            ("ssl", "on".to_owned()),
        ] {
            let sql = format!("ALTER SYSTEM SET {setting} = {value}");
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
        let reloaded: bool = client
            .query_one("SELECT pg_reload_conf()", &[])
            .await
            .unwrap_or_else(|e| panic!("pg_reload_conf(): {e:?}"))
            .get(0);
        assert!(reloaded, "pg_reload_conf() returned false");
        drop(client);
        let _ = connection.await;

        // The postmaster reloads on SIGHUP, asynchronously; the backends it
        // forks after that offer TLS. A failed reload leaves `ssl` on but
        // no certificate loaded, so ask for TLS itself rather than `ssl`.
        let mut offered = false;
        for _attempt in 0..50 {
            if self.offers_tls().await {
                offered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            offered,
            "the cluster does not offer TLS 5 s after pg_reload_conf()\nserver log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test cluster on {}: {e}", self.port));
        let connection = tokio::spawn(connection);
        let ssl: String = client
            .query_one("SHOW ssl", &[])
            .await
            .unwrap_or_else(|e| panic!("SHOW ssl: {e:?}"))
            .get(0);
        assert_eq!(ssl, "on", "SHOW ssl after enabling TLS");
        drop(client);
        let _ = connection.await;
    }

    /// Whether the server answers a TLS request (SSLRequest: length 8, code
    /// 80877103) with 'S', "go ahead": only when it has a certificate and
    /// key loaded. The connection is dropped without a handshake.
    async fn offers_tls(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut request = Vec::with_capacity(8);
        request.extend_from_slice(&8u32.to_be_bytes());
        request.extend_from_slice(&80_877_103u32.to_be_bytes());
        if stream.write_all(&request).await.is_err() {
            return false;
        }
        let mut answer = [0u8; 1];
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                stream.read_exact(&mut answer)
            )
            .await,
            Ok(Ok(_))
        ) && answer[0] == b'S'
    }

    /// The cluster's temporary directory (the data directory, the log and
    /// the watchdog's files are in it).
    fn root(&self) -> &Path {
        self._dir.path()
    }
}

/// The uid (`flag` "-u") or gid ("-g") of the `postgres` user, by `id`.
fn postgres_id(flag: &str) -> u32 {
    let output = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id runs");
    assert!(
        output.status.success(),
        "id {flag} postgres failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("id {flag} postgres: {e}"))
}
