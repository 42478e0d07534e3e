//! A database's schema as canonical text: one block per object (a table with its columns,
//! constraints, indexes, triggers, policies, comments and privileges; a function; a type...),
//! blocks in a fixed order, items in a fixed order inside each block. Two schemas are the same
//! when their blocks are.
//!
//! The text form, which `schema --write` commits and `diff --against` reads back:
//!
//! ```text
//! -- a comment line (only before the first block)
//! table public.users
//!   column public.users.id integer not null
//!   function CREATE OR REPLACE FUNCTION ...
//!   | LANGUAGE sql
//! ```
//!
//! A block starts with its header (`<kind> <name>`) at the margin; each item is indented two
//! spaces; an item's further lines follow as `  | `. A blank line ends a block.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::query;

/// Kinds of object, in the order their blocks are written.
const KINDS: [&str; 21] = [
    "schema",
    "extension",
    "collation",
    "type",
    "domain",
    "sequence",
    "table",
    "foreign table",
    "view",
    "materialized view",
    "function",
    "procedure",
    "aggregate",
    "cast",
    "operator",
    "access method",
    "event trigger",
    "publication",
    "foreign data wrapper",
    "server",
    "default privileges",
];

/// Which object a block describes: its kind and its qualified name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Object {
    rank: usize,
    /// `table`, `function`, `type`...
    pub kind: String,
    /// `public.users`, `public.total(integer)`...
    pub name: String,
}

impl Object {
    fn new(kind: &str, name: &str) -> Object {
        let rank = KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len());
        Object { rank, kind: kind.to_string(), name: name.to_string() }
    }

    /// `<kind> <name>`, the block's first line.
    pub fn header(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }

    /// The object a header line names; `None` when it starts with no known kind.
    fn from_header(line: &str) -> Option<Object> {
        KINDS
            .iter()
            .filter_map(|kind| line.strip_prefix(kind).and_then(|rest| rest.strip_prefix(' ')).map(|name| (kind, name)))
            .max_by_key(|(kind, _)| kind.len())
            .map(|(kind, name)| Object::new(kind, name))
    }
}

/// A schema: every object's items, in canonical order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    blocks: BTreeMap<Object, Vec<String>>,
}

/// What to read besides what `pg_dump --schema-only --no-owner` shows.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Who owns each object (pg_dump without `--no-owner`).
    pub owners: bool,
    /// migrun's own tables, as quoted names (`"public"."migrun_history"`): left out, with
    /// everything on them.
    pub exclude: Vec<String>,
    /// Only this schema (and the objects outside any schema).
    pub schema: Option<String>,
}

/// A line of a schema file that is not a header, an item or a comment.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// The PostgreSQL major `client` is connected to.
pub async fn server_major(client: &Client) -> Result<u32, tokio_postgres::Error> {
    let row = client.query_one("SELECT pg_catalog.current_setting('server_version_num')::int / 10000", &[]).await?;
    Ok(row.try_get::<_, i32>(0)?.max(0) as u32)
}

/// The schema of the database `client` is on, as `pg_dump --schema-only --no-owner` sees it.
pub async fn read_database(client: &Client) -> Result<Schema, tokio_postgres::Error> {
    let major = server_major(client).await?;
    read(client, major, &ReadOptions::default()).await
}

