//! The catalog query: one statement (one snapshot of the catalogs) returning every item of the
//! schema as `(kind, name, rank, position, item)` rows, for the PostgreSQL major it runs on.
//!
//! What counts is what `pg_dump --schema-only --no-owner` would write: every object outside
//! the system schemas that an extension does not own, with its options, comments and
//! privileges. Privileges are written as differences from the object's default (its owner
//! holds everything, PUBLIC what Postgres gives it), the owner spelled `OWNER`, so two
//! databases with the same grants and other owners read the same, as pg_dump --no-owner does.

/// The statement for server major `major` (13 and newer). `$1` is a `text[]` of migrun's own
/// tables (quoted names): they, their sequences and everything on them are left out. `$2`, when
/// not NULL, is the one schema to read (a fan-out schema target: each tenant's snapshot holds its
/// own schema, not every tenant's); objects outside any schema are read either way.
pub fn sql(major: u32, owners: bool) -> String {
    let compression = match major {
        13 => "''",
        _ => "CASE a.attcompression WHEN 'p' THEN ' compression pglz' WHEN 'l' THEN ' compression lz4' ELSE '' END",
    };
    let publication_rel = match major {
        13 | 14 => "''",
        _ => "coalesce(' (' || (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = pr.prrelid AND attnum = ANY (pr.prattrs)) || ')', '') || coalesce(' where (' || pg_get_expr(pr.prqual, pr.prrelid) || ')', '')",
    };
    let publication_schemas = match major {
        13 | 14 => String::new(),
        _ => "UNION ALL
SELECT 'publication', quote_ident(p.pubname), 2, 0, format('publication %I schema %I', p.pubname, n.nspname)
FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid JOIN pg_namespace n ON n.oid = pn.pnnspid"
            .to_string(),
    };
    let mut sql = SQL
        .replace("{compression}", compression)
        .replace("{publication_rel}", publication_rel)
        .replace("{publication_schemas}", &publication_schemas);
    if owners {
        sql.push_str(OWNERS);
    }
    sql
}

/// Who owns each object, for `--owners` (pg_dump without --no-owner).
const OWNERS: &str = "
UNION ALL
SELECT 'schema', quote_ident(n.nspname), 7, 0, format('owner of schema %I is %I', n.nspname, pg_get_userbyid(n.nspowner))
FROM ns n WHERE n.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_namespace'::regclass)
UNION ALL
SELECT r.kind, r.qname, 7, 0, format('owner of %s %s is %I', r.kind, r.qname, pg_get_userbyid(r.relowner)) FROM rel r
UNION ALL
SELECT CASE WHEN f.prokind = 'p' THEN 'procedure' WHEN f.prokind = 'a' THEN 'aggregate' ELSE 'function' END, f.qname, 7, 0,
       format('owner of function %s is %I', f.qname, pg_get_userbyid(f.proowner))
FROM fn f
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, t.qname, 7, 0, format('owner of type %s is %I', t.qname, pg_get_userbyid(t.typowner))
FROM typ t
UNION ALL
SELECT 'publication', quote_ident(p.pubname), 7, 0, format('owner of publication %I is %I', p.pubname, pg_get_userbyid(p.pubowner))
FROM pg_publication p
UNION ALL
SELECT 'event trigger', quote_ident(e.evtname), 7, 0, format('owner of event trigger %I is %I', e.evtname, pg_get_userbyid(e.evtowner))
FROM pg_event_trigger e WHERE e.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_event_trigger'::regclass)
";

