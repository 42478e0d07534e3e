//! Migration files: finding them, parsing names and directives, normalising text, checksums.
//!
//! Everything here happens before any connection is made, so a bad file costs nothing but an
//! exit code 2.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::split;
use crate::duration::{self, Millis};

/// Versioned files are applied once, in version order; repeatable ones after them, whenever
/// their checksum changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MigrationKind {
    /// `<version>_<description>.sql`
    Versioned(u64),
    /// `R__<description>.sql`
    Repeatable,
}

/// How a file asks to be run: `-- migrun:` comment lines at its top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `-- migrun:no-transaction`: statement by statement, outside a transaction.
    pub no_transaction: bool,
    /// `-- migrun:statement-timeout=<duration>`
    pub statement_timeout: Option<Millis>,
    /// `-- migrun:lock-timeout=<duration>`
    pub lock_timeout: Option<Millis>,
}

/// One migration file, read and validated.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Versioned or repeatable.
    pub kind: MigrationKind,
    /// The name's description part.
    pub description: String,
    /// The path as found under the configured directory, for messages (`sql/0001_init.sql`).
    pub path: PathBuf,
    /// File text with a leading BOM dropped and CRLF read as LF: what is checksummed and run.
    pub sql: String,
    /// SHA-256 of `sql`, lowercase hex.
    pub checksum: String,
    /// The directives of the file's header.
    pub directives: Directives,
    /// It holds no statement yet (a fresh `new`): only `status` and `plan` load such a file,
    /// to list it; everything that could run or wait for it refuses it.
    pub empty: bool,
    /// The version's down file (`<version>_<description>.down.sql`), read and validated like
    /// an up file: what `migrun down` runs to undo this one. Never on a down file itself.
    pub down: Option<Box<Migration>>,
}

impl Migration {
    /// The version of a versioned file.
    pub fn version(&self) -> Option<u64> {
        match self.kind {
            MigrationKind::Versioned(v) => Some(v),
            MigrationKind::Repeatable => None,
        }
    }

    /// The path for messages.
    pub fn display_path(&self) -> String {
        self.path.display().to_string()
    }
}

const DIRECTIVE_PREFIX: &str = "migrun:";
const KNOWN_DIRECTIVES: &str = "no-transaction, statement-timeout=<duration>, lock-timeout=<duration>";

