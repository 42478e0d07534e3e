//! `convert`: another tool's migrations folder written as migrun files: each up migration as
//! `<version>_<description>.sql` and its down migration, when it has one with a statement, as
//! `<version>_<description>.down.sql`; each body byte for byte, with `-- migrun:no-transaction`
//! put in front when the tool's own marker asks for no transaction. Everything is read and
//! checked before anything is written, and the output appears whole or not at all.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::adopt::version_of;
use super::files::{parse_file_name, parse_name, Direction, MigrationKind};
use super::split;
use super::tool::Tool;

/// One file written.
#[derive(Debug, Clone, Serialize)]
pub struct Converted {
    /// The other tool's file, relative to its folder.
    pub from: String,
    /// The migrun file's name.
    pub to: String,
    /// Whether `-- migrun:no-transaction` was put in front.
    pub no_transaction: bool,
    #[serde(skip)]
    contents: Vec<u8>,
}

/// What `convert` wrote, and what it left out.
#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    pub files: Vec<Converted>,
    /// Down migrations written as down files.
    pub downs: usize,
    /// Down migrations (or sections) that hold no statement: no file is written for them.
    pub down_skipped: usize,
    /// Other files left out, each with why.
    pub skipped: Vec<String>,
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("convert: cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("convert: cannot write {path}: {error}; nothing was written")]
    Write { path: String, error: std::io::Error },
    #[error("convert: {0} already exists and is not an empty directory; name a new directory")]
    OutExists(String),
    #[error("convert: {dir} holds no {tool} migration; check the folder")]
    NoMigrations { dir: String, tool: &'static str },
    #[error("convert: {} cannot become migrun files: {}; nothing was written", .0.len(), .0.join("; "))]
    Unconvertible(Vec<String>),
}

const NO_TRANSACTION: &[u8] = b"-- migrun:no-transaction\n";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads `source` as `tool`'s folder and writes the migrun files to `out`.
pub fn convert(tool: Tool, source: &Path, out: &Path) -> Result<Conversion, ConvertError> {
    if out.exists() && fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(ConvertError::OutExists(out.display().to_string()));
    }
    let conversion = read(tool, source)?;
    write(&conversion, out)?;
    Ok(conversion)
}

/// Reads and checks the whole folder; writes nothing.
pub fn read(tool: Tool, source: &Path) -> Result<Conversion, ConvertError> {
    let mut conversion = Conversion { files: Vec::new(), downs: 0, down_skipped: 0, skipped: Vec::new() };
    let mut problems = Vec::new();
    for (relative, path) in listing(source, tool == Tool::Flyway)? {
        match convert_one(tool, source, &relative, &path, &mut conversion) {
            Ok(files) => conversion.files.extend(files),
            Err(problem) => problems.push(format!("{relative}: {problem}")),
        }
    }
    name_downs_after_their_ups(&mut conversion.files);
    conversion.downs = conversion.files.iter().filter(|f| is_down(&f.to)).count();
    let mut by_version: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut down_versions: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for file in &conversion.files {
        match parse_file_name(&file.to) {
            Ok((MigrationKind::Versioned(v), _, Direction::Up)) => by_version.entry(v).or_default().push(&file.from),
            Ok((MigrationKind::Versioned(v), _, Direction::Down)) => {
                down_versions.entry(v).or_default().push(&file.from)
            }
            _ => {}
        }
    }
    for (version, files) in &down_versions {
        if !by_version.contains_key(version) {
            problems.push(format!(
                "{}: a down migration of version {version}, which has no up migration",
                files.join(" and ")
            ));
        }
    }
    for (version, files) in by_version.iter().filter(|(_, f)| f.len() > 1) {
        problems.push(format!("version {version} is used by {}", files.join(" and ")));
    }
    // Repeatable files have no version: two that map to one name would overwrite each other.
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for file in &conversion.files {
        by_name.entry(&file.to).or_default().push(&file.from);
    }
    for (name, files) in by_name.iter().filter(|(_, f)| f.len() > 1) {
        if !by_version.values().any(|v| v.len() > 1 && v.contains(&files[0])) {
            problems.push(format!("{} would all become {name}", files.join(" and ")));
        }
    }
    if !problems.is_empty() {
        return Err(ConvertError::Unconvertible(problems));
    }
    if conversion.files.is_empty() {
        return Err(ConvertError::NoMigrations { dir: source.display().to_string(), tool: tool.name() });
    }
    conversion.files.sort_by(|a, b| a.to.cmp(&b.to));
    Ok(conversion)
}

