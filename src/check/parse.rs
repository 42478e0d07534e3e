//! Postgres's own parser (libpg_query, through the `pg_query` crate): a file's statements as
//! parse trees, each with where it starts; a syntax error with its line and column.

use std::ffi::{c_char, c_int, CString};

use pg_query::NodeEnum;

/// One statement of a file.
#[derive(Debug, Clone)]
pub struct Statement {
    /// The parse tree.
    pub node: NodeEnum,
    /// Its first line and column (1-based), as an editor shows them.
    pub line: usize,
    pub column: usize,
    /// Its text.
    pub text: String,
}

/// The file does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFailure {
    /// What Postgres says (`syntax error at or near "FROM"`).
    pub message: String,
    /// Where, when Postgres says where (1-based).
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// Parses `sql` (a whole file) into its statements.
pub fn parse(sql: &str) -> Result<Vec<Statement>, ParseFailure> {
    let parsed = pg_query::parse(sql, 0).map_err(|e| failure(sql, e))?;
    let mut statements = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in parsed.protobuf.stmts {
        let Some(node) = raw.stmt.and_then(|n| n.node) else { continue };
        let start = usize::try_from(raw.stmt_location).unwrap_or(0);
        let end = match usize::try_from(raw.stmt_len) {
            Ok(0) | Err(_) => sql.len(),
            Ok(len) => (start + len).min(sql.len()),
        };
        // The statement's own text starts at its first token, after comments and blanks.
        let text = sql.get(start..end).unwrap_or_default();
        let skipped = leading_noise(text);
        let (line, column) = position(sql, start + skipped);
        statements.push(Statement { node, line, column, text: text[skipped..].trim_end().to_string() });
    }
    Ok(statements)
}

/// Bytes of blanks and comments at the start of `text`.
fn leading_noise(text: &str) -> usize {
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.find('\n').map_or("", |at| &after[at..]);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |at| &after[at + 2..]);
        } else {
            return text.len() - trimmed.len();
        }
    }
}

/// Line and column (1-based, in characters) of byte `offset`.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn failure(sql: &str, error: pg_query::Error) -> ParseFailure {
    let message = match error {
        pg_query::Error::Parse(message) => message,
        other => other.to_string(),
    };
    match cursor_position(sql) {
        Some(character) => {
            let offset = sql.char_indices().nth(character.saturating_sub(1)).map_or(sql.len(), |(at, _)| at);
            let (line, column) = position(sql, offset);
            ParseFailure { message, line: Some(line), column: Some(column) }
        }
        None => ParseFailure { message, line: None, column: None },
    }
}

// libpg_query's C interface, for the one thing the crate does not pass on: where a syntax
// error is (`cursorpos`, 1-based characters). Declared as in libpg_query's pg_query.h.
#[repr(C)]
struct PgQueryError {
    message: *mut c_char,
    funcname: *mut c_char,
    filename: *mut c_char,
    lineno: c_int,
    cursorpos: c_int,
    context: *mut c_char,
}

#[repr(C)]
struct PgQueryParseResult {
    parse_tree: *mut c_char,
    stderr_buffer: *mut c_char,
    error: *mut PgQueryError,
}

extern "C" {
    fn pg_query_parse(input: *const c_char) -> PgQueryParseResult;
    fn pg_query_free_parse_result(result: PgQueryParseResult);
}

/// Where the parser stopped in `sql`, in characters from 1; `None` when it did not say.
fn cursor_position(sql: &str) -> Option<usize> {
    let input = CString::new(sql).ok()?;
    // SAFETY: `input` is a valid NUL-terminated string that outlives the call; the result is
    // read only while it is alive and freed exactly once by libpg_query's own function.
    unsafe {
        let result = pg_query_parse(input.as_ptr());
        let position = if result.error.is_null() {
            None
        } else {
            usize::try_from((*result.error).cursorpos).ok().filter(|p| *p > 0)
        };
        pg_query_free_parse_result(result);
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_start_at_their_first_token() {
        let sql = "-- migrun:no-transaction\n-- a comment\nCREATE TABLE a (x int);\n\n/* b */ SELECT 1;\n";
        let statements = parse(sql).expect("parses");
        assert_eq!(statements.len(), 2);
        assert_eq!((statements[0].line, statements[0].column), (3, 1));
        assert_eq!(statements[0].text, "CREATE TABLE a (x int)");
        assert_eq!((statements[1].line, statements[1].column), (5, 9));
        assert!(matches!(statements[1].node, NodeEnum::SelectStmt(_)));
    }

    #[test]
    fn a_syntax_error_has_its_line_and_column() {
        let failure = parse("SELECT 1;\nSELECT é FROM;\n").expect_err("fails");
        assert_eq!(failure.message, "syntax error at or near \";\"");
        assert_eq!((failure.line, failure.column), (Some(2), Some(14)));
    }
}

#[cfg(test)]
mod splitter_agreement {
    //! `up` splits no-transaction files with its own lexer (`migrate::split`); lint uses
    //! Postgres's parser. They must agree on where statements start. Runs on the repository's
    //! SQL, and on any folder named in MIGRUN_SPLIT_CORPUS (how the lexer was measured against
    //! 342 real files).
    use std::path::Path;

    fn sql_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                sql_files(&path, found);
            } else if path.extension().is_some_and(|e| e == "sql") {
                found.push(path);
            }
        }
    }

    #[test]
    fn the_lexer_and_the_parser_agree_on_statement_starts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        sql_files(&root.join("sql"), &mut files);
        sql_files(&root.join("tests/fixtures"), &mut files);
        if let Some(extra) = std::env::var_os("MIGRUN_SPLIT_CORPUS") {
            sql_files(Path::new(&extra), &mut files);
        }
        let mut compared = 0;
        let mut disagree = Vec::new();
        for file in &files {
            let Ok(sql) = std::fs::read_to_string(file) else { continue };
            let Ok(parsed) = super::parse(&sql) else { continue };
            let ours: Vec<(usize, usize)> = crate::migrate::split::split(&sql)
                .iter()
                .map(|s| {
                    let skipped = super::leading_noise(s.text);
                    super::position(&sql, s.offset + skipped)
                })
                .collect();
            let theirs: Vec<(usize, usize)> = parsed.iter().map(|s| (s.line, s.column)).collect();
            compared += theirs.len();
            if ours != theirs {
                disagree.push(format!("{}: lexer {ours:?}, parser {theirs:?}", file.display()));
            }
        }
        assert!(compared > 50, "only {compared} statements compared");
        assert!(disagree.is_empty(), "{} file(s) split differently:\n{}", disagree.len(), disagree.join("\n"));
    }
}
