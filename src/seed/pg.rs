//! PostgreSQL's side of seeding: the catalog queries, `TRUNCATE`, `SET CONSTRAINTS`, and the bulk
//! path, `COPY ... FROM STDIN (FORMAT csv)`, with the search for the row PostgreSQL refused (its
//! error does not say which, so the file is replayed in checked pieces) and the column it refused
//! (asked of the column type's input function). Sequences move past the seeded values last.
//!
//! diesel's `copy_from` wants a table known at compile time: its `CopyTarget::walk_target` is an
//! associated function with no `self`. [`RuntimeTarget`] implements that trait and writes the
//! quoted table and column list that [`copy_csv`] put in a thread-local just before the call, so
//! COPY runs on the same diesel connection, inside the same transaction as everything else.

use std::cell::RefCell;
use std::io::Write;

use std::path::Path;

use anyhow::Context as _;
use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::pg::{CopyFormat, CopyTarget, Pg};
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Integer, Nullable, Text};

use super::csv::{self, Record};
use super::load::{reopen, Located};
use super::loader::{quoted_target, Column, ForeignKey, Loader, Relation, TargetKind, TargetRow};
use super::loader::{CsvTarget, RowStream};
use super::transaction::{database_message, savepoint, DbFailure, Savepoint};
use super::Sink;
use crate::db::{self, quote_ident, TableName};