/// Why the migration files cannot be used; nothing was done.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{dir}: cannot read the migrations directory: {reason}; set --dir / MIGRUN_DIR to the folder holding the .sql files")]
    Dir { dir: String, reason: String },
    #[error("{dir}: holds no migration file (<version>_<description>.sql or R__<description>.sql); check --dir / MIGRUN_DIR and that the image copies the files (--allow-empty if none is right)")]
    NoMigrations { dir: String },
    #[error("{dir}: {} look like migrations but would be skipped: {}; rename them to <version>_<description>.sql, move them to the top of the directory, or remove them", .files.len(), .files.join(", "))]
    Skipped { dir: String, files: Vec<String> },
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{}", bad_names_text(.files))]
    BadNames { files: Vec<(String, &'static str)> },
    #[error("{file}: not valid UTF-8 (line {line}); save the file as UTF-8")]
    InvalidUtf8 { file: String, line: usize },
    #[error("{file}: is UTF-16 ({endian} byte-order mark); save the file as UTF-8")]
    Utf16 { file: String, endian: &'static str },
    #[error("{file}: has CR-only line endings (classic Mac), so it reads as one line; save it with LF (or CRLF) line endings")]
    CrLineEndings { file: String },
    #[error("{file}: holds a NUL byte (line {line}); is it UTF-16 without a byte-order mark? save the file as UTF-8")]
    NulByte { file: String, line: usize },
    #[error("{file}: `COPY ... {direction}` (line {line}) exchanges data with a client like psql, which migrun is not; load the data with INSERT, or COPY from a file on the server")]
    ClientCopy { file: String, line: usize, direction: &'static str },
    #[error("{file}: holds no SQL statement; write the migration or delete the file")]
    Empty { file: String },
    #[error("{first} and {second}: both have version {version}; give one of them a new version")]
    DuplicateVersion { version: u64, first: String, second: String },
    #[error("{file}: unknown directive `{directive}` (line {line}); expected one of {KNOWN_DIRECTIVES}")]
    UnknownDirective { file: String, directive: String, line: usize },
    #[error("{file}: directive `{directive}` (line {line}) needs {expected}")]
    BadDirectiveValue { file: String, directive: String, line: usize, expected: String },
    #[error("{file}: `{text}` (line {line}) looks like a migrun directive but is not read as one; write it as `-- migrun:<directive>`, lower case, with the colon (one of {KNOWN_DIRECTIVES}), or reword the comment")]
    DirectiveLike { file: String, text: String, line: usize },
    #[error("{file}: directive `{directive}` given twice (line {line})")]
    RepeatedDirective { file: String, directive: String, line: usize },
    #[error("{file}: directive `{directive}` (line {line}) comes after the first statement; move it to the comment lines at the top of the file")]
    MisplacedDirective { file: String, directive: String, line: usize },
    #[error("{file}: `{statement}` (line {line}) controls the transaction, but migrun already runs each file in one; remove it, or add `-- migrun:no-transaction` at the top")]
    TransactionControl { file: String, line: usize, statement: String },
    #[error("{file}: a down file without an up file of its version; give it the version of the file it undoes, or remove it")]
    DownWithoutUp { file: String },
    #[error("{description}: not a valid description; use letters, digits and _ only")]
    BadDescription { description: String },
    #[error("{file}: cannot create: {reason}")]
    Create { file: String, reason: String },
}

/// Expected names, once per message.
const NAME_FORMAT: &str = "expected <version>_<description>.sql (version: 1 to 18 digits, description: letters, digits, _), its <version>_<description>.down.sql, or R__<description>.sql";

fn bad_names_text(files: &[(String, &'static str)]) -> String {
    if let [(file, why)] = files {
        return format!("{file}: not a migration file name ({why}); {NAME_FORMAT}");
    }
    let listed: Vec<String> = files.iter().map(|(file, why)| format!("{file} ({why})")).collect();
    format!("{} files are not migration file names: {}; {NAME_FORMAT}", listed.len(), listed.join(", "))
}

/// SHA-256 (lowercase hex) of the file as migrun reads it: a leading UTF-8 BOM dropped and
/// CRLF read as LF, so a checkout on Windows does not look like an edited file.
pub fn checksum(normalized: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(normalized.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(HEX[usize::from(byte >> 4)] as char);
        hex.push(HEX[usize::from(byte & 0xf)] as char);
    }
    hex
}

/// Reads a whole file through `buffer`, reused from file to file, and returns an exact-size
/// copy. Every deploy reads every file, so the cost per file is what counts: no `stat` for a
/// size hint (what `fs::read` makes), and no fresh 4 KiB allocation per file, which cost a
/// page fault each and stayed in the process's memory.
fn read_file(path: &Path, buffer: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    buffer.clear();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, u64::MAX), buffer)?;
    Ok(buffer.as_slice().to_vec())
}

/// How much emptiness a command accepts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accept {
    /// A directory without migration files.
    pub empty_dir: bool,
    /// Files without statements (listed as empty; read-only commands only).
    pub empty_files: bool,
}

impl Accept {
    /// What applying (or waiting, linting, verifying) accepts: an empty directory only when
    /// allowed (`--allow-empty`), never an empty file.
    pub fn to_apply(allow_empty: bool) -> Accept {
        Accept { empty_dir: allow_empty, empty_files: false }
    }

    /// What showing accepts (`plan`, `status`): an empty directory or a fresh empty file is
    /// fine to list; calling the schema up to date or ready is not.
    pub const TO_SHOW: Accept = Accept { empty_dir: true, empty_files: true };
}

/// Reads every migration in `dir`: versioned ones by version, then repeatable ones by name.
/// No migration file at all, or a file without statements, is an error unless accepted.
pub fn load(dir: &Path, accept: Accept) -> Result<Vec<Migration>, FilesError> {
    let (mut found, mut downs): (Vec<_>, Vec<_>) = list(dir)?.into_iter().partition(|f| f.3 == Direction::Up);
    if found.is_empty() && !accept.empty_dir {
        return Err(FilesError::NoMigrations { dir: dir.display().to_string() });
    }
    // The path last: two files of one version are named in one order, whatever the listing's.
    found.sort_by(|a, b| (a.1, &a.2, &a.0).cmp(&(b.1, &b.2, &b.0)));
    downs.sort_by(|a, b| (a.1, &a.2, &a.0).cmp(&(b.1, &b.2, &b.0)));
    let strip = |files: Vec<(PathBuf, MigrationKind, String, Direction)>| {
        files.into_iter().map(|(path, kind, description, _)| (path, kind, description)).collect()
    };
    let mut migrations = read_all(strip(found), accept.empty_files)?;
    let downs = match downs.is_empty() {
        true => Vec::new(),
        false => read_all(strip(downs), false)?,
    };
    no_duplicate_versions(&migrations)?;
    no_duplicate_versions(&downs)?;
    attach_downs(&mut migrations, downs)?;
    Ok(migrations)
}

/// Two files of one version (in `migrations`, all up files or all down files) are an error.
fn no_duplicate_versions(migrations: &[Migration]) -> Result<(), FilesError> {
    for pair in migrations.windows(2) {
        if let (MigrationKind::Versioned(v), MigrationKind::Versioned(w)) = (pair[0].kind, pair[1].kind) {
            if v == w {
                return Err(FilesError::DuplicateVersion {
                    version: v,
                    first: pair[0].display_path(),
                    second: pair[1].display_path(),
                });
            }
        }
    }
    Ok(())
}

/// Gives each down file to the up file of its version; a down file without one is an error
/// (a typo in its version would otherwise leave the version without a way back, silently).
fn attach_downs(migrations: &mut [Migration], downs: Vec<Migration>) -> Result<(), FilesError> {
    for down in downs {
        let version = down.version();
        match migrations.iter_mut().find(|m| m.version() == version) {
            Some(up) => up.down = Some(Box::new(down)),
            None => return Err(FilesError::DownWithoutUp { file: down.display_path() }),
        }
    }
    Ok(())
}

/// The migration files in `dir` with their parsed names. Files that are not `.sql` are
/// skipped; anything that looks like a migration and would not run (another case of `.sql`,
/// `.sql` files in subdirectories, a `.sql` entry that is not a regular file) is an error
/// naming every one of them.
fn list(dir: &Path) -> Result<Vec<(PathBuf, MigrationKind, String, Direction)>, FilesError> {
    let dir_error = |e: std::io::Error| FilesError::Dir { dir: dir.display().to_string(), reason: e.to_string() };
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut bad_names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // file_type() comes with the directory listing: no extra system call per file.
        let Ok(file_type) = entry.file_type() else { continue };
        if file_type.is_dir() {
            skipped.extend(sql_files_under(&path));
            continue;
        }
        if !name.ends_with(".sql") {
            if name.to_ascii_lowercase().ends_with(".sql") {
                skipped.push(format!("{} (extension not lower-case .sql)", path.display()));
            }
            continue;
        }
        // A FIFO or a device would block the read forever; a symlink counts by its target.
        let regular = file_type.is_file() || (file_type.is_symlink() && path.metadata().is_ok_and(|m| m.is_file()));
        if !regular {
            skipped.push(format!("{} (not a regular file)", path.display()));
            continue;
        }
        match parse_file_name(&name) {
            Ok((kind, description, direction)) => found.push((path, kind, description, direction)),
            Err(why) => bad_names.push((path.display().to_string(), why)),
        }
    }
    // Every mistake in one run: a real folder can have dozens of names to fix.
    if !bad_names.is_empty() {
        bad_names.sort();
        return Err(FilesError::BadNames { files: bad_names });
    }
    if !skipped.is_empty() {
        skipped.sort();
        return Err(FilesError::Skipped { dir: dir.display().to_string(), files: skipped });
    }
    Ok(found)
}

/// `.sql` files (any case) anywhere under `dir`: migrun reads only the top level. A
/// folder-per-migration layout (Prisma's, diesel's) shows up here.
fn sql_files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => found.extend(sql_files_under(&path)),
            _ if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql")) => {
                found.push(format!("{} (in a subdirectory)", path.display()));
            }
            _ => {}
        }
    }
    found
}

