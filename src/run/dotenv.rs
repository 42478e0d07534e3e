//! `--env-file`: variables from a dotenv file, for local runs (as sqlx and dbmate users expect).
//! Never loaded implicitly; variables already in the environment win over the file's.

use std::path::Path;

/// A dotenv file that cannot be used. Names the file and line, never the line's text (it may
/// hold a password).
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("--env-file {file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("--env-file {file}: line {line} is not KEY=VALUE (KEY: letters, digits, _; not starting with a digit)")]
    BadLine { file: String, line: usize },
    #[error("--env-file {file}: line {line} opens a quote that never closes")]
    Unterminated { file: String, line: usize },
}

/// Reads `path`: `KEY=VALUE` lines, `export KEY=VALUE`, `#` comments, blank lines, values in
/// double quotes (with `\n`, `\"` and `\\` escapes, spanning lines) or single quotes (literal),
/// and unquoted values (trimmed, a ` #` comment dropped).
pub fn read(path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| EnvFileError::Unreadable { file: file.clone(), reason: e.to_string() })?;
    parse(&text).map_err(|(line, unterminated)| match unterminated {
        true => EnvFileError::Unterminated { file, line },
        false => EnvFileError::BadLine { file, line },
    })
}

/// The pairs in order; on error the 1-based line and whether a quote was left open.
fn parse(text: &str) -> Result<Vec<(String, String)>, (usize, bool)> {
    let mut vars = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let (key, value) = line.split_once('=').ok_or((line_no, false))?;
        let key = key.trim();
        let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err((line_no, false));
        }
        let value = value.trim_start();
        let value = if let Some(rest) = value.strip_prefix('"') {
            let mut text = rest.to_string();
            loop {
                if let Some(end) = closing_quote(&text) {
                    break unescape(&text[..end]);
                }
                match lines.next() {
                    Some((_, more)) => {
                        text.push('\n');
                        text.push_str(more);
                    }
                    None => return Err((line_no, true)),
                }
            }
        } else if let Some(rest) = value.strip_prefix('\'') {
            rest.split_once('\'').map(|(inside, _)| inside.to_string()).ok_or((line_no, true))?
        } else {
            let cut = value.find(" #").unwrap_or(value.len());
            value[..cut].trim_end().to_string()
        };
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

/// The byte index of the first `"` not escaped by a backslash.
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dotenv_forms_tools_write() {
        let text = "# local\n\nDATABASE_URL=postgres://app:pw@localhost/app\nexport MIGRUN_DIR = db/migrations\nA=\"x \\\"q\\\" \\n y\"\nB='literal $x \\n'\nC=plain # comment\nD=\"two\nlines\"\nE=\n";
        let vars = parse(text).unwrap();
        let get = |k: &str| vars.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DATABASE_URL"), Some("postgres://app:pw@localhost/app"));
        assert_eq!(get("MIGRUN_DIR"), Some("db/migrations"));
        assert_eq!(get("A"), Some("x \"q\" \n y"));
        assert_eq!(get("B"), Some("literal $x \\n"));
        assert_eq!(get("C"), Some("plain"));
        assert_eq!(get("D"), Some("two\nlines"));
        assert_eq!(get("E"), Some(""));
        assert_eq!(parse("just a line\n"), Err((1, false)));
        assert_eq!(parse("OK=1\n1BAD=x\n"), Err((2, false)));
        assert_eq!(parse("A=\"open\n"), Err((1, true)));
    }
}
