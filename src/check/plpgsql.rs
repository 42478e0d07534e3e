//! What a `DO` block runs: its body parsed by PL/pgSQL's own parser (libpg_query), and the
//! SQL statements in it whose text is known before it runs (static statements, and EXECUTE
//! of a constant string). An EXECUTE of a string built at run time cannot be seen.

use serde_json::Value;

/// The statements a DO block runs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// Their text, in the order they appear.
    pub statements: Vec<String>,
    /// EXECUTEs of strings built at run time.
    pub dynamic: usize,
}

/// The body of `DO $$ ... $$` (the text between the quotes), when it is PL/pgSQL that parses.
pub fn body(source: &str) -> Option<Body> {
    let tag = (0..).map(|n| format!("$migrun{n}$")).find(|tag| !source.contains(tag.as_str()))?;
    let function = format!("CREATE FUNCTION migrun_do() RETURNS void LANGUAGE plpgsql AS {tag}{source}{tag}");
    let tree = pg_query::parse_plpgsql(&function).ok()?;
    let mut body = Body::default();
    collect(&tree, &mut body);
    Some(body)
}

fn collect(value: &Value, body: &mut Body) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match key.as_str() {
                    "PLpgSQL_stmt_execsql" => {
                        if let Some(query) = query_of(child.get("sqlstmt")) {
                            body.statements.push(query.to_string());
                        }
                    }
                    "PLpgSQL_stmt_dynexecute" => match query_of(child.get("query")).and_then(constant_string) {
                        Some(text) => body.statements.push(text),
                        None => body.dynamic += 1,
                    },
                    _ => {}
                }
                collect(child, body);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, body)),
        _ => {}
    }
}

fn query_of(expr: Option<&Value>) -> Option<&str> {
    expr?.get("PLpgSQL_expr")?.get("query")?.as_str()
}

/// `'CREATE INDEX ...'` → its text; anything else (a concatenation, format()) → None.
fn constant_string(expression: &str) -> Option<String> {
    let inner = expression.trim().strip_prefix('\'')?.strip_suffix('\'')?;
    let mut text = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Inside the literal a quote must be doubled; a lone one ends it early.
            if chars.next() != Some('\'') {
                return None;
            }
        }
        text.push(c);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_statements_and_constant_executes_are_seen_and_dynamic_ones_counted() {
        let found = body(
            "DECLARE r record; BEGIN IF true THEN ALTER TABLE users RENAME COLUMN bio TO about; END IF;
             EXECUTE 'CREATE INDEX a ON users (x)'; EXECUTE format('DROP TABLE %I', 't');
             FOR r IN SELECT 1 LOOP UPDATE t SET a = 1; END LOOP;
             BEGIN CREATE TYPE p AS ENUM ('a'); EXCEPTION WHEN others THEN NULL; END; END",
        )
        .expect("parses");
        assert_eq!(
            found.statements,
            [
                "ALTER TABLE users RENAME COLUMN bio TO about",
                "CREATE INDEX a ON users (x)",
                "UPDATE t SET a = 1",
                "CREATE TYPE p AS ENUM ('a')"
            ]
        );
        assert_eq!(found.dynamic, 1);
    }

    #[test]
    fn quotes_inside_an_executed_constant_are_undoubled() {
        assert_eq!(constant_string("'UPDATE t SET a = ''x'''"), Some("UPDATE t SET a = 'x'".into()));
        assert_eq!(constant_string("'a' || b"), None);
    }
}