/// `{compression}`, `{publication_rel}` and `{publication_schemas}` vary by major. Ranks order
/// the items of one object: 0 its header, 1 properties, 2 columns (by position), 3
/// constraints, 4 indexes, 5 triggers, rules and policies, 6 statistics, 8 comments, 9 privileges.
const SQL: &str = r#"
WITH own AS (
    SELECT r.oid FROM unnest($1::text[]) AS t(name) CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(t.name) AS oid) r
    WHERE r.oid IS NOT NULL
), ns AS (
    SELECT oid, nspname, nspowner, nspacl FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%'
      AND ($2::text IS NULL OR nspname = $2::text)
), ext AS (
    SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
), rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relowner, c.relacl, c.relpersistence, c.reloptions, c.reltablespace, c.relam,
           c.relreplident, c.relrowsecurity, c.relforcerowsecurity, c.relispartition, c.relpartbound, c.reltoastrelid,
           c.reloftype, n.nspname, format('%I.%I', n.nspname, c.relname) AS qname,
           CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                WHEN 'f' THEN 'foreign table' ELSE 'table' END AS kind
    FROM pg_class c JOIN ns n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND c.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_class'::regclass)
      AND c.oid NOT IN (SELECT oid FROM own)
      -- a sequence of migrun's own tables (bigserial) or an identity column's (shown with the column)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND c.relkind = 'S'
                      AND (d.deptype = 'i' OR d.refobjid IN (SELECT oid FROM own)))
), typ AS (
    SELECT t.oid, t.typname, t.typtype, t.typowner, t.typacl, t.typbasetype, t.typtypmod, t.typnotnull, t.typdefault,
           t.typcollation, t.typrelid, format('%I.%I', n.nspname, t.typname) AS qname
    FROM pg_type t JOIN ns n ON n.oid = t.typnamespace
    WHERE t.typtype IN ('e', 'd', 'c', 'r', 'b')
      AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
      AND (t.typtype <> 'b' OR t.typcategory <> 'A')
      AND t.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_type'::regclass)
), fn AS (
    SELECT p.oid, p.prokind, p.proowner, p.proacl, format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS qname
    FROM pg_proc p JOIN ns n ON n.oid = p.pronamespace
    WHERE p.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_proc'::regclass)
), obj AS (
    -- Every object a comment or privileges can be on: the block it belongs to, how items name
    -- it, its privileges and their default (NULL: none, as for a column).
    SELECT 'pg_namespace'::regclass AS classid, n.oid AS objid, 0 AS objsubid, 'schema' AS kind, quote_ident(n.nspname) AS name,
           format('schema %I', n.nspname) AS what, n.nspacl AS acl,
           coalesce((SELECT initprivs FROM pg_init_privs i WHERE i.objoid = n.oid AND i.classoid = 'pg_namespace'::regclass AND i.objsubid = 0),
                    acldefault('n', n.nspowner)) AS base, n.nspowner AS owner
    FROM ns n WHERE n.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_namespace'::regclass)
    UNION ALL
    SELECT 'pg_extension'::regclass, e.oid, 0, 'extension', quote_ident(e.extname), format('extension %I', e.extname), NULL, NULL, 0
    FROM pg_extension e
    UNION ALL
    SELECT 'pg_class'::regclass, r.oid, 0, r.kind, r.qname, format('%s %s', r.kind, r.qname), r.relacl,
           acldefault(CASE r.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", r.relowner), r.relowner
    FROM rel r
    UNION ALL
    SELECT 'pg_class'::regclass, r.oid, a.attnum, r.kind, r.qname, format('column %s.%I', r.qname, a.attname), a.attacl, NULL, r.relowner
    FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind <> 'S'
    UNION ALL
    SELECT 'pg_class'::regclass, i.indexrelid, 0, r.kind, r.qname, format('index %I.%I', r.nspname, ic.relname), NULL, NULL, 0
    FROM pg_index i JOIN rel r ON r.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
    UNION ALL
    SELECT 'pg_constraint'::regclass, co.oid, 0, coalesce(r.kind, 'domain'), coalesce(r.qname, t.qname), format('constraint %I', co.conname), NULL, NULL, 0
    FROM pg_constraint co LEFT JOIN rel r ON r.oid = co.conrelid LEFT JOIN typ t ON t.oid = co.contypid
    WHERE coalesce(r.qname, t.qname) IS NOT NULL
    UNION ALL
    SELECT 'pg_trigger'::regclass, tg.oid, 0, r.kind, r.qname, format('trigger %I', tg.tgname), NULL, NULL, 0
    FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid
    UNION ALL
    SELECT 'pg_rewrite'::regclass, ru.oid, 0, r.kind, r.qname, format('rule %I', ru.rulename), NULL, NULL, 0
    FROM pg_rewrite ru JOIN rel r ON r.oid = ru.ev_class
    UNION ALL
    SELECT 'pg_policy'::regclass, po.oid, 0, r.kind, r.qname, format('policy %I', po.polname), NULL, NULL, 0
    FROM pg_policy po JOIN rel r ON r.oid = po.polrelid
    UNION ALL
    SELECT 'pg_statistic_ext'::regclass, st.oid, 0, r.kind, r.qname, format('statistics %s', st.oid::regclass), NULL, NULL, 0
    FROM pg_statistic_ext st JOIN rel r ON r.oid = st.stxrelid
    UNION ALL
    SELECT 'pg_proc'::regclass, f.oid, 0, CASE WHEN f.prokind = 'p' THEN 'procedure' WHEN f.prokind = 'a' THEN 'aggregate' ELSE 'function' END,
           f.qname, format('function %s', f.qname), f.proacl, acldefault('f', f.proowner), f.proowner
    FROM fn f
    UNION ALL
    SELECT 'pg_type'::regclass, t.oid, 0, CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, t.qname, format('type %s', t.qname),
           t.typacl, acldefault('T', t.typowner), t.typowner
    FROM typ t
    UNION ALL
    SELECT 'pg_class'::regclass, t.typrelid, a.attnum, 'type', t.qname, format('column %s.%I', t.qname, a.attname), NULL, NULL, 0
    FROM typ t JOIN pg_attribute a ON a.attrelid = t.typrelid WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'pg_collation'::regclass, co.oid, 0, 'collation', format('%I.%I', n.nspname, co.collname), format('collation %I.%I', n.nspname, co.collname), NULL, NULL, 0
    FROM pg_collation co JOIN ns n ON n.oid = co.collnamespace
    WHERE co.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_collation'::regclass)
    UNION ALL
    SELECT 'pg_event_trigger'::regclass, e.oid, 0, 'event trigger', quote_ident(e.evtname), format('event trigger %I', e.evtname), NULL, NULL, 0
    FROM pg_event_trigger e WHERE e.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_event_trigger'::regclass)
    UNION ALL
    SELECT 'pg_publication'::regclass, p.oid, 0, 'publication', quote_ident(p.pubname), format('publication %I', p.pubname), NULL, NULL, 0
    FROM pg_publication p
    UNION ALL
    SELECT 'pg_operator'::regclass, o.oid, 0, 'operator', o.oid::regoperator::text, format('operator %s', o.oid::regoperator), NULL, NULL, 0
    FROM pg_operator o JOIN ns n ON n.oid = o.oprnamespace
    WHERE o.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_operator'::regclass)
    UNION ALL
    SELECT 'pg_foreign_data_wrapper'::regclass, w.oid, 0, 'foreign data wrapper', quote_ident(w.fdwname), format('foreign data wrapper %I', w.fdwname),
           w.fdwacl, acldefault('F', w.fdwowner), w.fdwowner
    FROM pg_foreign_data_wrapper w WHERE w.oid NOT IN (SELECT objid FROM ext)
    UNION ALL
    SELECT 'pg_foreign_server'::regclass, sv.oid, 0, 'server', quote_ident(sv.srvname), format('server %I', sv.srvname),
           sv.srvacl, acldefault('S', sv.srvowner), sv.srvowner
    FROM pg_foreign_server sv WHERE sv.oid NOT IN (SELECT objid FROM ext)
    UNION ALL
    SELECT 'pg_default_acl'::regclass, d.oid, 0, 'default privileges',
           format('%I%s %s', pg_get_userbyid(d.defaclrole), coalesce(' in ' || quote_ident(n.nspname), ''), x.what),
           'new ' || x.what, d.defaclacl,
           CASE WHEN d.defaclnamespace = 0 THEN acldefault(CASE d.defaclobjtype WHEN 'S' THEN 's' ELSE d.defaclobjtype END::"char", d.defaclrole) END,
           d.defaclrole
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
    CROSS JOIN LATERAL (SELECT CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                                    WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas' ELSE d.defaclobjtype::text END) x(what)
    WHERE $2::text IS NULL OR n.nspname = $2::text
)
SELECT 'schema', quote_ident(nspname), 0, 0, format('schema %I', nspname)
FROM ns WHERE oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_namespace'::regclass)
UNION ALL
SELECT 'extension', quote_ident(e.extname), 0, 0, format('extension %I', e.extname)
FROM pg_extension e
UNION ALL
SELECT 'extension', quote_ident(e.extname), 1, 0, format('extension %I schema %I version %s', e.extname, n.nspname, e.extversion)
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
UNION ALL
SELECT 'collation', format('%I.%I', n.nspname, co.collname), 0, 0, format('collation %I.%I', n.nspname, co.collname)
FROM pg_collation co JOIN ns n ON n.oid = co.collnamespace
WHERE co.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_collation'::regclass)
UNION ALL
SELECT 'collation', format('%I.%I', n.nspname, co.collname), 1, 0,
       format('collation %I.%I %s', n.nspname, co.collname,
              (to_jsonb(co) - 'oid' - 'collname' - 'collnamespace' - 'collowner' - 'collversion' - 'collencoding')::text)
FROM pg_collation co JOIN ns n ON n.oid = co.collnamespace
WHERE co.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_collation'::regclass)
UNION ALL
-- types: enums, domains, composite, range and base types
SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, t.qname, 0, 0,
       format('%s %s', CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, t.qname)
FROM typ t
UNION ALL
SELECT 'type', t.qname, 1, 0,
       format('enum %s %s', t.qname, (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid))
FROM typ t WHERE t.typtype = 'e'
UNION ALL
SELECT 'domain', t.qname, 1, 0,
       format('domain %s as %s%s%s%s', t.qname, format_type(t.typbasetype, t.typtypmod),
              CASE WHEN t.typcollation <> 0 AND t.typcollation <> (SELECT typcollation FROM pg_type WHERE oid = t.typbasetype)
                   THEN ' collate ' || (SELECT format('%I.%I', cn.nspname, c.collname) FROM pg_collation c JOIN pg_namespace cn ON cn.oid = c.collnamespace WHERE c.oid = t.typcollation) ELSE '' END,
              CASE WHEN t.typnotnull THEN ' not null' ELSE '' END, coalesce(' default ' || t.typdefault, ''))
FROM typ t WHERE t.typtype = 'd'
UNION ALL
SELECT 'domain', t.qname, 3, 0, format('constraint %s %I %s', t.qname, co.conname, pg_get_constraintdef(co.oid))
FROM typ t JOIN pg_constraint co ON co.contypid = t.oid WHERE t.typtype = 'd' AND co.contype <> 'n'
UNION ALL
SELECT 'type', t.qname, 2, a.attnum,
       format('attribute %s.%I %s%s', t.qname, a.attname, format_type(a.atttypid, a.atttypmod),
              CASE WHEN a.attcollation <> 0 AND a.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = a.atttypid)
                   THEN ' collate ' || (SELECT format('%I.%I', cn.nspname, c.collname) FROM pg_collation c JOIN pg_namespace cn ON cn.oid = c.collnamespace WHERE c.oid = a.attcollation) ELSE '' END)
FROM typ t JOIN pg_attribute a ON a.attrelid = t.typrelid WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'type', t.qname, 1, 0,
       format('range %s subtype %s%s%s%s%s', t.qname, format_type(r.rngsubtype, NULL),
              CASE WHEN r.rngcollation <> 0 THEN ' collation ' || r.rngcollation::regcollation::text ELSE '' END,
              ' opclass ' || (SELECT opcname FROM pg_opclass WHERE oid = r.rngsubopc),
              CASE WHEN r.rngcanonical <> 0 THEN ' canonical ' || r.rngcanonical::regproc::text ELSE '' END,
              CASE WHEN r.rngsubdiff <> 0 THEN ' subdiff ' || r.rngsubdiff::regproc::text ELSE '' END)
FROM typ t JOIN pg_range r ON r.rngtypid = t.oid WHERE t.typtype = 'r'
UNION ALL
SELECT 'type', t.qname, 1, 0,
       format('base type %s input %s output %s receive %s send %s length %s align %s storage %s', t.qname,
              b.typinput::regproc, b.typoutput::regproc, b.typreceive::regproc, b.typsend::regproc, b.typlen, b.typalign, b.typstorage)
FROM typ t JOIN pg_type b ON b.oid = t.oid WHERE t.typtype = 'b'
UNION ALL
-- sequences (not identity columns' and not migrun's own)
SELECT 'sequence', r.qname, 0, 0, format('sequence %s', r.qname) FROM rel r WHERE r.relkind = 'S'
UNION ALL
SELECT 'sequence', r.qname, 1, 0,
       format('sequence %s as %s start %s increment %s minvalue %s maxvalue %s cache %s%s%s', r.qname, format_type(s.seqtypid, NULL),
              s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END,
              CASE WHEN r.relpersistence = 'u' THEN ' unlogged' ELSE '' END)
FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
UNION ALL
SELECT 'sequence', r.qname, 1, 1, format('sequence %s owned by %s.%I', r.qname, t.qname, a.attname)
FROM rel r JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
JOIN rel t ON t.oid = d.refobjid JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE r.relkind = 'S'
UNION ALL
-- tables, views, materialized views, foreign tables
SELECT r.kind, r.qname, 0, 0, format('%s %s', r.kind, r.qname) FROM rel r WHERE r.relkind <> 'S'
UNION ALL
SELECT r.kind, r.qname, 1, 0, format('%s %s %s', r.kind, r.qname, p.property)
FROM rel r CROSS JOIN LATERAL (
    SELECT 'unlogged' WHERE r.relpersistence = 'u' AND r.relkind <> 'S'
    UNION ALL SELECT 'partition by ' || pg_get_partkeydef(r.oid) WHERE r.relkind = 'p'
    UNION ALL SELECT format('partition of %s %s', (SELECT b.qname FROM pg_inherits i JOIN rel b ON b.oid = i.inhparent WHERE i.inhrelid = r.oid), pg_get_expr(r.relpartbound, r.oid))
              WHERE r.relispartition
    UNION ALL SELECT 'inherits ' || string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
              FROM pg_inherits i WHERE i.inhrelid = r.oid AND NOT r.relispartition HAVING count(*) > 0
    UNION ALL SELECT 'of type ' || r.reloftype::regtype::text WHERE r.reloftype <> 0
    UNION ALL SELECT 'using ' || (SELECT amname FROM pg_am WHERE oid = r.relam) WHERE r.relam <> 0
    UNION ALL SELECT format('with (%s)', array_to_string(r.reloptions, ', ')) WHERE r.reloptions IS NOT NULL
    UNION ALL SELECT format('toast with (%s)', array_to_string(t.reloptions, ', ')) FROM pg_class t WHERE t.oid = r.reltoastrelid AND t.reloptions IS NOT NULL
    UNION ALL SELECT 'tablespace ' || quote_ident(ts.spcname) FROM pg_tablespace ts WHERE ts.oid = r.reltablespace
    UNION ALL SELECT 'replica identity ' || CASE r.relreplident WHEN 'n' THEN 'nothing' WHEN 'f' THEN 'full' ELSE 'index' END
              WHERE r.relreplident IN ('n', 'f', 'i') AND r.relkind IN ('r', 'p')
    UNION ALL SELECT 'row level security' WHERE r.relrowsecurity
    UNION ALL SELECT 'force row level security' WHERE r.relforcerowsecurity
    UNION ALL SELECT 'cluster on ' || quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = r.oid AND i.indisclustered
    UNION ALL SELECT 'replica identity index ' || quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = r.oid AND i.indisreplident
    UNION ALL SELECT format('server %I%s', s.srvname, coalesce(' options (' || array_to_string(ft.ftoptions, ', ') || ')', ''))
              FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE ft.ftrelid = r.oid
) p(property)
UNION ALL
SELECT r.kind, r.qname, 2, a.attnum,
       format('column %s.%I %s%s%s%s%s%s%s%s%s', r.qname, a.attname, format_type(a.atttypid, a.atttypmod),
              CASE WHEN a.attcollation <> 0 AND a.attcollation <> (SELECT typcollation FROM pg_type WHERE oid = a.atttypid)
                   THEN ' collate ' || (SELECT format('%I.%I', cn.nspname, c.collname) FROM pg_collation c JOIN pg_namespace cn ON cn.oid = c.collnamespace WHERE c.oid = a.attcollation) ELSE '' END,
              CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
              CASE WHEN a.attgenerated = 's' THEN ' generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ') stored'
                   ELSE coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') END,
              CASE a.attidentity WHEN 'a' THEN ' generated always as identity' WHEN 'd' THEN ' generated by default as identity' ELSE '' END
              || coalesce((SELECT format(' (sequence name %I.%I start %s increment %s minvalue %s maxvalue %s cache %s%s)', sn.nspname, sc.relname,
                                         s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
                           FROM pg_depend dep JOIN pg_class sc ON sc.oid = dep.objid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
                           JOIN pg_sequence s ON s.seqrelid = sc.oid
                           WHERE a.attidentity <> '' AND dep.refobjid = r.oid AND dep.refobjsubid = a.attnum AND dep.deptype = 'i'
                             AND dep.classid = 'pg_class'::regclass AND sc.relkind = 'S'), ''),
              CASE WHEN a.attstorage <> (SELECT typstorage FROM pg_type WHERE oid = a.atttypid)
                   THEN ' storage ' || CASE a.attstorage WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' ELSE 'extended' END ELSE '' END,
              {compression},
              CASE WHEN a.attstattarget >= 0 THEN ' statistics ' || a.attstattarget ELSE '' END,
              coalesce(' options (' || array_to_string(a.attoptions, ', ') || ')', '')
              || coalesce(' fdw options (' || array_to_string(a.attfdwoptions, ', ') || ')', ''),
              CASE WHEN NOT a.attislocal THEN ' inherited' ELSE '' END)
FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind <> 'S'
UNION ALL
SELECT r.kind, r.qname, 3, 0, format('constraint %s %I %s', r.qname, co.conname, pg_get_constraintdef(co.oid))
FROM pg_constraint co JOIN rel r ON r.oid = co.conrelid
UNION ALL
SELECT r.kind, r.qname, 4, 0,
       format('index %s%s', pg_get_indexdef(i.indexrelid), CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END)
FROM pg_index i JOIN rel r ON r.oid = i.indrelid
WHERE NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid AND co.contype IN ('p', 'u', 'x'))
UNION ALL
SELECT r.kind, r.qname, 4, 1, format('index %I.%I %s', r.nspname, ic.relname, p.property)
FROM pg_index i JOIN rel r ON r.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid
CROSS JOIN LATERAL (
    SELECT 'tablespace ' || quote_ident(ts.spcname) FROM pg_tablespace ts WHERE ts.oid = ic.reltablespace
    UNION ALL SELECT format('column %s statistics %s', a.attnum, a.attstattarget) FROM pg_attribute a
              WHERE a.attrelid = ic.oid AND a.attnum > 0 AND a.attstattarget >= 0
    UNION ALL SELECT 'attached to ' || ip.inhparent::regclass::text FROM pg_inherits ip WHERE ip.inhrelid = ic.oid
) p(property)
UNION ALL
SELECT r.kind, r.qname, 5, 0,
       format('trigger %s%s', pg_get_triggerdef(t.oid),
              CASE t.tgenabled WHEN 'D' THEN ' disabled' WHEN 'R' THEN ' enabled replica' WHEN 'A' THEN ' enabled always' ELSE '' END)
FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
UNION ALL
SELECT r.kind, r.qname, 5, 1,
       format('rule %s %I %s%s', r.qname, ru.rulename, pg_get_ruledef(ru.oid),
              CASE ru.ev_enabled WHEN 'D' THEN ' disabled' WHEN 'R' THEN ' enabled replica' WHEN 'A' THEN ' enabled always' ELSE '' END)
FROM pg_rewrite ru JOIN rel r ON r.oid = ru.ev_class WHERE ru.rulename <> '_RETURN'
UNION ALL
SELECT r.kind, r.qname, 0, 1, format('%s %s %s', r.kind, r.qname, pg_get_viewdef(r.oid)) FROM rel r WHERE r.relkind IN ('v', 'm')
UNION ALL
SELECT r.kind, r.qname, 5, 2,
       format('policy %s %I %s for %s to %s%s%s', r.qname, po.polname, CASE WHEN po.polpermissive THEN 'permissive' ELSE 'restrictive' END,
              CASE po.polcmd WHEN 'r' THEN 'select' WHEN 'a' THEN 'insert' WHEN 'w' THEN 'update' WHEN 'd' THEN 'delete' ELSE 'all' END,
              (SELECT string_agg(CASE WHEN x = 0 THEN 'public' ELSE quote_ident(pg_get_userbyid(x)) END, ', ' ORDER BY 1) FROM unnest(po.polroles) x),
              coalesce(' using (' || pg_get_expr(po.polqual, po.polrelid) || ')', ''),
              coalesce(' with check (' || pg_get_expr(po.polwithcheck, po.polrelid) || ')', ''))