/// The folder's entries, sorted, as (path relative to `source`, path). Flyway looks into
/// subfolders; the others keep migrations (or one folder per migration) at the top.
fn listing(source: &Path, recursive: bool) -> Result<Vec<(String, PathBuf)>, ConvertError> {
    let mut found = Vec::new();
    let mut folders = vec![source.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let read_error = |error| ConvertError::Read { path: folder.display().to_string(), error };
        for entry in fs::read_dir(&folder).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let path = entry.path();
            // A symlinked folder is not followed: one pointing back up would never end.
            let real_folder = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if recursive && real_folder {
                folders.push(path);
                continue;
            }
            let relative = path.strip_prefix(source).unwrap_or(&path).display().to_string();
            found.push((relative, path));
        }
    }
    found.sort();
    Ok(found)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ConvertError> {
    fs::read(path).map_err(|error| ConvertError::Read { path: path.display().to_string(), error })
}

/// A migrun description from another tool's: anything but letters, digits and `_` becomes `_`.
fn description(text: &str) -> String {
    let mapped: String = text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    match mapped.trim_matches('_') {
        "" => "migration".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// The migrun file for `digits` and the tool's name part, checked like any migrun file name.
fn versioned_name(digits: &str, name: &str) -> Result<String, String> {
    if version_of(digits).is_none() {
        return Err(format!("version `{digits}` is not a whole number of at most 18 digits"));
    }
    let digits: String = digits.chars().filter(|c| *c != '-').collect();
    let file = format!("{digits}_{}.sql", description(name));
    parse_name(&file).map_err(|why| format!("{file}: {why}"))?;
    Ok(file)
}

fn converted(from: &str, to: String, body: &[u8], no_transaction: bool) -> Converted {
    let mut contents = Vec::with_capacity(body.len() + NO_TRANSACTION.len());
    // A byte-order mark stays first: migrun drops it only there, and behind the directive it
    // would be a stray character in front of the first statement.
    let (bom, body) = match body.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM, rest),
        None => (&b""[..], body),
    };
    contents.extend_from_slice(bom);
    if no_transaction {
        contents.extend_from_slice(NO_TRANSACTION);
    }
    contents.extend_from_slice(body);
    Converted { from: from.to_string(), to, no_transaction, contents }
}

/// A down file is named after its version's up file (Flyway's `U2__Drop_posts.sql` undoes
/// `V2__Create_posts.sql`: it becomes `2_Create_posts.down.sql`).
fn name_downs_after_their_ups(files: &mut [Converted]) {
    let ups: BTreeMap<u64, String> = files
        .iter()
        .filter_map(|f| match parse_file_name(&f.to) {
            Ok((MigrationKind::Versioned(v), _, Direction::Up)) => Some((v, f.to.clone())),
            _ => None,
        })
        .collect();
    for file in files.iter_mut() {
        if let Ok((MigrationKind::Versioned(v), _, Direction::Down)) = parse_file_name(&file.to) {
            if let Some(up) = ups.get(&v) {
                file.to = down_name(up);
            }
        }
    }
}

/// Whether a migrun file name is a down file's.
fn is_down(name: &str) -> bool {
    name.ends_with(".down.sql")
}

