//! `migrun new`: the next file's name (a UTC timestamp, or the folder's next integer with its
//! padding; never a version the folder has) and its template.

use std::path::{Path, PathBuf};

use super::files::{parse_file_name, parse_name, FilesError, MigrationKind};

/// Creates `<UTC timestamp>_<description>.sql` in `dir` (creating `dir` if needed) and returns its path.
pub fn create_new(dir: &Path, description: &str, numbering: Numbering) -> Result<PathBuf, FilesError> {
    let version = next_version(&existing_versions(dir), numbering);
    if parse_name(&format!("{version}_{description}.sql")).is_err() {
        return Err(FilesError::BadDescription { description: description.into() });
    }
    let path = dir.join(format!("{version}_{description}.sql"));
    let create_error =
        |e: std::io::Error| FilesError::Create { file: path.display().to_string(), reason: e.to_string() };
    std::fs::create_dir_all(dir).map_err(create_error)?;
    let template = format!(
        "-- {description}\n\
         -- Directives go in comment lines here, before the first statement, e.g.:\n\
         --   -- migrun:no-transaction          (for CREATE INDEX CONCURRENTLY)\n\
         --   -- migrun:lock-timeout=2s\n\n"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, template.as_bytes()))
        .map_err(create_error)?;
    Ok(path)
}

/// How `new` numbers a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numbering {
    /// A UTC timestamp (`YYYYMMDDHHMMSS`), or one more than the highest version when that is
    /// not below it (two files in one second never share a version).
    Timestamp(String),
    /// One more than the highest version, padded as the widest existing name is.
    Sequential,
}

/// The versions (as written, with their padding) of the migration files in `dir`.
fn existing_versions(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| matches!(parse_file_name(name), Ok((MigrationKind::Versioned(_), _, _))))
        .filter_map(|name| name.split_once('_').map(|(v, _)| v.to_string()))
        .collect()
}

fn next_version(existing: &[String], numbering: Numbering) -> String {
    let highest = existing.iter().filter_map(|v| v.parse::<u64>().ok()).max();
    match numbering {
        Numbering::Timestamp(stamp) => match (highest, stamp.parse::<u64>()) {
            (Some(h), Ok(t)) if h >= t => (h + 1).to_string(),
            _ => stamp,
        },
        Numbering::Sequential => {
            let width = existing.iter().map(String::len).max().unwrap_or(4);
            format!("{:0width$}", highest.unwrap_or(0) + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_versions_never_repeat_and_sequential_keeps_the_padding() {
        let stamp = |s: &str| Numbering::Timestamp(s.to_string());
        let v = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(next_version(&[], stamp("20261127000000")), "20261127000000");
        assert_eq!(next_version(&v(&["20261127000000"]), stamp("20261127000000")), "20261127000001");
        assert_eq!(next_version(&v(&["0001", "0002"]), stamp("20261127000000")), "20261127000000");
        assert_eq!(next_version(&v(&["0001", "0009"]), Numbering::Sequential), "0010");
        assert_eq!(next_version(&v(&["1", "2"]), Numbering::Sequential), "3");
        assert_eq!(next_version(&[], Numbering::Sequential), "0001");
        assert_eq!(next_version(&v(&["0999"]), Numbering::Sequential), "1000");
    }
}
