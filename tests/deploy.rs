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

/// Every workflow, the project's and the example, passes actionlint.
#[test]
fn workflows_pass_actionlint() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut workflows: Vec<std::path::PathBuf> = Vec::new();
    for dir in [".github/workflows", "integration/github-actions"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("workflow folder") {
            workflows.push(entry.expect("entry").path());
        }
    }
    assert!(workflows.len() >= 3, "{workflows:?}");
    let output = Command::new(tools::tool("actionlint")).args(&workflows).output().expect("run actionlint");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The compose file is valid Compose (the compose-spec schema, vendored), and every service
/// it names exists; one image build serves every service that runs migrun.
#[test]
fn compose_file_follows_the_compose_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(tools::tool("check-jsonschema"))
        .args(["--schemafile", "integration/schema/compose-spec.json", "integration/compose.yml"])
        .current_dir(root)
        .output()
        .expect("run check-jsonschema");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let compose = std::fs::read_to_string(root.join("integration/compose.yml")).expect("compose.yml");
    let services: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.strip_prefix("  ").filter(|l| !l.starts_with(' ') && !l.starts_with('#')))
        .filter_map(|l| l.strip_suffix(':'))
        .collect();
    assert!(services.contains(&"migrate") && services.contains(&"migrate-from-secret"), "{services:?}");
    for line in compose.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for named in ["migrate-from-secret", "migrate", "postgres", "secretsmanager", "create-secret", "app"] {
            if line.trim() == format!("{named}:") || line.trim() == format!("- {named}") {
                assert!(services.contains(&named), "{named} is referenced but not a service");
            }
        }
    }
    assert_eq!(compose.matches("build:").count(), 1, "the image is built more than once");
    assert!(compose.contains(":5432\""), "Postgres is not published to the host");
}

/// A file the task definition points migrun at is in the image, and the README's bake-in
/// snippet copies it into the app image.
#[test]
fn the_task_definitions_files_are_in_the_image() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let task: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("integration/ecs/task-definition.json")).expect("task definition"),
    )
    .expect("task definition JSON");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let env = task["containerDefinitions"][0]["environment"].as_array().expect("environment");
    let paths: Vec<&str> = env.iter().filter_map(|v| v["value"].as_str()).filter(|v| v.starts_with("/etc/")).collect();
    assert!(!paths.is_empty());
    for path in paths {
        assert!(dockerfile.contains(&format!("/out{path}")), "the Dockerfile does not put {path} in the image");
        assert!(
            readme.contains(&format!("COPY --from=migrun {path} {path}")),
            "the README's snippet does not copy {path}"
        );
    }
    for policy in
        ["ci-role-policy.json", "ci-oidc-trust-policy.json", "task-role-policy.json", "execution-role-policy.json"]
    {
        let text = std::fs::read_to_string(root.join("integration/ecs").join(policy)).expect("policy");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{policy}: {e}"));
        assert_eq!(value["Version"], "2012-10-17", "{policy}");
    }
    let ci = std::fs::read_to_string(root.join("integration/ecs/ci-role-policy.json")).expect("ci policy");
    for action in
        ["iam:PassRole", "ecs:RunTask", "ecs:DescribeTasks", "ecs:RegisterTaskDefinition", "logs:GetLogEvents"]
    {
        assert!(ci.contains(&format!("\"{action}\"")), "the CI role policy lacks {action}");
    }
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
        "scripts/test-tools",
        "integration/e2e.sh",
        "integration/example-app/app.sh",
        "integration/ecs/run-migration.sh",
        "integration/ecs/wait-service-stable.sh",
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
