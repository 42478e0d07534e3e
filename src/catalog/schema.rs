//! A database's schema as sorted lines of text, read from the catalogs (no pg_dump): two
//! schemas are the same when their lines are. Objects that extensions own are left out.

use std::collections::BTreeSet;

use tokio_postgres::Client;

/// One line per column, constraint, index, view, function, trigger, sequence, enum, extension
/// and schema, outside the system schemas.
const SCHEMA_SQL: &str = "
WITH user_ns AS (
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%'
), ext AS (
    SELECT objid FROM pg_depend WHERE deptype = 'e'
)
SELECT format('schema %I', nspname) FROM user_ns
UNION ALL
SELECT format('extension %I', extname) FROM pg_extension
UNION ALL
SELECT format('relation %I.%I %s', n.nspname, c.relname, c.relkind)
FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT format('column %I.%I.%I %s%s%s', n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
              CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
              coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN user_ns n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT format('constraint %I.%I %I %s', n.nspname, c.relname, co.conname, pg_get_constraintdef(co.oid))
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN user_ns n ON n.oid = c.relnamespace
UNION ALL
SELECT format('index %s%s', pg_get_indexdef(i.indexrelid), CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN user_ns n ON n.oid = c.relnamespace
WHERE c.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT format('view %I.%I %s', n.nspname, c.relname, pg_get_viewdef(c.oid))
FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND c.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT format('function %s', pg_get_functiondef(p.oid))
FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p') AND p.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT format('trigger %s', pg_get_triggerdef(t.oid))
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN user_ns n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal
UNION ALL
SELECT format('enum %I.%I %s', n.nspname, t.typname, (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid))
FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace WHERE t.typtype = 'e' AND t.oid NOT IN (SELECT objid FROM ext)
";

/// The schema of the database `client` is on.
pub async fn read(client: &Client) -> Result<BTreeSet<String>, tokio_postgres::Error> {
    let rows = client.query(SCHEMA_SQL, &[]).await?;
    rows.iter().map(|r| r.try_get::<_, String>(0)).collect()
}

/// Lines in one schema and not the other, marked `-` (only in `expected`) and `+`.
pub fn differences(expected: &BTreeSet<String>, actual: &BTreeSet<String>) -> Vec<String> {
    let missing = expected.difference(actual).map(|l| format!("- {l}"));
    let extra = actual.difference(expected).map(|l| format!("+ {l}"));
    missing.chain(extra).collect()
}