/// Reads the files in order, on two threads when there are many: every deploy reads every
/// file, and on a virtual machine the system calls per file are most of a no-op run's cost.
fn read_all(found: Vec<(PathBuf, MigrationKind, String)>, empty_files: bool) -> Result<Vec<Migration>, FilesError> {
    const PARALLEL_FROM: usize = 64;
    let read = |files: Vec<(PathBuf, MigrationKind, String)>| -> Result<Vec<Migration>, FilesError> {
        let mut buffer = Vec::with_capacity(64 * 1024);
        files
            .into_iter()
            .map(|(path, kind, description)| read_migration(path, kind, description, &mut buffer, empty_files))
            .collect()
    };
    if found.len() < PARALLEL_FROM {
        return read(found);
    }
    let mut first = found;
    let second = first.split_off(first.len() / 2);
    let (first, second) = std::thread::scope(|scope| {
        let other = scope.spawn(|| read(second));
        let mine = read(first);
        (mine, other.join())
    });
    let mut migrations = first?;
    match second {
        Ok(rest) => migrations.extend(rest?),
        Err(panic) => std::panic::resume_unwind(panic),
    }
    Ok(migrations)
}

/// Which way a file goes: an up file applies its version, a down file undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// `<version>_<description>.sql`, or `.up.sql` as sqlx and golang-migrate name it.
    Up,
    /// `<version>_<description>.down.sql`
    Down,
}