FROM pg_policy po JOIN rel r ON r.oid = po.polrelid
UNION ALL
SELECT r.kind, r.qname, 6, 0,
       format('statistics %s%s', pg_get_statisticsobjdef(s.oid), CASE WHEN s.stxstattarget >= 0 THEN ' target ' || s.stxstattarget ELSE '' END)
FROM pg_statistic_ext s JOIN rel r ON r.oid = s.stxrelid
WHERE s.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_statistic_ext'::regclass)
UNION ALL
-- functions, procedures, aggregates
SELECT CASE WHEN f.prokind = 'p' THEN 'procedure' WHEN f.prokind = 'a' THEN 'aggregate' ELSE 'function' END, f.qname, 0, 0,
       format('%s %s', CASE WHEN f.prokind = 'p' THEN 'procedure' WHEN f.prokind = 'a' THEN 'aggregate' ELSE 'function' END, f.qname)
FROM fn f
UNION ALL
SELECT CASE WHEN f.prokind = 'p' THEN 'procedure' ELSE 'function' END, f.qname, 1, 0, format('function %s', pg_get_functiondef(f.oid))
FROM fn f WHERE f.prokind <> 'a'
UNION ALL
SELECT 'aggregate', f.qname, 1, 0,
       format('aggregate %s sfunc %s stype %s%s%s%s%s%s', f.qname, a.aggtransfn::regproc, format_type(a.aggtranstype, NULL),
              CASE WHEN a.aggfinalfn <> 0 THEN ' finalfunc ' || a.aggfinalfn::regproc::text ELSE '' END,
              CASE WHEN a.aggcombinefn <> 0 THEN ' combinefunc ' || a.aggcombinefn::regproc::text ELSE '' END,
              coalesce(' initcond ' || quote_literal(a.agginitval), ''),
              CASE WHEN a.aggsortop <> 0 THEN ' sortop ' || a.aggsortop::regoperator::text ELSE '' END,
              ' kind ' || a.aggkind::text, CASE WHEN p.proparallel <> 'u' THEN ' parallel ' || p.proparallel::text ELSE '' END)