/// The schema of the database `client` is on (inside the client's transaction, when one is
/// open: a migration's own changes are seen before they commit).
pub async fn read(client: &Client, major: u32, options: &ReadOptions) -> Result<Schema, tokio_postgres::Error> {
    let sql = query::sql(major, options.owners);
    let rows = client.query_typed(&sql, &[(&options.exclude, Type::TEXT_ARRAY), (&options.schema, Type::TEXT)]).await?;
    let mut items: BTreeMap<Object, Vec<(i32, i32, String)>> = BTreeMap::new();
    for row in &rows {
        let (kind, name): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let (rank, position, item): (i32, i32, Option<String>) = (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
        let object = Object::new(&kind, &name);
        let entry = items.entry(object.clone()).or_default();
        // A header row only makes sure the block exists; NULL items (an expression of a
        // dropped column) are nothing to compare.
        if let Some(item) = item.filter(|i| *i != object.header()) {
            entry.push((rank, position, item));
        }
    }
    let blocks = items
        .into_iter()
        .map(|(object, mut list)| {
            list.sort();
            list.dedup();
            (object, list.into_iter().map(|(_, _, item)| item).collect())
        })
        .collect();
    Ok(Schema { blocks })
}

impl Schema {
    /// The same schema without who owns what (the items `--owners` adds).
    pub fn without_owners(mut self) -> Schema {
        for items in self.blocks.values_mut() {
            items.retain(|item| !item.starts_with("owner of "));
        }
        self
    }

    /// How many objects it holds.
    pub fn objects(&self) -> usize {
        self.blocks.len()
    }

    /// Every header and item, one string each (multi-line items whole).
    #[cfg(test)]
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.blocks.iter().flat_map(|(object, items)| std::iter::once(object.header()).chain(items.iter().cloned()))
    }

    /// The canonical text (no comment lines).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (object, items) in &self.blocks {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&object.header());
            out.push('\n');
            for item in items {
                let mut lines = item.split('\n');
                let _ = writeln!(out, "  {}", lines.next().unwrap_or_default());
                for more in lines {
                    match more.is_empty() {
                        true => out.push_str("  |\n"),
                        false => {
                            let _ = writeln!(out, "  | {more}");
                        }
                    }
                }
            }
        }
        out
    }

    /// SHA-256 of the canonical text, in hex.
    pub fn hash(&self) -> String {
        Sha256::digest(self.text().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the text form back (comment lines before the first block are skipped).
    pub fn parse(text: &str) -> Result<Schema, ParseError> {
        let mut blocks: BTreeMap<Object, Vec<String>> = BTreeMap::new();
        let mut current: Option<Object> = None;
        for (at, line) in text.lines().enumerate() {
            let fail = |message: &str| ParseError { line: at + 1, message: message.to_string() };
            if line.is_empty() {
                current = None;
            } else if let Some(more) = line.strip_prefix("  |") {
                let more = more.strip_prefix(' ').unwrap_or(more);
                let items =
                    current.as_ref().and_then(|o| blocks.get_mut(o)).ok_or_else(|| fail("`  |` outside an item"))?;
                let last = items.last_mut().ok_or_else(|| fail("`  |` before the block's first item"))?;
                last.push('\n');
                last.push_str(more);
            } else if let Some(item) = line.strip_prefix("  ") {
                let object = current.as_ref().ok_or_else(|| fail("an item outside a block"))?;
                blocks.entry(object.clone()).or_default().push(item.to_string());
            } else if line.starts_with("--") && blocks.is_empty() {
                continue;
            } else {
                let object = Object::from_header(line)
                    .ok_or_else(|| fail("expected `<kind> <name>`, an item or a blank line"))?;
                if blocks.insert(object.clone(), Vec::new()).is_some() {
                    return Err(fail("this object's block was already given"));
                }
                current = Some(object);
            }
        }
        Ok(Schema { blocks })
    }

    /// Every object that differs, in order, with its lines marked `-` (only in `self`) and `+`
    /// (only in `other`).
    pub fn compare(&self, other: &Schema) -> Vec<ObjectDiff> {
        let mut keys: Vec<&Object> = self.blocks.keys().chain(other.blocks.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|object| {
                let (ours, theirs) = (self.blocks.get(object), other.blocks.get(object));
                let (change, lines) = match (ours, theirs) {
                    (Some(a), Some(b)) if a == b => return None,
                    (Some(a), Some(b)) => (Change::Changed, line_diff(a, b)),
                    (Some(a), None) => (Change::Removed, whole(object, a, '-')),
                    (None, Some(b)) => (Change::Added, whole(object, b, '+')),
                    (None, None) => return None,
                };
                Some(ObjectDiff { kind: object.kind.clone(), name: object.name.clone(), change, lines })
            })
            .collect()
    }

    /// Lines in one schema and not the other, marked `-` (only in `expected`) and `+`, every
    /// object's lines together.
    pub fn differences(expected: &Schema, actual: &Schema) -> Vec<String> {
        expected.compare(actual).into_iter().flat_map(|d| d.lines).collect()
    }
}

/// How an object differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second schema (the live database, for `diff`).
    Added,
    /// Only in the first (the snapshot, file or folder).
    Removed,
    /// In both, with other items.
    Changed,
}