/// `0001_init.sql` → (Versioned(1), "init"); `R__views.sql` → (Repeatable, "views"); else
/// what is wrong with the name. Up files only: a down file's name is an error here.
pub fn parse_name(name: &str) -> Result<(MigrationKind, String), &'static str> {
    match parse_file_name(name)? {
        (kind, description, Direction::Up) if !name.ends_with(".up.sql") => Ok((kind, description)),
        _ => Err("a .up.sql or .down.sql name; give the up file a plain .sql name"),
    }
}

/// As `parse_name`, for every file a migrations folder may hold: `0001_init.up.sql` is the up
/// file of version 1 (sqlx's and golang-migrate's pairs read as they are), `0001_init.down.sql`
/// its down file. A repeatable file has no down file.
pub fn parse_file_name(name: &str) -> Result<(MigrationKind, String, Direction), &'static str> {
    let (stem, direction) = match name.strip_suffix(".down.sql") {
        Some(stem) => (stem, Direction::Down),
        None => (name.strip_suffix(".up.sql").or_else(|| name.strip_suffix(".sql")).ok_or("not .sql")?, Direction::Up),
    };
    let (kind, description) = parse_stem(stem)?;
    if direction == Direction::Down && kind == MigrationKind::Repeatable {
        return Err("a repeatable file has no down file: it is applied again whenever it changes");
    }
    Ok((kind, description, direction))
}

fn parse_stem(stem: &str) -> Result<(MigrationKind, String), &'static str> {
    let valid_description = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if let Some(description) = stem.strip_prefix("R__") {
        return match valid_description(description) {
            true => Ok((MigrationKind::Repeatable, description.to_string())),
            false => Err("the description may hold letters, digits and _ only"),
        };
    }
    let (version, description) = stem.split_once('_').ok_or("no _ between version and description")?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the version must be digits");
    }
    if version.len() > 18 {
        return Err("the version has more than 18 digits, the most migrun accepts");
    }
    if !valid_description(description) {
        return Err("the description may hold letters, digits and _ only");
    }
    let version = version.parse().map_err(|_| "the version is not a number")?;
    Ok((MigrationKind::Versioned(version), description.to_string()))
}

fn read_migration(
    path: PathBuf,
    kind: MigrationKind,
    description: String,
    buffer: &mut Vec<u8>,
    empty_files: bool,
) -> Result<Migration, FilesError> {
    // The name for messages is made only when there is a message: every deploy reads every file.
    let file = || path.display().to_string();
    let bytes = read_file(&path, buffer).map_err(|e| FilesError::Unreadable { file: file(), reason: e.to_string() })?;
    if let Some(endian) = utf16_bom(&bytes) {
        return Err(FilesError::Utf16 { file: file(), endian });
    }
    let sql = normalize(bytes).map_err(|line| FilesError::InvalidUtf8 { file: file(), line })?;
    // Postgres cuts a statement at a NUL byte: what ran would not be what the file says.
    if let Some(at) = sql.find('\0') {
        return Err(FilesError::NulByte { file: file(), line: line_of(&sql, at) });
    }
    let statements = split::split(&sql);
    if statements.is_empty() {
        if sql.contains('\r') {
            return Err(FilesError::CrLineEndings { file: file() });
        }
        if empty_files {
            let directives = parse_directives(&sql, &path)?;
            return Ok(Migration {
                kind,
                description,
                checksum: checksum(&sql),
                path,
                sql,
                directives,
                empty: true,
                down: None,
            });
        }
        return Err(FilesError::Empty { file: file() });
    }
    let directives = parse_directives(&sql, &path)?;
    for statement in &statements {
        if let Some(direction) = split::client_copy(statement.text) {
            return Err(FilesError::ClientCopy { file: file(), line: line_of(&sql, statement.offset), direction });
        }
    }
    if !directives.no_transaction {
        if let Some(statement) = statements.iter().find(|s| split::is_transaction_control(s.text)) {
            let line = line_of(&sql, statement.offset);
            return Err(FilesError::TransactionControl { file: file(), line, statement: statement.text.to_string() });
        }
    }
    Ok(Migration { kind, description, checksum: checksum(&sql), path, sql, directives, empty: false, down: None })
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text[..offset].matches('\n').count()
}