/// `0003_add_email.sql` → `0003_add_email.down.sql`.
fn down_name(up: &str) -> String {
    format!("{}.down.sql", up.strip_suffix(".sql").unwrap_or(up))
}

/// Whether a down migration holds a statement: an empty one (a comment, a blank section, as
/// tools generate them) is not written; a down file says "this version can be undone".
fn has_statement(body: &[u8]) -> bool {
    !split::split(&String::from_utf8_lossy(body)).is_empty()
}

/// The down file of `up` from `body`, or none (counted) when it holds no statement.
fn down_file(from: &str, up: &str, body: &[u8], no_tx: bool, conversion: &mut Conversion) -> Option<Converted> {
    match has_statement(body) {
        true => Some(converted(from, down_name(up), body, no_tx)),
        false => {
            conversion.down_skipped += 1;
            None
        }
    }
}

/// One entry of the folder: the migrun files it becomes (none when skipped), or a problem.
fn convert_one(
    tool: Tool,
    source: &Path,
    relative: &str,
    path: &Path,
    conversion: &mut Conversion,
) -> Result<Vec<Converted>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let read = |p: &Path| read_bytes(p).map_err(|e| e.to_string());
    let skip = |conversion: &mut Conversion, why: &str| {
        conversion.skipped.push(format!("{relative}: {why}"));
        Ok(Vec::new())
    };
    match tool {
        Tool::Sqlx | Tool::GolangMigrate => {
            if path.is_dir() {
                return skip(conversion, "a folder");
            }
            let (stem, down) = match (name.strip_suffix(".up.sql"), name.strip_suffix(".down.sql")) {
                (Some(stem), _) => (stem, false),
                (_, Some(stem)) => (stem, true),
                _ if tool == Tool::Sqlx && name.ends_with(".sql") => (&name[..name.len() - 4], false),
                _ => return skip(conversion, "not a migration"),
            };
            let (digits, rest) = stem.split_once('_').ok_or("no _ between version and name")?;
            let body = read(path)?;
            // sqlx reads `-- no-transaction` at the very start of the file.
            let no_tx = tool == Tool::Sqlx && body.starts_with(b"-- no-transaction");
            let up = versioned_name(digits, rest)?;
            Ok(match down {
                false => vec![converted(relative, up, &body, no_tx)],
                true => down_file(relative, &up, &body, no_tx, conversion).into_iter().collect(),
            })
        }
        Tool::Flyway => {
            if name.ends_with(".conf") {
                return Ok(Vec::new()); // read with its script
            }
            let Some(stem) = name.strip_suffix(".sql") else {
                return skip(conversion, "not a .sql script");
            };
            let conf = path.with_file_name(format!("{name}.conf"));
            let no_tx = conf.exists() && {
                let text = String::from_utf8_lossy(&read(&conf)?).to_string();
                text.lines().any(|l| l.replace(' ', "").eq_ignore_ascii_case("executeInTransaction=false"))
            };
            let body = read(path)?;
            if let Some(rest) = stem.strip_prefix("R__") {
                let file = format!("R__{}.sql", description(rest));
                parse_name(&file).map_err(|why| format!("{file}: {why}"))?;
                return Ok(vec![converted(relative, file, &body, no_tx)]);
            }
            // `U<version>__<description>.sql`: Flyway's undo script, the version's down file.
            let (undo, rest) = match (stem.strip_prefix('V'), stem.strip_prefix('U')) {
                (Some(rest), _) => (false, rest),
                (_, Some(rest)) => (true, rest),
                _ => return skip(conversion, "not a versioned (V), undo (U) or repeatable (R__) script"),
            };
            let (digits, rest) = rest.split_once("__").ok_or("no __ between version and description")?;
            let up = versioned_name(digits, rest)?;
            Ok(match undo {
                false => vec![converted(relative, up, &body, no_tx)],
                true => down_file(relative, &up, &body, no_tx, conversion).into_iter().collect(),
            })
        }
        Tool::Dbmate | Tool::Goose => {
            let Some(stem) = name.strip_suffix(".sql") else {
                let why =
                    if name.ends_with(".go") { "a Go migration: migrun runs SQL only" } else { "not a .sql file" };
                return skip(conversion, why);
            };
            let (digits, rest) = stem.split_once('_').ok_or("no _ between version and name")?;
            let text = read(path)?;
            let markers = match tool {
                Tool::Dbmate => &DBMATE,
                _ => &GOOSE,
            };
            let sections = sections(&text, markers).ok_or(markers.missing_up)?;
            let up = versioned_name(digits, rest)?;
            let mut files = vec![converted(relative, up.clone(), sections.up, sections.up_no_tx)];
            if let Some(down) = sections.down {
                files.extend(down_file(relative, &up, down, sections.down_no_tx, conversion));
            }
            Ok(files)
        }
        Tool::Diesel | Tool::Prisma => {
            if !path.is_dir() {
                if name != "migration_lock.toml" && name != ".keep" && name != ".gitkeep" {
                    conversion.skipped.push(format!("{relative}: not a migration folder"));
                }
                return Ok(Vec::new());
            }
            let (digits, rest) = name.split_once('_').ok_or("no _ between version and name")?;
            let script = if tool == Tool::Diesel { "up.sql" } else { "migration.sql" };
            let body = read(&path.join(script))?;
            // diesel: `run_in_transaction = false` in the folder's metadata.toml.
            let metadata = path.join("metadata.toml");
            let no_tx = tool == Tool::Diesel && metadata.exists() && {
                let text = String::from_utf8_lossy(&read(&metadata)?).to_string();
                text.lines().any(|l| l.replace(' ', "") == "run_in_transaction=false")
            };
            let relative_of = |file: &str| {
                let from = source.join(&name).join(file);
                from.strip_prefix(source).unwrap_or(&from).display().to_string()
            };
            let up = versioned_name(digits, rest)?;
            let mut files = vec![converted(&relative_of(script), up.clone(), &body, no_tx)];
            let down = path.join("down.sql");
            if tool == Tool::Diesel && down.exists() {
                let body = read(&down)?;
                files.extend(down_file(&relative_of("down.sql"), &up, &body, no_tx, conversion));
            }
            Ok(files)
        }
        // Their migrations are code, not SQL files (configuration refuses them first).
        Tool::Rails | Tool::Alembic => Err(format!("{tool} migrations are code: migrun cannot convert them")),
    }
}

