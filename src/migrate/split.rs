//! The SQL lexer: splits a file into statements and recognises `CREATE INDEX CONCURRENTLY`.
//!
//! It knows exactly as much of Postgres's lexical grammar as finding statement boundaries
//! needs: single-quoted strings (`''` inside), `E''` strings (backslash escapes), double-quoted
//! identifiers, dollar quoting with tags, `--` comments and nested `/* */` comments. A `;`
//! anywhere else ends a statement, except inside a SQL-standard function body
//! (`BEGIN ATOMIC ... END`), which is kept whole as psql keeps it. Transactional files are sent
//! whole and split by Postgres itself; this splitter serves `no-transaction` files and checks.

/// One statement of a file, without its terminating `;` and without surrounding whitespace
/// or comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement<'a> {
    pub text: &'a str,
    /// Byte offset of `text` in the file, to map Postgres's error positions back to lines.
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// Keyword, identifier or number.
    Word,
    QuotedIdent,
    /// Any kind of string literal, dollar-quoted bodies included.
    Literal,
    Semicolon,
    Punct,
}

#[derive(Debug, Clone, Copy)]
struct Token {
    kind: TokenKind,
    start: usize,
    end: usize,
}

/// Splits `sql` into its statements, in order. Empty statements (`;;`, comments only) are dropped.
///
/// Like psql, it keeps a SQL-standard function body (`BEGIN ATOMIC ... END`) in one piece by
/// counting `BEGIN ATOMIC`/`CASE` against `END` inside a `CREATE` statement.
pub fn split(sql: &str) -> Vec<Statement<'_>> {
    let mut statements = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut is_create = false;
    let mut previous_word = "";
    let mut depth = 0usize;
    for token in Lexer::new(sql) {
        let text = &sql[token.start..token.end];
        if token.kind == TokenKind::Semicolon && depth == 0 {
            if let Some((start, end)) = current.take() {
                statements.push(Statement { text: &sql[start..end], offset: start });
            }
            previous_word = "";
            continue;
        }
        if token.kind == TokenKind::Word {
            if current.is_none() {
                is_create = text.eq_ignore_ascii_case("create");
            } else if is_create {
                let opens_body = text.eq_ignore_ascii_case("atomic") && previous_word.eq_ignore_ascii_case("begin");
                if opens_body || (depth > 0 && text.eq_ignore_ascii_case("case")) {
                    depth += 1;
                } else if depth > 0 && text.eq_ignore_ascii_case("end") {
                    depth -= 1;
                }
            }
            previous_word = text;
        }
        current = Some(match current {
            Some((start, _)) => (start, token.end),
            None => (token.start, token.end),
        });
    }
    if let Some((start, end)) = current {
        statements.push(Statement { text: &sql[start..end], offset: start });
    }
    statements
}

/// Whether a statement opens or ends a transaction block (`BEGIN`, `COMMIT`, `END`, ...), which
/// would break the transaction migrun runs a file in. `ROLLBACK TO SAVEPOINT` is fine.
pub fn is_transaction_control(statement: &str) -> bool {
    let mut words = Lexer::new(statement)
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| statement[t.start..t.end].to_ascii_lowercase());
    match words.next().as_deref() {
        Some("begin" | "commit" | "end" | "abort") => true,
        Some("start") => words.next().as_deref() == Some("transaction"),
        Some("rollback") => !matches!(words.next().as_deref(), Some("to")),
        _ => false,
    }
}

/// What a statement changes beyond its own database, named by its first words (`ALTER
/// SYSTEM`, `DROP TABLESPACE`, `ALTER ROLE`, `CREATE DATABASE`...): the server's
/// configuration, tablespaces, databases, or roles that exist already. `CREATE ROLE` is not
/// one: what it creates can be dropped again. `None` for every other statement.
pub fn cluster_wide(statement: &str) -> Option<String> {
    let words: Vec<String> = Lexer::new(statement)
        .filter(|t| t.kind == TokenKind::Word)
        .take(3)
        .map(|t| statement[t.start..t.end].to_ascii_lowercase())
        .collect();
    let word = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
    let wide = match (word(0), word(1)) {
        ("alter", "system") => true,
        ("create" | "alter" | "drop", "tablespace" | "database") => true,
        // A user mapping belongs to a foreign server of this database.
        ("alter" | "drop", "role" | "user" | "group") => word(2) != "mapping",
        _ => false,
    };
    wide.then(|| format!("{} {}", word(0), word(1)).to_ascii_uppercase())
}