/// Drops a leading BOM and reads CRLF as LF; on invalid UTF-8, the 1-based line of the bad byte.
/// The byte order a UTF-16 byte-order mark announces, if the file starts with one.
fn utf16_bom(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xFF, 0xFE, ..] => Some("little-endian"),
        [0xFE, 0xFF, ..] => Some("big-endian"),
        _ => None,
    }
}

fn normalize(mut bytes: Vec<u8>) -> Result<String, usize> {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        bytes.drain(..3);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        1 + e.as_bytes()[..valid].iter().filter(|&&b| b == b'\n').count()
    })?;
    Ok(if text.contains('\r') { text.replace("\r\n", "\n") } else { text })
}

/// Directives live in `--` comment lines before the first statement; one anywhere else is a
/// mistake that would silently change how the file runs, so it is an error.
fn parse_directives(sql: &str, path: &Path) -> Result<Directives, FilesError> {
    let mut directives = Directives::default();
    let mut in_header = true;
    let mut in_block_comment = false;
    let file = || path.display().to_string();
    for (index, line) in sql.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        // `/* ... */` comments are comments in the header too; a directive there is not read.
        if in_block_comment || (in_header && trimmed.starts_with("/*")) {
            let body = trimmed.trim_start_matches("/*").trim_start_matches('*').trim();
            in_block_comment = !trimmed.contains("*/");
            if in_header && looks_like_directive(body) {
                return Err(FilesError::DirectiveLike { file: file(), text: trimmed.into(), line: line_no });
            }
            continue;
        }
        let comment = trimmed.strip_prefix("--").map(str::trim);
        if in_header && !trimmed.is_empty() && comment.is_none() {
            in_header = false;
        }
        let Some(comment) = comment else { continue };
        let Some(directive) = comment.strip_prefix(DIRECTIVE_PREFIX) else {
            if in_header && looks_like_directive(comment) {
                return Err(FilesError::DirectiveLike { file: file(), text: trimmed.into(), line: line_no });
            }
            continue;
        };
        let directive = directive.trim();
        // `-- migrun:allow <rule> <reason>` marks the next statement for `migrun lint`; it
        // changes nothing about how the file runs, so it may stand anywhere.
        if directive == "allow" || directive.starts_with("allow ") {
            continue;
        }
        if !in_header {
            return Err(FilesError::MisplacedDirective { file: file(), directive: directive.into(), line: line_no });
        }
        apply_directive(&mut directives, directive, &file(), line_no)?;
    }
    Ok(directives)
}

/// A leading comment that starts with `migrun` in any case and is not written as a directive
/// (`-- migrun:name`): a typo that would silently change how the file runs.
fn looks_like_directive(comment: &str) -> bool {
    comment.get(..6).is_some_and(|start| start.eq_ignore_ascii_case("migrun"))
}

fn apply_directive(directives: &mut Directives, directive: &str, file: &str, line: usize) -> Result<(), FilesError> {
    let (name, value) = match directive.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (directive, None),
    };
    let repeated = || FilesError::RepeatedDirective { file: file.into(), directive: name.into(), line };
    let bad_value = |expected: &str| FilesError::BadDirectiveValue {
        file: file.into(),
        directive: directive.into(),
        line,
        expected: expected.into(),
    };
    let timeout = |value: Option<&str>| {
        value.and_then(Millis::parse).ok_or_else(|| bad_value(duration::expected(value.unwrap_or_default())))
    };
    match name {
        "no-transaction" => {
            if value.is_some() {
                return Err(bad_value("no value"));
            }
            if directives.no_transaction {
                return Err(repeated());
            }
            directives.no_transaction = true;
        }
        "statement-timeout" => {
            if directives.statement_timeout.replace(timeout(value)?).is_some() {
                return Err(repeated());
            }
        }
        "lock-timeout" => {
            if directives.lock_timeout.replace(timeout(value)?).is_some() {
                return Err(repeated());
            }
        }
        _ => return Err(FilesError::UnknownDirective { file: file.into(), directive: directive.into(), line }),
    }
    Ok(())
}