impl Loader for PgConnection {
    fn database(&self) -> &'static str {
        "PostgreSQL"
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        <PgConnection as Connection>::TransactionManager::begin_transaction(self)
            .map_err(anyhow::Error::new)
    }

    /// The transaction's start time (`now()`).
    fn transaction_identity(&mut self) -> anyhow::Result<String> {
        #[derive(QueryableByName)]
        struct Started {
            #[diesel(sql_type = Text)]
            at: String,
        }
        let started: Started = diesel::sql_query(
            // In microseconds since the epoch: unaffected by a file's SET TIME ZONE,
            // DateStyle or extra_float_digits.
            "SELECT (extract(epoch FROM pg_catalog.now()) * 1000000)::bigint::text AS at",
        )
        .get_result(self)
        .context("reading the transaction's start time")?;
        Ok(started.at)
    }

    fn relations(&mut self) -> anyhow::Result<Vec<Relation>> {
        diesel::sql_query(
            "SELECT n.nspname::text AS schema, c.relname::text AS name, \
                    pg_catalog.pg_table_is_visible(c.oid) AS visible \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'f') \
               AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'",
        )
        .load(self)
        .context("listing the tables seed files can name")
    }

    fn foreign_keys(&mut self) -> anyhow::Result<Vec<ForeignKey>> {
        // Tables off the search path are named `schema.table`, as seed files name them.
        diesel::sql_query(
            "SELECT \
               CASE WHEN pg_catalog.pg_table_is_visible(c.oid) THEN c.relname::text \
                    ELSE cn.nspname || '.' || c.relname END AS child, \
               CASE WHEN pg_catalog.pg_table_is_visible(p.oid) THEN p.relname::text \
                    ELSE pn.nspname || '.' || p.relname END AS parent, \
               CASE WHEN pg_catalog.pg_table_is_visible(c.oid) THEN '' \
                    ELSE '\"' || replace(cn.nspname, '\"', '\"\"') || '\".' END \
                 || '\"' || replace(c.relname, '\"', '\"\"') || '\"' AS child_sql, \
               k.conname::text AS name, k.condeferrable AS \"deferrable\" \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class c ON c.oid = k.conrelid \
             JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
             JOIN pg_catalog.pg_class p ON p.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
             WHERE k.contype = 'f'",
        )
        .load(self)
        .context("reading foreign keys from the catalog")
    }

    /// In the file's schema, else the one visible on the search path.
    fn target_kind(&mut self, table: &TableName) -> anyhow::Result<TargetKind> {
        // tgtype bits (pg_trigger.h): ROW 1, INSERT 4, INSTEAD 64.
        let found: Vec<TargetRow> = diesel::sql_query(
            "SELECT c.relkind::text AS kind, (SELECT count(*) FROM pg_catalog.pg_trigger t \
                 WHERE t.tgrelid = c.oid AND t.tgenabled <> 'D' AND (t.tgtype & 69) = 69)::bigint AS triggers \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p', 'f', 'v', 'm') \
               AND CASE WHEN $2::text IS NULL THEN pg_catalog.pg_table_is_visible(c.oid) ELSE n.nspname = $2 END",
        )
        .bind::<Text, _>(&table.name)
        .bind::<Nullable<Text>, _>(&table.schema)
        .load(self)
        .with_context(|| format!("looking for table {}", table.quoted()))?;
        Ok(TargetKind::of(&found))
    }

    fn columns(&mut self, table: &TableName) -> anyhow::Result<Vec<Column>> {
        diesel::sql_query(
            "SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS sql_type \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind IN ('r', 'p', 'f', 'v', 'm') \
               AND CASE WHEN $2::text IS NULL THEN pg_catalog.pg_table_is_visible(c.oid) ELSE n.nspname = $2 END \
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        )
        .bind::<Text, _>(&table.name)
        .bind::<Nullable<Text>, _>(&table.schema)
        .load(self)
        .with_context(|| format!("reading the columns of table {table}"))
    }

    /// One `TRUNCATE`: PostgreSQL refuses when a table outside the list still references one of
    /// them, rather than silently cascading.
    fn empty_tables(&mut self, tables: &[TableName]) -> anyhow::Result<()> {
        let quoted: Vec<String> = tables.iter().map(TableName::quoted).collect();
        self.batch_execute(&format!("TRUNCATE TABLE {}", quoted.join(", ")))
            .map_err(|e| anyhow::Error::new(DbFailure::of(&e)))
            .with_context(|| {
                let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
                format!("emptying {} (--truncate)", names.join(", "))
            })
    }

    /// Only the keys declared DEFERRABLE can wait for the commit.
    fn defer_foreign_keys(&mut self) -> anyhow::Result<()> {
        self.batch_execute("SET CONSTRAINTS ALL DEFERRED")
            .context("deferring foreign-key checks")
    }

    /// Every deferred constraint.
    fn check_deferred_foreign_keys(&mut self) -> anyhow::Result<()> {
        self.batch_execute("SET CONSTRAINTS ALL IMMEDIATE")
            .map_err(|e| anyhow::anyhow!("{}", database_message(&e)))
    }

    fn load_csv(&mut self, target: &CsvTarget, stream: &mut RowStream<'_>) -> anyhow::Result<u64> {
        copy_into(self, &target.table, &target.names, stream)
    }

    /// One COPY checks its rows' keys when it ends: nothing is left to check.
    fn verify(&mut self, _loaded: &[CsvTarget]) -> anyhow::Result<()> {
        Ok(())
    }

    /// Moves the sequences of the loaded columns past the seeded values. Deferred constraints
    /// are checked first, so that the COMMIT that follows can only fail for reasons outside the
    /// data (the connection, the server): `setval` cannot be undone.
    fn before_commit(&mut self, loaded: &[CsvTarget], sink: &dyn Sink) -> anyhow::Result<()> {
        if loaded.is_empty() {
            return Ok(());
        }
        self.check_deferred_foreign_keys()
            .context("checking the deferred constraints")?;
        for moved in adjust_sequences(self, loaded)? {
            sink.note(&format_args!(
                "moved sequence {moved} past the seeded values"
            ));
        }
        Ok(())
    }
}