FROM fn f JOIN pg_aggregate a ON a.aggfnoid = f.oid JOIN pg_proc p ON p.oid = f.oid
UNION ALL
-- casts, operators, event triggers, publications, foreign data
SELECT 'cast', format('(%s AS %s)', format_type(c.castsource, NULL), format_type(c.casttarget, NULL)), 0, 0,
       format('cast (%s AS %s) %s %s', format_type(c.castsource, NULL), format_type(c.casttarget, NULL),
              CASE c.castmethod WHEN 'f' THEN 'with function ' || c.castfunc::regprocedure::text WHEN 'i' THEN 'with inout' ELSE 'without function' END,
              CASE c.castcontext WHEN 'i' THEN 'as implicit' WHEN 'a' THEN 'as assignment' ELSE 'explicit' END)
FROM pg_cast c WHERE c.oid >= 16384 AND c.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_cast'::regclass)
UNION ALL
SELECT 'operator', o.oid::regoperator::text, 0, 0,
       format('operator %s function %s%s%s%s%s%s%s', o.oid::regoperator, o.oprcode::regproc,
              CASE WHEN o.oprcom <> 0 THEN ' commutator ' || o.oprcom::regoperator::text ELSE '' END,
              CASE WHEN o.oprnegate <> 0 THEN ' negator ' || o.oprnegate::regoperator::text ELSE '' END,
              CASE WHEN o.oprrest <> 0 THEN ' restrict ' || o.oprrest::regproc::text ELSE '' END,
              CASE WHEN o.oprjoin <> 0 THEN ' join ' || o.oprjoin::regproc::text ELSE '' END,
              CASE WHEN o.oprcanhash THEN ' hashes' ELSE '' END, CASE WHEN o.oprcanmerge THEN ' merges' ELSE '' END)
