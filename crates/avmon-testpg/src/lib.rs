//! Test support: a throwaway PostgreSQL server, one fresh database per test.
//!
//! # Contract
//!
//! - [`TestPg::start`] runs `initdb` into a new temporary directory and starts a `postgres`
//!   server on `127.0.0.1` at a free port (and a unix socket in that directory), with
//!   durability off (`fsync`, `synchronous_commit`, `full_page_writes`, set in its
//!   `postgresql.conf`, so `ALTER SYSTEM` can turn it back on) because a test's data is thrown
//!   away. It returns once the server accepts connections. Trust authentication, one
//!   superuser, `postgres`.
//! - The binaries are looked up under `/usr/lib/postgresql/<version>/bin` (Debian's layout, the
//!   highest version first) and then on `PATH`. When they are missing, it **panics** with a
//!   message saying to run `./dev test` (which installs the `postgresql` package): a test that
//!   needs PostgreSQL must never pass by skipping itself.
//! - PostgreSQL refuses to run as root, so when the test process is root the data directory is
//!   given to `nobody` and `initdb` and the server run as that user.
//! - [`TestPg::fresh_database`] creates an empty database and returns its `postgres://` URL, so
//!   the tests of one process share one server ([`TestPg::shared`]) and none sees another's
//!   tables.
//! - [`TestPg::stop`] and [`TestPg::restart`] stop the server (a fast shutdown: sessions are
//!   ended, data kept) and start it again on the same port, for tests of what the code under
//!   test does while the database is away.
//! - Nothing outlives the test process: the server runs under a small `sh` watchdog whose stdin
//!   is a pipe from this process. When the pipe closes (the [`TestPg`] dropped, or the process
//!   gone, however it died: the shared server is a `static` that is never dropped) the watchdog
//!   shuts the server down and deletes the directory.
//!
//! Call it from test threads, not from inside an async runtime: it uses the blocking `postgres`
//! client, which runs a runtime of its own.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to accept connections before the start is given up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Tries at finding a free port: another process may take the one we picked before the server
/// binds it.
const PORT_TRIES: usize = 5;

/// The watchdog: starts the server (`"$@"`) in the background and waits for a line on stdin. A
/// line `keep` is a stop: shut down, keep the data. Anything else, end of file included (the test
/// process dropped the pipe or died), shuts down and deletes the whole directory.
const WATCHDOG: &str = r#"
root=$1; shift
"$@" </dev/null >>"$root/server.log" 2>&1 &
pid=$!
echo "$pid" >"$root/server.pid"
read -r cmd || cmd=
kill -INT "$pid" 2>/dev/null
wait "$pid"
[ "$cmd" = keep ] || rm -rf "$root"
"#;

/// A running (or stopped) throwaway PostgreSQL server. See the crate doc.
pub struct TestPg {
    /// Holds the data directory (`data/`), the socket, `server.log` and `server.pid`.
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as, when we are root.
    user: Option<(u32, u32)>,
    server: Option<Server>,
}

/// The watchdog process and the pipe that keeps it (and so the server) alive.
struct Server {
    watchdog: Child,
    stdin: ChildStdin,
}

impl std::fmt::Debug for TestPg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPg")
            .field("root", &self.root)
            .field("port", &self.port)
            .field("running", &self.server.is_some())
            .finish()
    }
}