/// One object that differs between two schemas.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectDiff {
    pub kind: String,
    pub name: String,
    pub change: Change,
    /// `- item` and `+ item` lines (the header too, when the object is only on one side).
    pub lines: Vec<String>,
}

impl ObjectDiff {
    /// `kind name: first line`, for one-line messages.
    pub fn summary(&self) -> String {
        let line = self.lines.first().map(|l| l.lines().next().unwrap_or_default()).unwrap_or_default();
        format!("{} {}: {line}", self.kind, self.name)
    }
}

fn whole(object: &Object, items: &[String], sign: char) -> Vec<String> {
    std::iter::once(object.header()).chain(items.iter().cloned()).map(|item| format!("{sign} {item}")).collect()
}

/// The items of `a` and `b` that a longest common subsequence leaves out, in order: a column
/// moved to another position shows as removed and added, as it does in pg_dump's text.
fn line_diff(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            (i, j) = (i + 1, j + 1);
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("- {}", a[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(blocks: &[(&str, &str, &[&str])]) -> Schema {
        Schema {
            blocks: blocks
                .iter()
                .map(|(k, n, items)| (Object::new(k, n), items.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn text_form_reads_back_exactly() {
        let s = schema(&[
            ("table", "public.users", &["column public.users.id integer not null", "column public.users.name text"]),
            ("function", "public.f()", &["function CREATE FUNCTION f()\n\n  AS $$ select 1 $$  \n"]),
            ("materialized view", "public.mv", &[]),
            ("default privileges", "alice tables", &["grant SELECT on new tables to PUBLIC"]),
        ]);
        let text = s.text();
        assert!(text.contains("\n  |\n  |   AS $$ select 1 $$  \n  |\n"), "{text}");
        let back = Schema::parse(&format!("-- written by migrun\n{text}")).expect("parses");
        assert_eq!(back, s);
        assert_eq!(back.hash(), s.hash());
    }

    #[test]
    fn parse_names_the_bad_line() {
        let error = Schema::parse("table public.a\n  column x\nnonsense here\n").expect_err("refused");
        assert_eq!(error.line, 3);
        assert!(Schema::parse("  column x\n").is_err());
        assert!(Schema::parse("table public.a\n\ntable public.a\n").is_err());
    }

    #[test]
    fn compare_groups_by_object_and_keeps_column_order() {
        let a =
            schema(&[("table", "public.t", &["column a", "column b", "column c"]), ("view", "public.v", &["view x"])]);
        let b =
            schema(&[("table", "public.t", &["column a", "column c", "column b"]), ("type", "public.e", &["enum"])]);
        let diffs = a.compare(&b);
        let summary: Vec<(String, Change)> = diffs.iter().map(|d| (d.name.clone(), d.change)).collect();
        assert_eq!(
            summary,
            [
                ("public.e".into(), Change::Added),
                ("public.t".into(), Change::Changed),
                ("public.v".into(), Change::Removed)
            ]
        );
        assert_eq!(diffs[1].lines, ["- column b", "+ column b"]);
        assert_eq!(diffs[2].lines, ["- view public.v", "- view x"]);
        assert!(a.compare(&a).is_empty());
    }
}