/// Streams the rows into `COPY ... FROM STDIN (FORMAT csv)` inside a savepoint. PostgreSQL's
/// error does not say which row it refused (diesel keeps only the message), so after a failure
/// the file is replayed in checked pieces to find the row: slower, but only on the way to an error.
fn copy_into(
    pg: &mut PgConnection,
    table: &TableName,
    columns: &[String],
    stream: &mut RowStream<'_>,
) -> anyhow::Result<u64> {
    savepoint(pg, Savepoint::Set, PG_SAVEPOINT)?;
    let mut reader_failed = false;
    let copied = copy_csv(pg, table, columns, |out| {
        while stream.next().inspect_err(|_| reader_failed = true)? {
            write_pg_csv_row(out, &stream.record).context("sending rows to PostgreSQL")?;
        }
        Ok(())
    });
    match copied {
        Ok(rows) => {
            savepoint(pg, Savepoint::Release, PG_SAVEPOINT)?;
            Ok(rows)
        }
        Err(e) if reader_failed => Err(e),
        Err(e) => {
            let whole = || e.context(stream.path.display().to_string());
            // Nothing is sent on a connection whose transaction is gone; the caller says so.
            // After SIGINT/SIGTERM there is no bad row to look for either.
            if crate::interrupt::requested() || !db::pg_transaction_is_open(pg).unwrap_or(false) {
                return Err(whole());
            }
            // If the search itself fails (the connection dropped, say), the first error stands.
            let located = savepoint(pg, Savepoint::RollbackTo, PG_SAVEPOINT)
                .and_then(|()| locate_pg_failure(pg, stream.path, stream.dialect, table, columns));
            match located {
                Ok(Some(found)) => Err(anyhow::Error::new(found.at(stream.path))),
                _ => Err(whole()),
            }
        }
    }
}

const PG_SAVEPOINT: &str = "dbctl_seed_file";
const PG_PROBE: &str = "dbctl_seed_probe";

/// Rows replayed per COPY while looking for the one PostgreSQL refused.
const PROBE_CHUNK: usize = 10_000;
/// ... or fewer, so that the replayed chunk's memory stays bounded whatever the rows' size.
const PROBE_BYTES: usize = csv::MAX_ROW_BYTES;

/// One COPY of `data` inside its own savepoint: `None` when it loads, else the failure (rolled
/// back to the savepoint). A lost transaction is an error: nothing more is sent.
fn pg_probe(
    pg: &mut PgConnection,
    table: &TableName,
    columns: &[String],
    data: &[u8],
) -> anyhow::Result<Option<DbFailure>> {
    savepoint(pg, Savepoint::Set, PG_PROBE)?;
    match copy_csv(pg, table, columns, |out| Ok(out.write_all(data)?)) {
        Ok(_) => {
            savepoint(pg, Savepoint::Release, PG_PROBE)?;
            Ok(None)
        }
        Err(e) => {
            if !db::pg_transaction_is_open(pg).unwrap_or(false) {
                return Err(e.context("the transaction ended while looking for the refused row"));
            }
            savepoint(pg, Savepoint::RollbackTo, PG_PROBE)?;
            Ok(Some(match e.downcast::<DbFailure>() {
                Ok(f) => f,
                Err(other) => DbFailure {
                    message: format!("{other:#}"),
                    unique: false,
                    column: None,
                },
            }))
        }
    }
}

/// Replays the file (from the savepoint taken before it) in chunks, each in its own savepoint,
/// then halves the failing chunk until one row is left, and asks the server which of its
/// columns it refused. `None` when the failure does not come back.
fn locate_pg_failure(
    pg: &mut PgConnection,
    path: &Path,
    dialect: csv::Dialect,
    table: &TableName,
    columns: &[String],
) -> anyhow::Result<Option<Located>> {
    let Some((mut reader, mut record)) = reopen(path, dialect)? else {
        return Ok(None);
    };
    let mut data: Vec<u8> = Vec::new();
    // For each buffered row: where it ends in `data`, its row number and line.
    let mut rows: Vec<(usize, u64, u64)> = Vec::new();
    let mut row = 0u64;
    loop {
        data.clear();
        rows.clear();
        while rows.len() < PROBE_CHUNK
            && data.len() < PROBE_BYTES
            && reader.read(&mut record).unwrap_or(false)
        {
            row += 1;
            write_pg_csv_row(&mut data, &record)?;
            rows.push((data.len(), row, record.line));
        }
        if rows.is_empty() {
            return Ok(None);
        }
        if pg_probe(pg, table, columns, &data)?.is_none() {
            continue;
        }
        let start_of = |i: usize| if i == 0 { 0 } else { rows[i - 1].0 };
        let (mut lo, mut hi) = (0, rows.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match pg_probe(pg, table, columns, &data[start_of(lo)..start_of(mid)])? {
                None => lo = mid,
                Some(_) => hi = mid,
            }
        }
        let Some(failure) = pg_probe(pg, table, columns, &data[start_of(lo)..rows[lo].0])? else {
            return Ok(None);
        };
        let (_, row, line) = rows[lo];
        let column = match failure.column.clone() {
            Some(c) => Some(c),
            None => refused_column(pg, path, dialect, row, table, columns)?,
        };
        return Ok(Some(Located {
            row,
            line,
            column,
            failure,
        }));
    }
}