impl TestPg {
    /// Start a new server in a new temporary directory. Panics (with the server's log) when it
    /// cannot, and when PostgreSQL is not installed.
    pub fn start() -> TestPg {
        let bin = find_bin_dir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, postgres) not found under \
                 /usr/lib/postgresql/*/bin or on PATH: run `./dev test`, which installs the \
                 `postgresql` package (or `apt-get install postgresql`)"
            )
        });
        // The directory stays: the watchdog deletes it when the server's life ends, since a
        // `static` shared server is never dropped.
        let root = tempfile::Builder::new()
            .prefix("avmon-testpg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
            .keep();
        // The directory we just created belongs to our effective uid: that says whether we are
        // root without `unsafe` or another dependency.
        let is_root = std::fs::metadata(&root)
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let user = is_root.then(nobody);
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("cannot give {} to nobody: {e}", root.display()));
        }
        let mut pg = TestPg {
            root,
            bin,
            port: 0,
            user,
            server: None,
        };
        pg.initdb();
        let mut last = String::new();
        for _ in 0..PORT_TRIES {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => return pg,
                Err(log) => last = log,
            }
        }
        let _ = std::fs::remove_dir_all(&pg.root);
        panic!("PostgreSQL did not start after {PORT_TRIES} tries; its log:\n{last}");
    }

    /// One server for the whole test process, started on first use. Give each test its own
    /// database with [`TestPg::fresh_database`]; tests that stop the server start their own.
    pub fn shared() -> &'static TestPg {
        static SHARED: OnceLock<TestPg> = OnceLock::new();
        SHARED.get_or_init(TestPg::start)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the server's `postgres` database, as the superuser.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this server (which may not exist).
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Create an empty database `name` (dropping one of that name first) and return its URL.
    /// `name` is lowercase letters, digits and `_`.
    pub fn fresh_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: use 1 to 63 lowercase letters, digits and _"
        );
        let mut admin = self.connect();
        // Names are checked above, so quoting them is enough. Two calls: one query string of
        // two statements would run as one transaction, which CREATE DATABASE refuses.
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            admin
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("cannot create database {name}: {}", describe(&e)));
        }
        self.url_of(name)
    }

    /// A superuser connection to the `postgres` database.
    pub fn connect(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test server: {}", describe(&e)))
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Stop the server (fast shutdown: open sessions are ended), keeping its data. Does nothing
    /// when it is stopped.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // A failed write means the watchdog is gone already; waiting below still reaps it.
            let _ = server.stdin.write_all(b"keep\n");
            drop(server.stdin);
            let _ = server.watchdog.wait();
        }
    }

    /// Start the stopped server again on the same port (so URLs stay valid). Panics with its log
    /// when it cannot.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The port was ours a moment ago; a few tries cover the kernel's brief hold on it.
        for _ in 0..PORT_TRIES {
            match self.launch() {
                Ok(()) => return,
                Err(log) => last = log,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "PostgreSQL did not restart on port {}; its log:\n{last}",
            self.port
        );
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command for a PostgreSQL binary, run as the server's user, in the server's directory
    /// (the caller's working directory may be unreadable to that user).
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new(program.as_ref());
        cmd.current_dir(&self.root)
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn initdb(&self) {
        let out = self
            .command(self.bin.join("initdb"))
            .arg("--pgdata")
            .arg(self.data_dir())
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                // Skip the fsync of every file: the cluster is thrown away.
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", self.bin.display()));
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&self.root);
            panic!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // In the config file rather than on the command line, so that a test (or a benchmark
        // that wants a real server's durability) can still change them with ALTER SYSTEM.
        let conf = self.data_dir().join("postgresql.conf");
        let settings = "\n# avmon-testpg: a throwaway server\n\
                        fsync = off\n\
                        synchronous_commit = off\n\
                        full_page_writes = off\n\
                        max_connections = 300\n\
                        huge_pages = off\n";
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
    }

    /// Start the server under its watchdog and wait until it accepts connections. On failure,
    /// returns its log (the server has exited).
    fn launch(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.root.join("server.pid"));
        let postgres = self.bin.join("postgres");
        let port = self.port.to_string();
        let mut cmd = self.command("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("avmon-testpg")
            .arg(&self.root)
            .arg(&postgres)
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &port, "-h", "127.0.0.1", "-k"])
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut watchdog = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the PostgreSQL watchdog (/bin/sh): {e}"));
        let Some(stdin) = watchdog.stdin.take() else {
            unreachable!("stdin was piped")
        };
        let server = Server { watchdog, stdin };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if postgres::Client::connect(&self.url(), postgres::NoTls).is_ok() {
                self.server = Some(server);
                return Ok(());
            }
            if !self.server_alive() || Instant::now() > deadline {
                self.server = Some(server);
                self.stop();
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether the server process the watchdog started is still running (not a zombie). True
    /// while the watchdog has not written its pid yet.
    fn server_alive(&self) -> bool {
        let Ok(pid) = std::fs::read_to_string(self.root.join("server.pid")) else {
            return true;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) else {
            return pid.trim().is_empty();
        };
        // `pid (comm) S …`: the state follows the last parenthesis.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, Some('Z') | Some('X'))
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // End of file: the watchdog shuts the server down and deletes the directory.
            drop(server.stdin);
            let _ = server.watchdog.wait();
        }
        // Stopped (or never started): nobody else will delete it.
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The directory holding `initdb` and `postgres`: Debian's `/usr/lib/postgresql/<version>/bin`
/// (highest version first), else the one on `PATH`.
fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<f64>().ok()?;
            // Old versions are `9.6`: order by major and minor.
            Some(((version * 100.0) as u32, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    if let Some((_, dir)) = versions.into_iter().find(|(_, d)| complete(d)) {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| complete(d))
}

/// The uid and gid of `nobody` (65534 where /etc/passwd does not say).
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut f = line.split(':');
            if f.next()? != "nobody" {
                return None;
            }
            let uid = f.nth(1)?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .unwrap_or((65534, 65534))
}

/// An error with its cause: the driver's `Display` says only "db error" for the server's own.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_separate_and_survive_a_restart() {
        let mut pg = TestPg::start();
        let a = pg.fresh_database("a");
        let b = pg.fresh_database("b");
        let mut ca = postgres::Client::connect(&a, postgres::NoTls).unwrap();
        ca.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
            .unwrap();
        let mut cb = postgres::Client::connect(&b, postgres::NoTls).unwrap();
        assert!(
            cb.query("SELECT * FROM t", &[]).is_err(),
            "b has no table t"
        );

        pg.stop();
        assert!(!pg.is_running());
        assert!(ca.query("SELECT 1", &[]).is_err(), "sessions end at a stop");
        assert!(postgres::Client::connect(&a, postgres::NoTls).is_err());
        pg.restart();
        let mut ca = postgres::Client::connect(&a, postgres::NoTls).unwrap();
        let x: i32 = ca.query_one("SELECT x FROM t", &[]).unwrap().get(0);
        assert_eq!(x, 7, "data survives a restart");

        // A fresh database of a used name is empty again.
        drop(ca);
        let a = pg.fresh_database("a");
        let mut ca = postgres::Client::connect(&a, postgres::NoTls).unwrap();
        assert!(ca.query("SELECT * FROM t", &[]).is_err());
    }

    #[test]
    fn drop_stops_the_server_and_deletes_its_directory() {
        let pg = TestPg::start();
        let root = pg.root.clone();
        let url = pg.url();
        if let Some((uid, _)) = pg.user {
            let owner = std::fs::metadata(root.join("data")).unwrap().uid();
            assert_eq!(owner, uid, "as root, the server runs as nobody");
        }
        drop(pg);
        assert!(!root.exists(), "{} is left", root.display());
        assert!(postgres::Client::connect(&url, postgres::NoTls).is_err());
    }

    #[test]
    fn shared_is_one_server() {
        assert_eq!(TestPg::shared().port(), TestPg::shared().port());
        let url = TestPg::shared().fresh_database("shared_check");
        assert!(postgres::Client::connect(&url, postgres::NoTls).is_ok());
    }
}
