#!/usr/bin/env bash
# Benchmark: `dbctl inspect --format json` on a 1,000-table schema (10 columns, an index and a
# foreign key each), side by side in one hyperfine run with the reference tools on the same
# database: `diesel print-schema`, `psql -c '\d+'` and `pg_dump --schema-only` on PostgreSQL,
# `sqlite3 .schema` on SQLite. Prints hyperfine's tables and dbctl's ratio to each.
#
# Usage: bench/inspect.sh [TABLES]      (from the repository root; builds dbctl in release mode)
# Needs: hyperfine, sqlite3, PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres),
#        diesel at /work/tools/bin/diesel (or $DIESEL), psql/pg_dump in /usr/lib/postgresql/15/bin
#        (or $PG_BIN).
set -euo pipefail

TABLES=${1:-1000}
# Each command runs until about 3 s have passed, at least 3 and at most MAX_RUNS times (diesel
# print-schema takes tens of seconds on PostgreSQL: it asks the server about each table in turn).
MAX_RUNS=${MAX_RUNS:-20}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DIESEL=${DIESEL:-/work/tools/bin/diesel}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
PG_DB=dbctl_bench_inspect
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; "$PG_BIN/psql" -X -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true' EXIT

for tool in hyperfine sqlite3 "$PG_BIN/psql" "$PG_BIN/pg_dump" "$DIESEL"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

echo "building dbctl (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet 2>/dev/null) || (cd "$ROOT" && cargo build --release)
DBCTL="$ROOT/target/release/dbctl"

# The schema: t0 .. tN-1, each with 10 columns, a foreign key to the previous table (t0 to
# itself) and an index on that key column. Same DDL on both backends.
schema_sql() {
  echo "BEGIN;"
  for ((i = 0; i < TABLES; i++)); do
    local parent=$(( i == 0 ? 0 : i - 1 ))
    cat <<SQL
CREATE TABLE t$i (
  id INTEGER PRIMARY KEY,
  parent_id INTEGER REFERENCES t$parent (id),
  name VARCHAR(100) NOT NULL,
  email VARCHAR(255),
  amount NUMERIC(10, 2) DEFAULT 0,
  active BOOLEAN NOT NULL DEFAULT TRUE,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  note TEXT,
  score INTEGER,
  code VARCHAR(20)
);
CREATE INDEX ix_t${i}_parent_id ON t$i (parent_id);
SQL
  done
  echo "COMMIT;"
}
schema_sql > "$WORK/schema.sql"

echo "creating $TABLES tables on SQLite and PostgreSQL..." >&2
SQLITE_DB="$WORK/bench.db"
sqlite3 "$SQLITE_DB" < "$WORK/schema.sql"
"$PG_BIN/psql" -X -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB" >/dev/null
"$PG_BIN/psql" -X -q "$PG_SERVER/$PG_DB" -f "$WORK/schema.sql" >/dev/null
PG_URL="$PG_SERVER/$PG_DB?sslmode=disable"

# diesel reads diesel.toml from the current folder: run everything from an empty one.
mkdir -p "$WORK/cwd"
cd "$WORK/cwd"

# Sanity: every tool sees every table.
for url in "sqlite://$SQLITE_DB" "$PG_SERVER/$PG_DB"; do
  n=$("$DBCTL" inspect --database-url "$url" --format json --no-rows | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tables"]))')
  echo "dbctl sees $n tables in ${url%%:*}" >&2
  [ "$n" = "$TABLES" ] || { echo "expected $TABLES tables" >&2; exit 1; }
done

run() { # name, then hyperfine command pairs
  local name=$1; shift
  echo
  echo "== $name, $TABLES tables =="
  hyperfine --warmup 1 --min-runs 3 --max-runs "$MAX_RUNS" --style basic --export-json "$WORK/$name.json" "$@"
  python3 - "$WORK/$name.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
base = results[0]
print(f"\nratios ({base['command']}: mean {base['mean']*1000:.1f} ms):")
for r in results[1:]:
    ratio = r["mean"] / base["mean"]
    word = "faster" if ratio >= 1 else "slower"
    shown = ratio if ratio >= 1 else 1 / ratio
    print(f"  dbctl is {shown:.2f}x {word} than {r['command']} (mean {r['mean']*1000:.1f} ms)")
PY
}

run sqlite \
  -n "dbctl inspect --format json" "$DBCTL inspect --database-url sqlite://$SQLITE_DB --format json" \
  -n "diesel print-schema" "$DIESEL print-schema --database-url $SQLITE_DB" \
  -n "sqlite3 .schema" "sqlite3 $SQLITE_DB .schema"

run postgres \
  -n "dbctl inspect --format json" "$DBCTL inspect --database-url '$PG_URL' --format json" \
  -n "diesel print-schema" "$DIESEL print-schema --database-url '$PG_URL'" \
  -n "psql -c '\\d+'" "$PG_BIN/psql -X -q '$PG_URL' -c '\\d+'" \
  -n "pg_dump --schema-only" "$PG_BIN/pg_dump --schema-only '$PG_URL'"

echo
echo "== dbctl extras on PostgreSQL, $TABLES tables =="
hyperfine --warmup 1 --min-runs 3 --max-runs "$MAX_RUNS" --style basic \
  -n "dbctl inspect (human)" "$DBCTL inspect --database-url '$PG_URL'" \
  -n "dbctl inspect --exact --format json" "$DBCTL inspect --database-url '$PG_URL' --exact --format json" \
  -n "dbctl inspect --format mermaid" "$DBCTL inspect --database-url '$PG_URL' --format mermaid"