/// The column whose value PostgreSQL's COPY could not read, asked of the server: each value of
/// the row goes, in the file's column order (COPY's order), through its column type's input
/// function with the column's type modifier, exactly the call COPY makes; the first one refused is
/// the column COPY's error context names. `None` when every value reads (the row failed a
/// constraint or a trigger instead).
fn refused_column(
    pg: &mut PgConnection,
    path: &Path,
    dialect: csv::Dialect,
    row: u64,
    table: &TableName,
    columns: &[String],
) -> anyhow::Result<Option<String>> {
    let Some((mut reader, mut record)) = reopen(path, dialect)? else {
        return Ok(None);
    };
    for _ in 0..row {
        if !reader.read(&mut record).unwrap_or(false) {
            return Ok(None);
        }
    }
    for (i, column) in columns.iter().enumerate() {
        let Some(value) = record.get(i) else { continue };
        if !value_reads(pg, table, column, value)? {
            return Ok(Some(column.clone()));
        }
    }
    Ok(None)
}

/// One row in PostgreSQL's CSV dialect: NULL as an unquoted empty field, anything that could be
/// misread (empty, separators, quotes, line ends, a backslash as in `\.`) quoted.
fn write_pg_csv_row(out: &mut dyn Write, record: &Record) -> std::io::Result<()> {
    for i in 0..record.len() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if record.is_null(i) {
            continue;
        }
        let field = record.bytes(i);
        let needs_quotes = field.is_empty()
            || field
                .iter()
                .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r' | b'\\'));
        if !needs_quotes {
            out.write_all(field)?;
            continue;
        }
        out.write_all(b"\"")?;
        for part in field.split_inclusive(|&b| b == b'"') {
            out.write_all(part)?;
            if part.last() == Some(&b'"') {
                out.write_all(b"\"")?;
            }
        }
        out.write_all(b"\"")?;
    }
    out.write_all(b"\n")
}

diesel::table! {
    /// Never queried: it only gives diesel's COPY machinery the compile-time table it asks for.
    /// The real target is written by [`RuntimeTarget::walk_target`].
    dbctl_runtime_copy_target (id) {
        id -> Integer,
    }
}

