//! Random-point interruption: SIGTERM or SIGKILL at a random moment of a 30-file run; the next
//! run must converge on exactly the schema and history of an uninterrupted run.
//!
//! `MIGRUN_INTERRUPT_TRIALS` (default 30) and `MIGRUN_INTERRUPT_SEED` (default fixed) make it
//! longer or different; a failure prints the seed and the trial to reproduce it.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

/// 30 files: every fifth runs without a transaction and builds an index concurrently.
fn write_files(dir: &Path) {
    for i in 1..=29 {
        let body = if i % 5 == 0 {
            format!(
                "-- migrun:no-transaction\nCREATE TABLE IF NOT EXISTS nt_{i} (id int, v text);\n\
                 INSERT INTO nt_{i} SELECT g, g::text FROM generate_series(1, 2000) g WHERE NOT EXISTS (SELECT FROM nt_{i});\n\
                 CREATE INDEX CONCURRENTLY IF NOT EXISTS nt_{i}_v ON nt_{i} (v);\n"
            )
        } else {
            format!("CREATE TABLE t_{i} (id int PRIMARY KEY, note text);\nINSERT INTO t_{i} VALUES (1, 'x');\nSELECT pg_sleep(0.003);\n")
        };
        std::fs::write(dir.join(format!("{i:04}_step_{i}.sql")), body).expect("write migration");
    }
    std::fs::write(dir.join("R__view.sql"), "CREATE OR REPLACE VIEW first_notes AS SELECT id, note FROM t_1;\n")
        .expect("write view");
}

/// The schema as pg_dump prints it (comments dropped) and the history without times.
fn snapshot(db: &TestDb) -> (String, Vec<String>) {
    let out = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--no-privileges", "--dbname", &db.url()])
        .output()
        .expect("run pg_dump (install the PostgreSQL client)");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    let schema = String::from_utf8_lossy(&out.stdout)
        .lines()
        // Comments, and the random key of pg_dump's \restrict guard, differ between any two dumps.
        .filter(|l| !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n");
    let history = db.query_strings(
        "SELECT concat_ws(' ', version, description, kind, checksum, state) FROM migrun_history ORDER BY kind, version, description",
    );
    (schema, history)
}

/// xorshift64*: a reproducible sequence from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn interrupted_runs_converge_on_the_clean_result() {
    let dir = tempfile::tempdir().expect("dir");
    write_files(dir.path());
    let clean = TestDb::new();
    let started = Instant::now();
    clean.migrun().dir(dir.path()).args(["up"]).run().assert_code(0);
    let clean_run = started.elapsed();
    let expected = snapshot(&clean);

    let seed = env_number("MIGRUN_INTERRUPT_SEED", 20_261_125);
    let trials = env_number("MIGRUN_INTERRUPT_TRIALS", 30);
    let mut rng = Rng(seed | 1);
    let mut stopped_midway = 0;
    // Signals fall in [0, window); the window shrinks when runs finish first (a loaded machine
    // made the clean run slow), so most trials hit a running migration.
    let mut window = clean_run;
    for trial in 0..trials {
        let context = format!("seed {seed}, trial {trial}");
        let db = TestDb::new();
        let signal = if rng.next() % 2 == 0 { libc::SIGTERM } else { libc::SIGKILL };
        let delay = Duration::from_micros(rng.next() % (window.as_micros() as u64).max(1));
        let child = db.migrun().dir(dir.path()).args(["up"]).spawn();
        // The random moment is the test's input, not a wait for a condition.
        std::thread::sleep(delay);
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let output = child.wait_with_output().expect("wait");
        let status = output.status;
        let interrupted = Run::from(output);
        let allowed = match signal {
            // Before main installs the handler (the first millisecond or so), SIGTERM's default
            // action ends the process; that is as clean, since nothing has started.
            libc::SIGTERM => matches!(status.code(), Some(143) | Some(0)) || status.signal() == Some(libc::SIGTERM),
            _ => status.code().is_none() || status.code() == Some(0),
        };
        assert!(allowed, "{context}: signal {signal} after {delay:?} gave {status:?}\n{}", interrupted.stderr);
        if status.code() == Some(0) {
            window = window * 3 / 4;
        } else {
            stopped_midway += 1;
        }

        let again = db.migrun().dir(dir.path()).args(["up"]).run();
        again.assert_code(0);
        let (schema, history) = snapshot(&db);
        assert_eq!(history, expected.1, "{context}: history differs after signal {signal} at {delay:?}");
        if schema != expected.0 {
            let diff: Vec<String> = schema
                .lines()
                .zip(expected.0.lines())
                .filter(|(a, b)| a != b)
                .take(5)
                .map(|(a, b)| format!("  got: {a}\n  want: {b}"))
                .collect();
            panic!("{context}: schema differs after signal {signal} at {delay:?}:\n{}", diff.join("\n"));
        }
    }
    println!("{stopped_midway} of {trials} runs were stopped before they finished (seed {seed})");
    assert!(stopped_midway * 2 >= trials as usize, "too few trials hit a running migration; the timing needs a look");
}