/// `FROM STDIN` or `TO STDOUT` when the statement is a `COPY` that exchanges its data with
/// the client, which only psql-like clients can do.
pub fn client_copy(statement: &str) -> Option<&'static str> {
    // Lazy: every deploy reads every file, and most statements stop at their first word.
    let mut words = Lexer::new(statement)
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| statement[t.start..t.end].to_ascii_lowercase());
    if words.next()? != "copy" {
        return None;
    }
    let mut previous = String::new();
    for word in words {
        match (previous.as_str(), word.as_str()) {
            ("from", "stdin") => return Some("FROM STDIN"),
            ("to", "stdout") => return Some("TO STDOUT"),
            _ => previous = word,
        }
    }
    None
}

/// The index name of a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON ...`
/// statement, as Postgres stores it (unquoted names folded to lower case). `None` for any
/// other statement and for unnamed concurrent index builds.
pub fn concurrent_index_name(statement: &str) -> Option<String> {
    let mut tokens = Lexer::new(statement).map(|t| (t.kind, &statement[t.start..t.end]));
    let mut next_word = || match tokens.next() {
        Some((TokenKind::Word, text)) => Some(Name::Plain(text.to_ascii_lowercase())),
        Some((TokenKind::QuotedIdent, text)) => Some(Name::Quoted(text[1..text.len() - 1].replace("\"\"", "\""))),
        _ => None,
    };
    let keyword = |name: &Option<Name>, word: &str| matches!(name, Some(Name::Plain(w)) if w == word);
    if !keyword(&next_word(), "create") {
        return None;
    }
    let mut word = next_word();
    if keyword(&word, "unique") {
        word = next_word();
    }
    if !keyword(&word, "index") || !keyword(&next_word(), "concurrently") {
        return None;
    }
    let mut word = next_word();
    if keyword(&word, "if") {
        if !keyword(&next_word(), "not") || !keyword(&next_word(), "exists") {
            return None;
        }
        word = next_word();
    }
    match word {
        Some(Name::Plain(w)) if w == "on" => None,
        Some(Name::Plain(w)) | Some(Name::Quoted(w)) => Some(w),
        None => None,
    }
}

