//! The deployment kit: the ECS run-task script against recorded AWS responses, the end-to-end
//! user story, shell hygiene, and the static binary the Dockerfile builds (run in an empty
//! chroot). Each runs a script of the repository and checks its exit status.

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
fn shell_scripts_are_shellcheck_clean() {
    let scripts = [
        ".ci/run",
        "scripts/build-static",
        "scripts/check-static-binary",
        "scripts/demo",
        "integration/e2e.sh",
        "integration/example-app/app.sh",
        "integration/ecs/run-migration.sh",
        "integration/ecs/test-run-migration.sh",
        "integration/ecs/testdata/aws",
    ];
    let output = Command::new("shellcheck")
        .args(scripts)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run shellcheck (apt-get install shellcheck; .ci/run does)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Builds the release binary the way the Dockerfile does (minutes, in its own target folder).
#[test]
fn static_binary_runs_in_an_empty_chroot() {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/static-check");
    run("scripts/check-static-binary", |c| c.env("CARGO_TARGET_DIR", target));
}
