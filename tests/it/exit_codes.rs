//! Exit codes that tell the truth: a lost connection or a read-only server is retryable (4),
//! input that can never work is refused before connecting (2), and migrun's own statements
//! are never blamed on a file.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

/// A loopback TCP proxy to the test server whose connections can be cut mid-statement.
struct Proxy {
    port: u16,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let sockets: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let kept = sockets.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect((server().host.as_str(), server().port)) else { continue };
                for stream in [&client, &server] {
                    if let (Ok(clone), Ok(mut list)) = (stream.try_clone(), kept.lock()) {
                        list.push(clone);
                    }
                }
                pump(client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                pump(server, client);
            }
        });
        Proxy { port, sockets }
    }

    /// Closes every connection through the proxy, as a vanished peer or a failover does.
    fn cut(&self) {
        for socket in self.sockets.lock().expect("sockets").drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    fn url(&self, db: &TestDb) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", server().user, self.port, db.name)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16384];
        while let Ok(n) = from.read(&mut buffer) {
            if n == 0 || to.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

const SLEEPER: &str = "CREATE TABLE sleeper_ran (x int);\nSELECT pg_sleep(60);\n";

/// Starts `up` on a file that sleeps, waits until the sleep runs, ends the connection with
/// `lose`, and returns how the run ended.
fn lose_connection_mid_statement(no_transaction: bool, lose: &str) -> (Run, TestDb) {
    let db = TestDb::new();
    let proxy = Proxy::start();
    let header = if no_transaction { "-- migrun:no-transaction\n" } else { "" };
    let dir = sql_dir(&[("0001_sleeper.sql", &format!("{header}{SLEEPER}"))]);
    let mut migrun = db.migrun();
    migrun.env("DATABASE_URL", &proxy.url(&db));
    let live = LiveRun::start(migrun.dir(dir.path()).args(["up"]).spawn());
    let sleeping = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
        db.name
    );
    let mut admin = server().connect("postgres");
    let mut pid: Option<i32> = None;
    wait_until(Duration::from_secs(20), "the file's statement runs", || {
        pid = admin.query(&sleeping, &[]).ok().and_then(|rows| rows.first().map(|r| r.get(0)));
        pid.is_some()
    });
    match lose {
        "terminate" => {
            admin.query("SELECT pg_terminate_backend($1)", &[&pid]).expect("terminate");
        }
        "socket" => proxy.cut(),
        other => panic!("unknown way to lose a connection: {other}"),
    }
    (live.finish(), db)
}

#[test]
fn a_connection_lost_mid_statement_is_retryable_and_says_what_happened_to_the_file() {
    for lose in ["terminate", "socket"] {
        for no_transaction in [false, true] {
            let (run, db) = lose_connection_mid_statement(no_transaction, lose);
            run.assert_code(4);
            let result = run.result();
            assert_eq!(result["retryable"], true, "{result}");
            assert_eq!(result["outcome"], "database_unreachable", "{result}");
            let error = result["error"].as_str().unwrap_or_default();
            assert!(error.contains("lost the database connection"), "{lose}: {error}");
            let effect = if no_transaction { "may be applied" } else { "the file was rolled back" };
            assert!(error.contains(effect), "{lose}, no-transaction {no_transaction}: {error}");
            assert_eq!(file_name(result["file"].as_str().unwrap_or_default()), "0001_sleeper.sql");
            let ran = db.count("SELECT count(*) FROM pg_tables WHERE tablename = 'sleeper_ran'");
            assert_eq!(ran, i64::from(no_transaction), "{lose}: transactional work is rolled back");
        }
    }
}

#[test]
fn a_read_only_server_is_retryable_and_named() {
    // Fresh database (the history table cannot be created), a pending no-transaction file (its
    // history row cannot be written), a pending transactional file (its statement fails).
    let files = [
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "-- migrun:no-transaction\nCREATE TABLE b (x int);"),
        ("0003_c.sql", "CREATE TABLE c (x int);"),
    ];
    for applied_first in [0, 1, 2] {
        let db = TestDb::new();
        if applied_first > 0 {
            db.migrun().dir(sql_dir(&files[..applied_first]).path()).args(["up"]).run().assert_code(0);
        }
        server()
            .connect("postgres")
            .batch_execute(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", db.name))
            .expect("read-only");
        let run = db.migrun().dir(sql_dir(&files).path()).args(["up"]).run();
        run.assert_code(4);
        let result = run.result();
        assert_eq!(result["retryable"], true, "{result}");
        assert!(result["error"].as_str().unwrap_or_default().contains("the server is read-only"), "{result}");
    }
    // A file that makes its own transaction read-only is the file's fault.
    let db = TestDb::new();
    let dir = sql_dir(&[("0001_self.sql", "SET TRANSACTION READ ONLY;\nCREATE TABLE c (x int);")]);
    let run = db.migrun().dir(dir.path()).args(["up"]).run();
    run.assert_code(6);
    assert_eq!(run.result()["sqlstate"], "25006", "{}", run.stderr);
}

#[test]
fn input_that_can_never_work_is_refused_before_connecting() {
    let utf16: Vec<u8> = "CREATE TABLE t (x int);\n".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("0001_utf16.sql", utf16, "NUL byte"),
        ("0001_nul.sql", b"CREATE TABLE t (x int);\nSELECT '\0';\n".to_vec(), "NUL byte (line 2)"),
        (
            "0001_copy.sql",
            b"CREATE TABLE t (x int);\nCOPY t (x) FROM stdin;\n1\n2\n\\.\n".to_vec(),
            "COPY ... FROM STDIN",
        ),
        ("0001_copy_out.sql", b"COPY (SELECT 1) TO STDOUT;\n".to_vec(), "COPY ... TO STDOUT"),
    ];
    for (name, bytes, says) in cases {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(name), bytes).expect("write");
        // An unreachable database: the refusal comes before any connection attempt.
        let run = Migrun::new()
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .dir(dir.path())
            .args(["up", "--connect-timeout", "30s"])
            .run();
        run.assert_code(2);
        let error = run.result()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(name) && error.contains(says), "{name}: {error}");
    }
}