impl fmt::Display for MigrationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MigrationKind::Versioned(_) => "versioned",
            MigrationKind::Repeatable => "repeatable",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_names() {
        assert_eq!(parse_name("0001_init.sql"), Ok((MigrationKind::Versioned(1), "init".into())));
        assert_eq!(
            parse_name("20261125120000_add_users.sql"),
            Ok((MigrationKind::Versioned(20261125120000), "add_users".into()))
        );
        assert_eq!(parse_name("R__views.sql"), Ok((MigrationKind::Repeatable, "views".into())));
        for bad in [
            "init.sql",
            "0001.sql",
            "0001_.sql",
            "0001_a-b.sql",
            "1234567890123456789_x.sql",
            "R__.sql",
            "v1_x.sql",
            "R_x.sql",
        ] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_name("1234567890123456789_x.sql"),
            Err("the version has more than 18 digits, the most migrun accepts")
        );
    }

    #[test]
    fn parses_up_and_down_file_names() {
        let versioned = |v, d: &str, dir| Ok((MigrationKind::Versioned(v), d.to_string(), dir));
        assert_eq!(parse_file_name("0001_init.sql"), versioned(1, "init", Direction::Up));
        assert_eq!(parse_file_name("0001_init.up.sql"), versioned(1, "init", Direction::Up));
        assert_eq!(parse_file_name("0001_init.down.sql"), versioned(1, "init", Direction::Down));
        assert_eq!(parse_file_name("20261201_add_x.down.sql"), versioned(20261201, "add_x", Direction::Down));
        assert!(parse_file_name("R__views.down.sql").unwrap_err().contains("repeatable"));
        for bad in ["0001_init.DOWN.sql", "0001_init.down.up.sql", "0001.down.sql", "0001_a.b.sql"] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
        // `new` and `convert` write plain names only.
        assert!(parse_name("0001_init.down.sql").is_err());
        assert!(parse_name("0001_init.up.sql").is_err());
    }

    #[test]
    fn checksum_ignores_bom_and_crlf() {
        let unix = normalize(b"CREATE TABLE t ();\nSELECT 1;\n".to_vec()).unwrap();
        let windows = normalize(b"\xEF\xBB\xBFCREATE TABLE t ();\r\nSELECT 1;\r\n".to_vec()).unwrap();
        assert_eq!(checksum(&unix), checksum(&windows));
        assert_ne!(checksum(&unix), checksum("CREATE TABLE t ();\nSELECT 2;\n"));
        assert_eq!(checksum(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn reports_the_line_of_invalid_utf8() {
        assert_eq!(normalize(b"SELECT 1;\nSELECT '\xff';\n".to_vec()), Err(2));
    }

    #[test]
    fn reads_directives_from_the_header() {
        let sql = "-- add an index\n-- migrun:no-transaction\n--migrun: lock-timeout = 2s\n\n-- migrun:statement-timeout=10min\nCREATE INDEX CONCURRENTLY i ON t (x);\n";
        let d = parse_directives(sql, Path::new("f.sql")).unwrap();
        assert_eq!(
            d,
            Directives {
                no_transaction: true,
                statement_timeout: Some(Millis(600_000)),
                lock_timeout: Some(Millis(2_000))
            }
        );
    }

    #[test]
    fn rejects_bad_directives_naming_file_and_line() {
        let cases = [
            (
                "-- migrun:no-transation\nSELECT 1;",
                "f.sql: unknown directive `no-transation` (line 1); expected one of no-transaction",
            ),
            (
                "-- migrun:lock-timeout=5 sec\nSELECT 1;",
                "f.sql: directive `lock-timeout=5 sec` (line 1) needs a whole number",
            ),
            (
                "-- migrun:no-transaction\n-- migrun:no-transaction\nSELECT 1;",
                "f.sql: directive `no-transaction` given twice (line 2)",
            ),
            (
                "SELECT 1;\n-- migrun:no-transaction\n",
                "f.sql: directive `no-transaction` (line 2) comes after the first statement",
            ),
        ];
        for (sql, expected) in cases {
            let message = parse_directives(sql, Path::new("f.sql")).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{message}");
        }
    }
}
