//! Drift: `diff` (the live schema against the last snapshot, a schema file, or the folder on a
//! scratch server), `diff --accept`, the `--check-drift` gate before applying, and `schema
//! --write` / `--check`.

use std::path::Path;

use serde::Serialize;

use super::config::{DbSettings, DiffAgainst, DiffRequest, SchemaRequest};
use super::database;
use super::error::Error;
use super::failure::DriftError;
use super::listing::print;
use crate::catalog::schema::{self, ObjectDiff, Schema};
use crate::check::build::{self, BuildError};
use crate::check::scratch::Server;
use crate::migrate::files::{self, Migration, MigrationKind};
use crate::migrate::history::{History, HistoryRow};
use crate::migrate::row::RowState;
use crate::migrate::snapshot::{self, Snapshot, Snapshots};
use crate::signals::Shutdown;

/// What the live schema was compared with, for the report.
#[derive(Debug, Serialize)]
struct Compared {
    /// `snapshot`, `file` or `scratch`.
    against: &'static str,
    /// In words: "the snapshot up recorded at ...", "schema.txt", "sql/ from empty".
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<SnapshotSummary>,
}

#[derive(Debug, Serialize)]
struct SnapshotSummary {
    id: i64,
    taken_at: String,
    command: String,
    highest_version: Option<i64>,
    /// False when versions were applied, reverted or repaired since without a snapshot.
    history_unchanged: bool,
    server_major: i32,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    compared: &'a Compared,
    differs: bool,
    objects: &'a [ObjectDiff],
}

/// `diff`: prints the differences; exit 19 when there are any.
pub async fn diff(db: &DbSettings, request: &DiffRequest, shutdown: &Shutdown) -> Result<(), Error> {
    if request.accept {
        return accept(db, request, shutdown).await;
    }
    let migrations = match &request.against {
        DiffAgainst::Scratch { .. } => Some(files::load(&db.dir, files::Accept::to_apply(db.policy.allow_empty))?),
        _ => None,
    };
    let session = database::open(db, shutdown).await?;
    let read = async {
        session.start().await?;
        let client = &session.client;
        let major = schema::server_major(client).await.map_err(DriftError::read)?;
        let live = schema::read(client, major, &snapshot::read_options(&db.history_table, db.schema_scope.as_deref()))
            .await
            .map_err(DriftError::read)?;
        let expected = match &request.against {
            DiffAgainst::Snapshot => {
                let latest = Snapshots::new(client, &db.history_table).scoped(db.schema_scope.as_deref()).latest().await?;
                let latest = latest.ok_or(DriftError::NoSnapshot)?;
                if latest.server_major != major as i32 {
                    tracing::warn!(snapshot_major = latest.server_major, server_major = major, "the snapshot was read on another PostgreSQL major: some differences may be how the server prints definitions; check them, then record a new snapshot with diff --accept");
                }
                Expected::Snapshot(latest)
            }
            DiffAgainst::File(path) => {
                let (schema, written_on) = read_file(path)?;
                warn_on_other_major(&path.display().to_string(), written_on, major);
                Expected::File(schema)
            }
            DiffAgainst::Scratch { .. } => {
                let rows = History::new(&session, &db.history_table).read().await?.unwrap_or_default();
                Expected::Rows(rows)
            }
        };
        Ok::<_, Error>((live, expected))
    }
    .await;
    session.close().await;
    let (live, expected) = read?;
    let (compared, expected) = match (expected, &request.against) {
        (Expected::Snapshot(snapshot), _) => (snapshot_compared(&snapshot), snapshot.schema),
        (Expected::File(schema), against) => {
            let description = match against {
                DiffAgainst::File(path) => path.display().to_string(),
                _ => "the schema file".to_string(),
            };
            (Compared { against: "file", description, snapshot: None }, schema)
        }
        (Expected::Rows(rows), against) => {
            let server_url = match against {
                DiffAgainst::Scratch { server_url } => server_url.as_deref(),
                _ => None,
            };
            let migrations = migrations.unwrap_or_default();
            let applied = applied_files(&migrations, &rows);
            let (built, _) = build_on_scratch(server_url, &applied, request.owners, shutdown).await?;
            let description = format!("{} from empty ({} applied file(s))", db.dir.display(), applied.len());
            (Compared { against: "scratch", description, snapshot: None }, built)
        }
    };
    let (expected, live) = match request.owners {
        true => (expected, live),
        false => (expected.without_owners(), live.without_owners()),
    };
    let objects = expected.compare(&live);
    report(&compared, &objects, request.format.json())?;
    match objects.first() {
        None => Ok(()),
        Some(first) => {
            let stale = compared.snapshot.as_ref().is_some_and(|s| !s.history_unchanged);
            Err(DriftError::differs("diff", &compared.description, &objects, first, stale).into())
        }
    }
}