#[test]
fn a_url_without_a_host_connects_as_libpq_does() {
    let db = TestDb::new();
    let url = format!("postgres:///{}?port={}&user={}", db.name, server().port, server().user);
    let run = db.migrun().env("DATABASE_URL", &url).dir(&example_sql()).args(["up", "--connect-timeout", "5s"]).run();
    run.assert_code(0);
    assert_eq!(db.count("SELECT count(*) FROM migrun_history"), 4);
}

#[test]
fn timeouts_for_migrations_never_govern_migruns_own_statements() {
    let db = TestDb::new();
    let dir = sql_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("0002_b.sql", "-- migrun:no-transaction\nCREATE TABLE b (x int);"),
    ]);
    // A statement timeout too short for any real statement fails the file, never the
    // history table's creation; a role's own statement_timeout does not reach migrun's statements.
    server()
        .connect("postgres")
        .batch_execute(&format!("ALTER DATABASE {} SET statement_timeout = '1ms'", db.name))
        .expect("db timeout");
    let run = db.migrun().dir(dir.path()).args(["up", "--statement-timeout", "30s"]).run();
    run.assert_code(0);
    let db2 = TestDb::new();
    let run = db2
        .migrun()
        .dir(sql_dir(&[("0001_slow.sql", "SELECT pg_sleep(0.2);")]).path())
        .args(["up", "--statement-timeout", "1ms"])
        .run();
    run.assert_code(6);
    let result = run.result();
    assert_eq!(result["sqlstate"], "57014", "{result}");
    assert_eq!(file_name(result["file"].as_str().unwrap_or_default()), "0001_slow.sql");
    assert_eq!(
        db2.count("SELECT count(*) FROM pg_tables WHERE tablename = 'migrun_history'"),
        1,
        "the history table was created"
    );
}
