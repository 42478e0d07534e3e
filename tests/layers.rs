//! The house rule of `src/`: layers you can see from the folder listing, and an import never
//! points from a lower layer to a higher one (`run` > `check`, `fleet` > `migrate` > `db`, `catalog` > the
//! leaf modules).

use std::path::{Path, PathBuf};

/// The layer of a top-level module; every other top-level module is a leaf (0).
fn layer(module: &str) -> u8 {
    match module {
        "run" => 4,
        "check" | "fleet" => 3,
        "migrate" => 2,
        "db" | "catalog" => 1,
        _ => 0,
    }
}

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `crate::<module>` paths in the non-test part of a file.
fn imports(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.match_indices("crate::")
        .map(|(at, _)| code[at + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
        .collect()
}

#[test]
fn no_import_points_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let own = relative.iter().next().and_then(|p| p.to_str()).unwrap_or_default().trim_end_matches(".rs");
        if matches!(own, "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for module in imports(&text) {
            if layer(&module) > layer(own) {
                upward.push(format!("{} imports crate::{module}", relative.display()));
            }
        }
    }
    assert!(files.len() > 20, "found only {} source files", files.len());
    assert!(upward.is_empty(), "imports from a lower layer to a higher one:\n{}", upward.join("\n"));
}

#[test]
fn the_scan_sees_imports() {
    // The check above must not pass because it reads nothing.
    assert_eq!(imports("use crate::db::session;\n#[cfg(test)]\nuse crate::run;"), ["db"]);
}