/// How a tool marks the sections of a file that holds both ways.
struct Markers {
    up: &'static [u8],
    down: &'static [u8],
    /// How the tool says "no transaction": on the section's line (dbmate), or anywhere in
    /// the file's annotations (goose).
    no_tx: &'static str,
    per_section: bool,
    missing_up: &'static str,
}

const DBMATE: Markers = Markers {
    up: b"-- migrate:up",
    down: b"-- migrate:down",
    no_tx: "transaction:false",
    per_section: true,
    missing_up: "no `-- migrate:up` line",
};

const GOOSE: Markers = Markers {
    up: b"-- +goose Up",
    down: b"-- +goose Down",
    no_tx: "-- +goose NO TRANSACTION",
    per_section: false,
    missing_up: "no `-- +goose Up` line",
};

/// The sections of a file that holds both ways.
struct Sections<'a> {
    up: &'a [u8],
    up_no_tx: bool,
    down: Option<&'a [u8]>,
    down_no_tx: bool,
}

/// The up section (after the up line, to the down line) and the down section (after the down
/// line, to the end); `None` without an up line.
fn sections<'a>(text: &'a [u8], markers: &Markers) -> Option<Sections<'a>> {
    let mut offset = 0;
    let mut up: Option<(usize, bool)> = None;
    let mut down: Option<(usize, usize, bool)> = None;
    let mut file_no_tx = false;
    for line in text.split_inclusive(|b| *b == b'\n') {
        let shown = String::from_utf8_lossy(line);
        if !markers.per_section && shown.trim_end().eq_ignore_ascii_case(markers.no_tx) {
            file_no_tx = true;
        }
        // goose reads its annotations in any case; dbmate's are lower case anyway.
        let starts = |marker: &[u8]| line.len() >= marker.len() && line[..marker.len()].eq_ignore_ascii_case(marker);
        if up.is_none() && starts(markers.up) {
            up = Some((offset + line.len(), shown.contains(markers.no_tx)));
        } else if up.is_some() && down.is_none() && starts(markers.down) {
            down = Some((offset, offset + line.len(), shown.contains(markers.no_tx)));
        }
        offset += line.len();
    }
    let (up_start, up_no_tx) = up?;
    let up_end = down.map_or(text.len(), |(at, _, _)| at);
    let (up_no_tx, down_no_tx) = match markers.per_section {
        true => (up_no_tx, down.is_some_and(|(_, _, no_tx)| no_tx)),
        false => (file_no_tx, file_no_tx),
    };
    Some(Sections { up: &text[up_start..up_end], up_no_tx, down: down.map(|(_, start, _)| &text[start..]), down_no_tx })
}

