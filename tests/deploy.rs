//! The deployment kit: the ECS run-task script against recorded AWS responses, the end-to-end
//! user story, shell hygiene, and the static binary the Dockerfile builds (run in an empty
//! chroot). Each runs a script of the repository and checks its exit status.

#[path = "tools.rs"]
mod tools;

use std::path::Path;
use std::process::Command;

fn run(script: &str, configure: impl FnOnce(&mut Command) -> &mut Command) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(root.join(script));
    command.current_dir(root);
    configure(&mut command);
    let output = command.output().unwrap_or_else(|e| panic!("run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "{script} failed ({:?}):\n{stdout}\n{stderr}", output.status);
}

#[test]
fn run_migration_script_handles_every_task_outcome() {
    run("integration/ecs/test-run-migration.sh", |c| c);
}

#[test]
fn end_to_end_story_without_docker() {
    run("integration/e2e.sh", |c| c.env("MIGRUN_BIN", env!("CARGO_BIN_EXE_migrun")));
}

#[test]
fn the_demo_never_touches_the_database_in_the_callers_environment() {
    // A DATABASE_URL in the shell (here: nothing listens there) is ignored: the demo runs on its
    // own throwaway server.
    run("scripts/demo", |c| {
        c.env("MIGRUN_BIN", env!("CARGO_BIN_EXE_migrun"))
            .env("DATABASE_URL", "postgres://someone@127.0.0.1:1/their_app")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", "1")
    });
}

/// The README promises one test command; CI runs exactly it.
#[test]
fn ci_runs_the_readme_test_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let command = readme.lines().find(|l| l.contains("# the test suite")).expect("the README's test command");
    let command = command.split('#').next().unwrap_or_default().trim();
    assert_eq!(command, "scripts/test");
    assert_eq!(ci.lines().rfind(|l| !l.trim().is_empty()).map(str::trim), Some(command));
}

#[test]
fn shell_scripts_are_shellcheck_clean() {
    let scripts = [
        ".ci/run",
        "scripts/build-static",
        "scripts/check-static-binary",
        "scripts/demo",
        "scripts/test",
        "integration/e2e.sh",
        "integration/example-app/app.sh",
        "integration/ecs/run-migration.sh",
        "integration/ecs/test-run-migration.sh",
        "integration/ecs/testdata/aws",
    ];
    let output = Command::new(tools::tool("shellcheck"))
        .args(scripts)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run shellcheck (apt-get install shellcheck; .ci/run does)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

/// The release binary built the way the Dockerfile does. `.ci/run` builds it while the tests
/// compile and names it in MIGRUN_STATIC_BINARY (with `.failed` beside it if the build
/// failed); without that, the check builds it (minutes, in a target folder of its own).
#[test]
fn static_binary_runs_in_an_empty_chroot() {
    let Some(binary) = std::env::var_os("MIGRUN_STATIC_BINARY").map(std::path::PathBuf::from) else {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("static-check");
        run("scripts/check-static-binary", |c| c.env("CARGO_TARGET_DIR", target));
        return;
    };
    let failed = binary.with_extension("failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30 * 60);
    while !binary.exists() && !failed.exists() {
        assert!(std::time::Instant::now() < deadline, "{} was not built within 30 minutes", binary.display());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!failed.exists(), "the static build failed: {}", std::fs::read_to_string(&failed).unwrap_or_default());
    run("scripts/check-static-binary", |c| c.env("MIGRUN_STATIC_BINARY", &binary));
}