thread_local! {
    /// `"table" ("col", ...)`, already quoted, for the COPY statement being built on this thread.
    static COPY_TARGET: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A COPY target named at run time (see the module comment).
struct RuntimeTarget;

impl CopyTarget for RuntimeTarget {
    type Table = dbctl_runtime_copy_target::table;
    type SqlType = Integer;

    fn walk_target(mut pass: AstPass<'_, '_, Pg>) -> QueryResult<()> {
        COPY_TARGET.with(|target| pass.push_sql(&target.borrow()));
        Ok(())
    }
}

/// Clears the thread-local target however `copy_csv` ends.
struct TargetGuard;

impl Drop for TargetGuard {
    fn drop(&mut self) {
        COPY_TARGET.with(|t| t.borrow_mut().clear());
    }
}

/// `COPY "table" ("col", ...) FROM STDIN (FORMAT csv)`, fed by `fill`, which writes CSV rows in
/// PostgreSQL's dialect (an unquoted empty field is NULL, `""` an empty string: the same rule as
/// the seed files). Returns the rows PostgreSQL stored.
///
/// An error from `fill` aborts the COPY and is returned as it is; otherwise a failure is the
/// database's message.
fn copy_csv(
    pg: &mut PgConnection,
    table: &TableName,
    columns: &[String],
    fill: impl FnMut(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let target = quoted_target(table, columns);
    COPY_TARGET.with(|t| *t.borrow_mut() = target);
    let _guard = TargetGuard;
    // diesel takes an `Fn`; the fill function streams and so needs `&mut` state.
    let fill = RefCell::new(fill);
    let failure: RefCell<Option<anyhow::Error>> = RefCell::new(None);
    let result = diesel::copy_from(dbctl_runtime_copy_target::table)
        .from_raw_data(RuntimeTarget, |sink: &mut dyn Write| {
            // Large writes: each one is a CopyData message.
            let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, sink);
            let outcome = (fill.borrow_mut())(&mut buffered)
                .and_then(|()| buffered.flush().context("sending rows to PostgreSQL"));
            outcome.map_err(|e| {
                let text = format!("{e:#}");
                *failure.borrow_mut() = Some(e);
                diesel::result::Error::SerializationError(text.into())
            })
        })
        .with_format(CopyFormat::Csv)
        .execute(pg);
    if let Some(err) = failure.into_inner() {
        return Err(err);
    }
    match result {
        Ok(rows) => Ok(rows as u64),
        Err(e) => Err(anyhow::Error::new(DbFailure::of(&e))),
    }
}

/// Whether PostgreSQL reads `value` as a value of `table.column`: the column type's input
/// function is called with the type's I/O parameter and the column's type modifier, the call COPY
/// makes for each field (so `varchar(3)` refuses four characters and a domain checks its
/// constraints). Runs in a savepoint; a lost transaction is an error.
fn value_reads(
    pg: &mut PgConnection,
    table: &TableName,
    column: &str,
    value: &str,
) -> anyhow::Result<bool> {
    #[derive(QueryableByName)]
    struct Input {
        /// `regproc` output: quoted and qualified by the server.
        #[diesel(sql_type = Text)]
        func: String,
        #[diesel(sql_type = Integer)]
        nargs: i32,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        ioparam: i64,
        #[diesel(sql_type = Integer)]
        typmod: i32,
    }
    let input: Input = diesel::sql_query(
        "SELECT t.typinput::regproc::text AS func, p.pronargs::int AS nargs, \
                (CASE WHEN t.typelem <> 0 THEN t.typelem ELSE t.oid END)::bigint AS ioparam, \
                a.atttypmod AS typmod \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
         JOIN pg_catalog.pg_proc p ON p.oid = t.typinput \
         WHERE a.attrelid = $1::regclass AND a.attname = $2",
    )
    .bind::<Text, _>(table.quoted())
    .bind::<Text, _>(column)
    .get_result(pg)
    .with_context(|| format!("reading the input function of column {column}"))?;
    let args = match input.nargs {
        1 => "$1::cstring",
        2 => "$1::cstring, $2::oid",
        _ => "$1::cstring, $2::oid, $3::int4",
    };
    let sql = format!("SELECT ({}({args})) IS NULL AS isnull", input.func);
    savepoint(pg, Savepoint::Set, "dbctl_seed_value")?;
    // Binding fewer parameters than the statement uses is an error, so every call binds three.
    let sql = match input.nargs {
        1 => format!("{sql} WHERE $2::oid IS NOT NULL AND $3::int4 IS NOT NULL"),
        2 => format!("{sql} WHERE $3::int4 IS NOT NULL"),
        _ => sql,
    };
    #[derive(QueryableByName)]
    struct Read {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        #[allow(dead_code)]
        isnull: bool,
    }
    let outcome: QueryResult<Vec<Read>> = diesel::sql_query(sql)
        .bind::<Text, _>(value)
        .bind::<diesel::sql_types::BigInt, _>(input.ioparam)
        .bind::<Integer, _>(input.typmod)
        .load(pg);
    match outcome {
        Ok(_) => {
            savepoint(pg, Savepoint::Release, "dbctl_seed_value")?;
            Ok(true)
        }
        Err(e) => {
            if !db::pg_transaction_is_open(pg).unwrap_or(false) {
                return Err(anyhow::anyhow!("{}", database_message(&e)));
            }
            savepoint(pg, Savepoint::RollbackTo, "dbctl_seed_value")?;
            Ok(false)
        }
    }
}

/// A sequence feeding a column's default (serial, identity, or `DEFAULT nextval(...)`).
#[derive(QueryableByName)]
struct ColumnSequence {
    #[diesel(sql_type = Text)]
    column: String,
    /// Qualified and quoted by the server (`regclass` output), so it can be put in SQL.
    #[diesel(sql_type = Text)]
    seq: String,
}

/// Moves the sequences behind the given columns so the application's next insert does not collide
/// with a seeded value. Called once, just before COMMIT (never in a dry run): `setval` is not
/// transactional, so a sequence moved earlier would stay moved after a rollback.
///
/// A sequence only ever moves forward in its own direction: past the column's largest value for an
/// ascending one, below its smallest for a descending one, and only when that value lies inside
/// the sequence's bounds and beyond the value it would hand out next. So a sequence another table
/// shares, or one already past the seeded values, is left where it is, and ids of 0 or below a
/// sequence's minimum are loaded as they are (as `psql \copy` does). Returns the sequences moved,
/// as `name -> next value`.
fn adjust_sequences(pg: &mut PgConnection, targets: &[CsvTarget]) -> anyhow::Result<Vec<String>> {
    let mut moved = Vec::new();
    for CsvTarget {
        table,
        names: columns,
        ..
    } in targets
    {
        let sequences: Vec<ColumnSequence> = diesel::sql_query(
            "SELECT a.attname::text AS column, d.refobjid::regclass::text AS seq \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::regclass \
               AND d.objid = ad.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
             JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S' \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             UNION \
             SELECT a.attname::text, pg_catalog.pg_get_serial_sequence($1, a.attname)::regclass::text \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped \
               AND pg_catalog.pg_get_serial_sequence($1, a.attname) IS NOT NULL",
        )
        .bind::<Text, _>(table.quoted())
        .load(pg)
        .with_context(|| format!("looking up the sequences of {}", table.quoted()))?;
        for found in sequences.iter().filter(|s| columns.contains(&s.column)) {
            if let Some(next) = advance_sequence(pg, table, &found.column, &found.seq)? {
                moved.push(format!("{} -> {next}", found.seq));
            }
        }
    }
    Ok(moved)
}

/// Moves one sequence forward past the values of `table.column`, if that is forward and in range.
/// Returns the value the sequence hands out next when it was moved.
fn advance_sequence(
    pg: &mut PgConnection,
    table: &TableName,
    column: &str,
    seq: &str,
) -> anyhow::Result<Option<String>> {
    #[derive(QueryableByName)]
    struct Next {
        #[diesel(sql_type = Nullable<Text>)]
        next: Option<String>,
    }
    // `seq` comes from the server's regclass output: already quoted and qualified.
    // The column's extreme is compared as numeric, so values beyond bigint cannot overflow.
    let sql = format!(
        "WITH s AS ( \
            SELECT p.seqincrement AS inc, p.seqmin AS lo, p.seqmax AS hi, \
                   CASE WHEN q.is_called THEN q.last_value + p.seqincrement ELSE q.last_value END::numeric AS upcoming \
            FROM pg_catalog.pg_sequence p, {seq} q WHERE p.seqrelid = '{seq_lit}'::regclass), \
         v AS (SELECT CASE WHEN (SELECT inc FROM s) > 0 THEN max({col})::numeric ELSE min({col})::numeric END AS m FROM {tab}) \
         SELECT CASE WHEN v.m IS NOT NULL AND v.m BETWEEN s.lo AND s.hi \
                      AND ((s.inc > 0 AND v.m >= s.upcoming) OR (s.inc < 0 AND v.m <= s.upcoming)) \
                 THEN (pg_catalog.setval('{seq_lit}'::regclass, v.m::bigint, true)::numeric + s.inc)::text END AS next \
         FROM s, v",
        col = quote_ident(column),
        tab = table.quoted(),
        seq_lit = seq.replace('\'', "''"),
    );
    let next: Next = diesel::sql_query(sql)
        .get_result(pg)
        .with_context(|| format!("moving sequence {seq} past the seeded values"))?;
    Ok(next.next)
}
