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

/// Every Dockerfile snippet in the docs names the stages it copies from: `COPY --from=migrun`
/// without a `FROM ... AS migrun` is read as the image docker.io/library/migrun, which is what
/// buildx's docker-container driver does.
#[test]
fn the_readmes_dockerfile_snippets_name_every_stage_they_copy_from() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme: String = ["README.md", "docs/guide.md", "docs/reference.md"]
        .iter()
        .map(|page| std::fs::read_to_string(root.join(page)).expect("a doc page"))
        .collect();
    let blocks: Vec<&str> = readme.split("```dockerfile").skip(1).filter_map(|b| b.split("```").next()).collect();
    assert!(blocks.len() >= 2, "found {} Dockerfile snippets", blocks.len());
    let mut copies = 0;
    for block in &blocks {
        let mut stages: Vec<String> = Vec::new();
        for line in block.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
                if let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                    stages.extend(words.get(at + 1).map(|s| s.to_string()));
                }
            }
            if let Some(from) = line.strip_prefix("COPY --from=") {
                let stage = from.split_whitespace().next().unwrap_or_default();
                assert!(
                    stages.iter().any(|s| s == stage),
                    "`{line}` copies from `{stage}`, which the snippet never names:\n{block}"
                );
                copies += 1;
            }
        }
    }
    assert!(copies >= 3, "{copies} COPY --from lines checked");
    let bake = blocks.iter().find(|b| b.contains("ENTRYPOINT")).expect("the bake-in snippet");
    assert!(bake.contains("COPY --from=migrun /migrun /usr/local/bin/migrun"), "{bake}");
}

/// The standalone image gives its non-root user a writable /tmp (for `--result-file`); the
/// static-binary check writes a result file there as that user.
#[test]
fn the_image_has_a_writable_tmp() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("chmod 1777 /out/tmp"), "the Dockerfile gives the image no writable /tmp");
    let check = std::fs::read_to_string(root.join("scripts/check-static-binary")).expect("check script");
    assert!(check.contains("--userspec=65532:65532") && check.contains("--result-file /tmp/result.json"));
}

/// The service's health-check grace period covers the task definition's longest wait: a task
/// still waiting for the migration must not be killed by the load balancer.
#[test]
fn the_health_check_grace_covers_the_longest_wait() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(root.join("integration/ecs").join(file)).expect(file))
            .expect(file)
    };
    let (task, service) = (read("task-definition.json"), read("service.json"));
    let env = task["containerDefinitions"][0]["environment"].as_array().expect("environment");
    let wait = env
        .iter()
        .find(|v| v["name"] == "MIGRUN_WAIT_TIMEOUT")
        .and_then(|v| v["value"].as_str())
        .expect("a wait timeout");
    let seconds: u64 = match wait.strip_suffix("min") {
        Some(minutes) => minutes.parse::<u64>().expect("minutes") * 60,
        None => wait.trim_end_matches('s').parse().expect("seconds"),
    };
    let grace = service["healthCheckGracePeriodSeconds"].as_u64().expect("a grace period");
    assert!(
        grace >= seconds + 60,
        "healthCheckGracePeriodSeconds {grace} does not cover a {seconds} s wait and the app's start"
    );
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    assert!(readme.contains(&format!("`healthCheckGracePeriodSeconds` {grace}")), "the README states the grace period");
}

/// run-migration.sh's exit codes: the ones its header lists are the README's, and each is
/// one the script exits with.
#[test]
fn run_migrations_exit_codes_match_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(root.join("integration/ecs/run-migration.sh")).expect("script");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let header: Vec<String> = script
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').split_whitespace().next().map(str::to_string))
        .filter(|w| w.len() >= 2 && w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let section = &readme[readme.find("Its own failures use codes migrun never exits with").expect("the table")..];
    let table: Vec<String> = section
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("| code"))
        .skip(2)
        .take_while(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| l.split('|').nth(1).map(|c| c.trim().to_string()))
        .collect();
    assert_eq!(header, table, "the script's header and the README's table");
    for code in &table {
        let used = match code.as_str() {
            "64" => script.contains("exit 64"),
            "75" => script.contains("exit 75"),
            "124" => script.contains("exit 124"),
            other => script.contains(&format!("fail {other} ")),
        };
        assert!(used, "the script never exits {code}");
    }
}