/// What the live schema is compared with, once read.
enum Expected {
    Snapshot(Snapshot),
    File(Schema),
    /// The history rows, to pick the files a scratch build runs.
    Rows(Vec<HistoryRow>),
}

fn snapshot_compared(snapshot: &Snapshot) -> Compared {
    let summary = SnapshotSummary {
        id: snapshot.id,
        taken_at: snapshot.taken_at.clone(),
        command: snapshot.command.clone(),
        highest_version: snapshot.versions.last().copied(),
        history_unchanged: snapshot.history_unchanged,
        server_major: snapshot.server_major,
    };
    snapshot.warn_if_stale();
    Compared { against: "snapshot", description: snapshot.describe(), snapshot: Some(summary) }
}

/// The files the live history records as applied: versioned ones by version, repeatable ones
/// by description, in the order `up` runs them.
fn applied_files<'m>(migrations: &'m [Migration], rows: &[HistoryRow]) -> Vec<&'m Migration> {
    let applied = |m: &Migration| {
        rows.iter().any(|r| {
            r.state == RowState::Applied
                && match m.kind {
                    MigrationKind::Versioned(v) => r.version == Some(v),
                    MigrationKind::Repeatable => r.version.is_none() && r.description == m.description,
                }
        })
    };
    migrations.iter().filter(|m| applied(m)).collect()
}

async fn build_on_scratch(
    server_url: Option<&str>,
    migrations: &[&Migration],
    owners: bool,
    shutdown: &Shutdown,
) -> Result<(Schema, u32), Error> {
    shutdown.check()?;
    let server = match server_url {
        Some(url) => Server::at(url).await,
        None => Server::start().await,
    }
    .map_err(BuildError::from)
    .map_err(DriftError::Build)?;
    let built = build::schema_from_empty(&server, migrations, owners).await;
    let major = server.major();
    drop(server);
    Ok((built.map_err(DriftError::Build)?, major))
}

/// The second header line of a schema file names the major it was read on.
const MAJOR_LINE: &str = "Read on PostgreSQL ";

/// A schema file, and the major its header names (none for a file without the header).
fn read_file(path: &Path) -> Result<(Schema, Option<u32>), Error> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| DriftError::File { file: file.clone(), problem: format!("cannot read it: {e}") })?;
    let major = text
        .lines()
        .take_while(|l| l.starts_with("--"))
        .find_map(|l| l.split(MAJOR_LINE).nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
    let schema = Schema::parse(&text)
        .map_err(|e| DriftError::File { file, problem: format!("not a migrun schema file: {e}") })?;
    Ok((schema, major))
}

/// Definitions print differently between majors: say so when a file is compared with another.
fn warn_on_other_major(file: &str, written_on: Option<u32>, compared_on: u32) {
    if let Some(written) = written_on.filter(|w| *w != compared_on) {
        tracing::warn!(file, written_on = written, server_major = compared_on, "the schema file was read on another PostgreSQL major: some differences may be how the server prints definitions; write it with the major it is compared on");
    }
}