FROM pg_operator o JOIN ns n ON n.oid = o.oprnamespace
WHERE o.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_operator'::regclass)
UNION ALL
SELECT 'access method', quote_ident(am.amname), 0, 0,
       format('access method %I type %s handler %s', am.amname, CASE am.amtype WHEN 't' THEN 'table' ELSE 'index' END, am.amhandler::regproc)
FROM pg_am am WHERE am.oid >= 16384 AND am.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_am'::regclass)
UNION ALL
SELECT 'event trigger', quote_ident(e.evtname), 0, 0,
       format('event trigger %I on %s%s execute function %s%s', e.evtname, e.evtevent,
              coalesce(' when tag in (' || (SELECT string_agg(quote_literal(x), ', ' ORDER BY x) FROM unnest(e.evttags) x) || ')', ''),
              e.evtfoid::regproc,
              CASE e.evtenabled WHEN 'D' THEN ' disabled' WHEN 'R' THEN ' enabled replica' WHEN 'A' THEN ' enabled always' ELSE '' END)
FROM pg_event_trigger e WHERE e.oid NOT IN (SELECT objid FROM ext WHERE classid = 'pg_event_trigger'::regclass)
UNION ALL
SELECT 'publication', quote_ident(p.pubname), 0, 0,
       format('publication %I%s publish %s%s', p.pubname, CASE WHEN p.puballtables THEN ' for all tables' ELSE '' END,
              concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                        CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END),
              CASE WHEN p.pubviaroot THEN ' via root' ELSE '' END)