/// Writes every file into a fresh folder next to `out`, then moves it into place: `out` gets
/// all of them or none.
fn write(conversion: &Conversion, out: &Path) -> Result<(), ConvertError> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("migrations");
    let staging = parent.join(format!(".{name}.converting-{}", std::process::id()));
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |error| ConvertError::Write { path, error }
    };
    let result = (|| {
        fs::create_dir_all(&staging).map_err(failed(&staging))?;
        for file in &conversion.files {
            let path = staging.join(&file.to);
            fs::write(&path, &file.contents).map_err(failed(&path))?;
        }
        if out.exists() {
            fs::remove_dir(out).map_err(failed(out))?;
        }
        fs::rename(&staging, out).map_err(failed(out))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbmate_sections() {
        let text = b"-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (a);\n\n-- migrate:down\nDROP INDEX i;\n";
        let s = sections(text, &DBMATE).expect("an up section");
        assert_eq!(s.up, b"CREATE INDEX CONCURRENTLY i ON t (a);\n\n");
        assert_eq!(s.down, Some(&b"DROP INDEX i;\n"[..]));
        assert!(s.up_no_tx && !s.down_no_tx);
        let s = sections(b"-- migrate:up\nSELECT 1;\n", &DBMATE).expect("an up section");
        assert_eq!((s.up, s.up_no_tx, s.down), (&b"SELECT 1;\n"[..], false, None));
        assert!(sections(b"SELECT 1;\n", &DBMATE).is_none());
    }

    #[test]
    fn goose_sections() {
        let text = b"-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON t (a);\n-- +goose Down\n-- +goose StatementBegin\nDROP INDEX CONCURRENTLY i;\n-- +goose StatementEnd\n";
        let s = sections(text, &GOOSE).expect("an up section");
        assert_eq!(s.up, b"CREATE INDEX CONCURRENTLY i ON t (a);\n");
        assert!(s.down.is_some_and(|d| d.starts_with(b"-- +goose StatementBegin\nDROP INDEX")));
        assert!(s.up_no_tx && s.down_no_tx);
        assert!(!has_statement(b"-- nothing to undo\n\n"));
        assert!(has_statement(b"DROP TABLE t;"));
    }

    #[test]
    fn names() {
        assert_eq!(
            versioned_name("2023-01-31-120000", "create-users").as_deref(),
            Ok("20230131120000_create_users.sql")
        );
        assert_eq!(versioned_name("0001", "Create person table").as_deref(), Ok("0001_Create_person_table.sql"));
        assert!(versioned_name("1.1", "x").is_err());
        assert!(versioned_name("1_1", "x").is_err());
    }
}