/// Prints the report: JSON, or each differing object with its `-`/`+` lines.
fn report(compared: &Compared, objects: &[ObjectDiff], json: bool) -> Result<(), Error> {
    if json {
        let report = Report { compared, differs: !objects.is_empty(), objects };
        return print(&format!("{}\n", serde_json::to_string_pretty(&report).unwrap_or_default()));
    }
    print(&human(compared, objects))
}

fn human(compared: &Compared, objects: &[ObjectDiff]) -> String {
    if objects.is_empty() {
        return format!("no drift: the live schema is {}\n", compared.description);
    }
    let mut out = format!(
        "drift: the live schema differs from {} in {} object(s) (- only there, + only in the live database)\n",
        compared.description,
        objects.len()
    );
    for object in objects {
        let change = serde_json::to_value(object.change).ok().and_then(|v| v.as_str().map(str::to_string));
        out.push_str(&format!("\n{} {} ({})\n", object.kind, object.name, change.unwrap_or_default()));
        for line in &object.lines {
            out.push_str(&format!("  {}\n", line.trim_end().replace('\n', "\n    ")));
        }
    }
    out
}

/// `diff --accept`: under the lock, records the live schema as the newest snapshot.
async fn accept(db: &DbSettings, request: &DiffRequest, shutdown: &Shutdown) -> Result<(), Error> {
    let session = database::open(db, shutdown).await?;
    let (locked, _) = database::lock(db, session, shutdown).await?;
    let result = async {
        let taken = Snapshots::new(&locked.session().client, locked.table()).scoped(db.schema_scope.as_deref()).take("accept").await?;
        tracing::info!(objects = taken.objects, bytes = taken.bytes, duration_ms = taken.duration_ms, schema_hash = %taken.hash, "schema snapshot recorded");
        let text = match request.format.json() {
            true => format!(
                "{}\n",
                serde_json::json!({"accepted": true, "snapshot": taken.id, "objects": taken.objects, "schema_hash": taken.hash})
            ),
            false => format!(
                "recorded the live schema ({} objects, sha256 {}) as the snapshot diff compares with\n",
                taken.objects, taken.hash
            ),
        };
        print(&text)
    }
    .await;
    locked.release_after(result, true).await
}

/// `schema --write FILE` / `--check FILE`: the folder from empty on a scratch server.
pub async fn schema_file(db: &DbSettings, request: &SchemaRequest, shutdown: &Shutdown) -> Result<(), Error> {
    let migrations = files::load(&db.dir, files::Accept::to_apply(db.policy.allow_empty))?;
    let all: Vec<&Migration> = migrations.iter().collect();
    let (built, server_major) = build_on_scratch(request.server_url.as_deref(), &all, request.owners, shutdown).await?;
    let file = request.file.display().to_string();
    let highest = migrations.iter().filter_map(Migration::version).max();
    if !request.check {
        let header = format!(
            "-- The schema {} produces from empty{}, as `migrun schema --write` reads it from the catalogs.\n-- {MAJOR_LINE}{}; check it with `migrun schema --check {file}`.\n",
            db.dir.display(),
            highest.map(|v| format!(" (versions up to {v})")).unwrap_or_default(),
            server_major,
        );
        std::fs::write(&request.file, format!("{header}{}", built.text()))
            .map_err(|e| DriftError::File { file: file.clone(), problem: format!("cannot write it: {e}") })?;
        tracing::info!(file = %file, objects = built.objects(), schema_hash = %built.hash(), "schema file written");
        return print(&format!("wrote {file} ({} objects)\n", built.objects()));
    }
    let (committed, written_on) = read_file(&request.file)?;
    warn_on_other_major(&file, written_on, server_major);
    let objects = committed.compare(&built);
    let compared = Compared { against: "file", description: file.clone(), snapshot: None };
    if let Some(first) = objects.first() {
        print(&human(&compared, &objects).replacen("drift: the live schema", "schema: what the folder produces", 1))?;
        return Err(DriftError::FileStale { file, count: objects.len(), first: first.summary() }.into());
    }
    tracing::info!(file = %file, objects = built.objects(), "schema file is current");
    print(&format!("{file} is what {} produces ({} objects)\n", db.dir.display(), built.objects()))
}