FROM pg_publication p
UNION ALL
SELECT 'publication', quote_ident(p.pubname), 2, 0, format('publication %I table %s%s', p.pubname, pr.prrelid::regclass, {publication_rel})
FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
{publication_schemas}
UNION ALL
SELECT 'foreign data wrapper', quote_ident(w.fdwname), 0, 0,
       format('foreign data wrapper %I%s%s%s', w.fdwname,
              CASE WHEN w.fdwhandler <> 0 THEN ' handler ' || w.fdwhandler::regproc::text ELSE '' END,
              CASE WHEN w.fdwvalidator <> 0 THEN ' validator ' || w.fdwvalidator::regproc::text ELSE '' END,
              coalesce(' options (' || array_to_string(w.fdwoptions, ', ') || ')', ''))
FROM pg_foreign_data_wrapper w WHERE w.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT 'server', quote_ident(s.srvname), 0, 0,
       format('server %I%s%s foreign data wrapper %I%s', s.srvname, coalesce(' type ' || quote_literal(s.srvtype), ''),
              coalesce(' version ' || quote_literal(s.srvversion), ''), w.fdwname, coalesce(' options (' || array_to_string(s.srvoptions, ', ') || ')', ''))
FROM pg_foreign_server s JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE s.oid NOT IN (SELECT objid FROM ext)
UNION ALL
SELECT 'server', quote_ident(u.srvname), 2, 0,
       format('user mapping for %s server %I%s', CASE WHEN u.umuser = 0 THEN 'public' ELSE quote_ident(u.usename) END, u.srvname,
              coalesce(' options (' || array_to_string(u.umoptions, ', ') || ')', ''))