enum Name {
    Plain(String),
    Quoted(String),
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_tag_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

struct Lexer<'a> {
    bytes: &'a [u8],
    sql: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str) -> Self {
        Lexer { bytes: sql.as_bytes(), sql, pos: 0 }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn skip_blanks_and_comments(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    self.pos = match self.sql[self.pos..].find('\n') {
                        Some(n) => self.pos + n + 1,
                        None => self.bytes.len(),
                    }
                }
                (Some(b'/'), Some(b'*')) => self.skip_block_comment(),
                _ => return,
            }
        }
    }

    /// Block comments nest in Postgres, unlike in the SQL standard.
    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.bytes.len() {
            match (self.peek(0), self.peek(1)) {
                (Some(b'/'), Some(b'*')) => {
                    depth += 1;
                    self.pos += 2;
                }
                (Some(b'*'), Some(b'/')) => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a quoted run that starts at `self.pos` (on the opening quote); a doubled quote
    /// stands for itself, and with `backslash` a backslash escapes the next byte (`E''`).
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            if backslash && b == b'\\' {
                self.pos += 2;
            } else if b == quote {
                if self.peek(1) == Some(quote) {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
        self.pos = self.bytes.len();
    }

    /// At a `$`: if it opens a dollar quote (`$$` or `$tag$`), skips to after the closing
    /// delimiter and returns true.
    fn skip_dollar_quote(&mut self) -> bool {
        let rest = &self.bytes[self.pos + 1..];
        let tag_len = match rest.first() {
            Some(b'$') => 0,
            Some(&b) if is_tag_start(b) => match rest.iter().position(|&b| !is_ident_byte(b) || b == b'$') {
                Some(n) if rest[n] == b'$' => n,
                _ => return false,
            },
            _ => return false,
        };
        let delimiter = &self.sql[self.pos..self.pos + tag_len + 2];
        let body_start = self.pos + delimiter.len();
        self.pos = match self.sql[body_start..].find(delimiter) {
            Some(n) => body_start + n + delimiter.len(),
            None => self.bytes.len(),
        };
        true
    }

    fn skip_word(&mut self) {
        while matches!(self.peek(0), Some(b) if is_ident_byte(b)) {
            self.pos += 1;
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.skip_blanks_and_comments();
        let start = self.pos;
        let first = self.peek(0)?;
        let kind = match first {
            b';' => {
                self.pos += 1;
                TokenKind::Semicolon
            }
            b'\'' => {
                self.skip_quoted(b'\'', false);
                TokenKind::Literal
            }
            b'"' => {
                self.skip_quoted(b'"', false);
                TokenKind::QuotedIdent
            }
            b'$' if self.skip_dollar_quote() => TokenKind::Literal,
            b'E' | b'e' if self.peek(1) == Some(b'\'') => {
                self.pos += 1;
                self.skip_quoted(b'\'', true);
                TokenKind::Literal
            }
            b if is_ident_byte(b) && b != b'$' => {
                self.skip_word();
                TokenKind::Word
            }
            _ => {
                // Step over a whole UTF-8 character so slices stay on char boundaries.
                let width = self.sql[start..].chars().next().map_or(1, char::len_utf8);
                self.pos += width;
                TokenKind::Punct
            }
        };
        Some(Token { kind, start, end: self.pos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_copy_statements_that_need_the_client() {
        assert_eq!(client_copy("COPY public.t (a, b) FROM stdin;"), Some("FROM STDIN"));
        assert_eq!(client_copy("copy t from STDIN with (format csv)"), Some("FROM STDIN"));
        assert_eq!(client_copy("COPY (SELECT 1) TO STDOUT"), Some("TO STDOUT"));
        assert_eq!(client_copy("COPY t FROM '/srv/data.csv'"), None);
        assert_eq!(client_copy("COPY stdin_log FROM '/srv/x'"), None);
        assert_eq!(client_copy("SELECT 'COPY t FROM STDIN'"), None);
        assert_eq!(client_copy("-- COPY t FROM STDIN\nSELECT 1"), None);
    }
    use proptest::prelude::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let sql = "CREATE TABLE a (x text DEFAULT 'a;b''c');\n\
                   -- a comment; with a semicolon\n\
                   INSERT INTO \"we;ird\" VALUES (E'it\\'s; fine');\n\
                   /* outer /* nested; */ still comment; */ SELECT 1;\n\
                   CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql;\n\
                   DO $$ BEGIN PERFORM 1; END $$";
        assert_eq!(
            texts(sql),
            vec![
                "CREATE TABLE a (x text DEFAULT 'a;b''c')",
                "INSERT INTO \"we;ird\" VALUES (E'it\\'s; fine')",
                "SELECT 1",
                "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END $body$ LANGUAGE plpgsql",
                "DO $$ BEGIN PERFORM 1; END $$",
            ]
        );
    }

    #[test]
    fn keeps_standard_function_bodies_whole() {
        let sql = "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END;\nSELECT 3;";
        assert_eq!(
            texts(sql),
            vec!["CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; SELECT 2; END", "SELECT 3"]
        );
        assert_eq!(texts("BEGIN; SELECT 1; END;"), vec!["BEGIN", "SELECT 1", "END"]);
    }

    #[test]
    fn first_words_name_transaction_control() {
        for sql in ["BEGIN", "begin work", "COMMIT", "END", "ROLLBACK", "START TRANSACTION", "ABORT"] {
            assert!(is_transaction_control(sql), "{sql}");
        }
        for sql in ["ROLLBACK TO SAVEPOINT a", "SAVEPOINT a", "SELECT 1", "CREATE TABLE begin_x ()"] {
            assert!(!is_transaction_control(sql), "{sql}");
        }
    }

    #[test]
    fn dollar_quote_tags_must_match() {
        let sql = "SELECT $a$ x $b$ ; $a$; SELECT 2";
        assert_eq!(texts(sql), vec!["SELECT $a$ x $b$ ; $a$", "SELECT 2"]);
    }

    #[test]
    fn parameters_and_dollars_in_identifiers_are_not_quotes() {
        assert_eq!(
            texts("SELECT $1; SELECT a$b$ FROM t; SELECT 3"),
            vec!["SELECT $1", "SELECT a$b$ FROM t", "SELECT 3"]
        );
    }

    #[test]
    fn standard_strings_keep_backslashes_literal() {
        assert_eq!(texts(r"SELECT 'C:\'; SELECT 2"), vec![r"SELECT 'C:\'", "SELECT 2"]);
    }

    #[test]
    fn drops_empty_statements_and_reports_offsets() {
        let sql = ";; -- only a comment\n;\n  SELECT 1 ;  /* tail */";
        let statements = split(sql);
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0].text, "SELECT 1");
        assert_eq!(&sql[statements[0].offset..][..8], "SELECT 1");
    }

    #[test]
    fn unterminated_quote_runs_to_the_end() {
        assert_eq!(texts("SELECT 'open; SELECT 2"), vec!["SELECT 'open; SELECT 2"]);
    }

    #[test]
    fn finds_concurrent_index_names() {
        let cases = [
            ("CREATE INDEX CONCURRENTLY users_email_idx ON users (email)", Some("users_email_idx")),
            ("create unique index concurrently if not exists Users_Email ON users (email)", Some("users_email")),
            ("CREATE INDEX CONCURRENTLY \"Mixed\"\"Case\" ON t (x)", Some("Mixed\"Case")),
            ("CREATE INDEX /* c */ CONCURRENTLY -- c\n ix ON t (x)", Some("ix")),
            ("CREATE INDEX CONCURRENTLY ON t (x)", None),
            ("CREATE INDEX ix ON t (x)", None),
            ("DROP INDEX CONCURRENTLY ix", None),
        ];
        for (sql, name) in cases {
            assert_eq!(concurrent_index_name(sql).as_deref(), name, "{sql}");
        }
    }

    /// Pieces a statement can be built from; each may hold a `;` that must not split.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_][a-z0-9_]{0,8}",
            "[0-9]{1,4}",
            "[a-z ;]{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            "[a-z ;']{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            "[a-z ;\\\\']{0,8}".prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
            "[a-z ;\"]{0,8}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
            ("[a-z]{0,4}", "[a-z ;$']{0,12}").prop_filter_map("tag inside body", |(tag, body)| {
                let delimiter = format!("${tag}$");
                let closed = format!("{body}{delimiter}");
                (closed.find(&delimiter) == Some(body.len())).then(|| format!("{delimiter}{closed}"))
            }),
            "[a-z ;']{0,8}".prop_map(|s| format!("/* {s} /* {s}; */ */")),
            "[a-z ;']{0,8}".prop_map(|s| format!("-- {s}\n")),
            Just("(".to_string()),
            Just("),".to_string()),
        ]
    }

    fn statement() -> impl Strategy<Value = String> {
        ("[a-z]{1,6}", prop::collection::vec(fragment(), 0..8), "[a-z]{1,6}")
            .prop_map(|(head, middle, tail)| format!("{head} {} {tail}", middle.join(" ")))
    }

    proptest! {
        #[test]
        fn splitting_joined_statements_gives_them_back(statements in prop::collection::vec(statement(), 1..6), sep in prop_oneof![Just(";"), Just(";\n"), Just(" ;\r\n-- x;\n")]) {
            let sql = statements.join(sep);
            let parts = split(&sql);
            prop_assert_eq!(parts.iter().map(|s| s.text).collect::<Vec<_>>(), statements.iter().map(String::as_str).collect::<Vec<_>>());
            for part in parts {
                prop_assert_eq!(&sql[part.offset..part.offset + part.text.len()], part.text);
            }
        }
    }

    #[test]
    fn statements_that_change_the_whole_server() {
        assert_eq!(cluster_wide("ALTER SYSTEM SET work_mem = '8MB'").as_deref(), Some("ALTER SYSTEM"));
        assert_eq!(cluster_wide("/* x */ alter role app set search_path = a").as_deref(), Some("ALTER ROLE"));
        assert_eq!(cluster_wide("DROP TABLESPACE fast").as_deref(), Some("DROP TABLESPACE"));
        assert_eq!(cluster_wide("CREATE DATABASE other").as_deref(), Some("CREATE DATABASE"));
        assert_eq!(cluster_wide("ALTER USER MAPPING FOR app SERVER s OPTIONS (x 'y')"), None);
        assert_eq!(cluster_wide("CREATE ROLE reporting"), None);
        assert_eq!(cluster_wide("ALTER TABLE t ADD c int"), None);
    }
}