FROM pg_user_mappings u
UNION ALL
-- comments, on the object they describe (the built-in schemas' and extensions' can change too)
SELECT o.kind, o.name, 8, 0, format('comment on %s is %L', o.what, d.description)
FROM pg_description d JOIN obj o ON o.classid = d.classoid AND o.objid = d.objoid AND o.objsubid = d.objsubid
WHERE d.objoid >= 16384 OR d.classoid IN ('pg_namespace'::regclass, 'pg_extension'::regclass)
UNION ALL
-- privileges: what differs from the object's default (NULL: none, as for a column)
SELECT a.kind, a.name, 9, 0, g.item
FROM obj a CROSS JOIN LATERAL (
    SELECT format('grant %s on %s to %s%s%s', e.privilege_type, a.what,
                  CASE WHEN e.grantee = 0 THEN 'PUBLIC' WHEN e.grantee = a.owner THEN 'OWNER' ELSE quote_ident(pg_get_userbyid(e.grantee)) END,
                  CASE WHEN e.is_grantable THEN ' with grant option' ELSE '' END,
                  CASE WHEN e.grantor = a.owner THEN '' ELSE ' granted by ' || quote_ident(pg_get_userbyid(e.grantor)) END)
    FROM aclexplode(a.acl) e
    WHERE (e.grantor, e.grantee, e.privilege_type, e.is_grantable) NOT IN (SELECT b.grantor, b.grantee, b.privilege_type, b.is_grantable FROM aclexplode(a.base) b)
    UNION ALL
    SELECT format('revoke %s on %s from %s', b.privilege_type, a.what,
                  CASE WHEN b.grantee = 0 THEN 'PUBLIC' WHEN b.grantee = a.owner THEN 'OWNER' ELSE quote_ident(pg_get_userbyid(b.grantee)) END)
    FROM aclexplode(a.base) b
    WHERE (b.grantor, b.grantee, b.privilege_type, b.is_grantable) NOT IN (SELECT e.grantor, e.grantee, e.privilege_type, e.is_grantable FROM aclexplode(a.acl) e)
) g(item)
WHERE a.acl IS NOT NULL
"#;
