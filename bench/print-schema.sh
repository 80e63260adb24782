#!/usr/bin/env bash
# Benchmark: `dbctl print-schema` (diesel's schema.rs) side by side in one hyperfine run with
# `dbctl inspect --format json` (dbctl's own catalog read, the floor print-schema is held to) and
# `diesel print-schema` 2.3, on four databases:
#   - vaultwarden's schema (a real project, about 35 tables) on PostgreSQL and SQLite, built by
#     applying its migrations (/work/shared/corpus/vaultwarden or $CORPUS);
#   - a generated schema of TABLES tables (1,000 by default) on PostgreSQL (foreign keys, enums,
#     a domain, arrays, uuid/jsonb/timestamptz/numeric/varchar(n) columns) and on SQLite (foreign
#     keys, the SQLite type names diesel maps).
# Checks first that dbctl and diesel print the same bytes on each, then prints hyperfine's tables
# and, per database, dbctl print-schema's mean beside the others' (ratios).
#
# Usage: bench/print-schema.sh [TABLES]   (from anywhere; builds dbctl in release mode)
# Needs: hyperfine, sqlite3, python3, PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres),
#        diesel at /work/tools/bin/diesel (or $DIESEL), psql in /usr/lib/postgresql/15/bin
#        (or $PG_BIN).
set -euo pipefail

TABLES=${1:-1000}
# Each command runs until about 3 s have passed, at least 3 and at most MAX_RUNS times (diesel
# print-schema takes tens of seconds on 1,000 PostgreSQL tables: it asks about each table in turn).
MAX_RUNS=${MAX_RUNS:-30}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DIESEL=${DIESEL:-/work/tools/bin/diesel}
CORPUS=${CORPUS:-/work/shared/corpus/vaultwarden}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
PG_REAL=dbctl_bench_ps_real_$$
PG_GEN=dbctl_bench_ps_gen_$$
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
cleanup() {
  rm -rf "$WORK"
  for db in "$PG_REAL" "$PG_GEN"; do
    "$PG_BIN/psql" -X -q "$PG_SERVER/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

for tool in hyperfine sqlite3 python3 "$PG_BIN/psql" "$DIESEL"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
[ -d "$CORPUS/postgresql" ] && [ -d "$CORPUS/sqlite" ] || { echo "no corpus at $CORPUS" >&2; exit 2; }

echo "building dbctl (release)..." >&2
(cd "$ROOT" && cargo build --release --locked --quiet 2>/dev/null) || (cd "$ROOT" && cargo build --release --locked)
DBCTL="$ROOT/target/release/dbctl"

# The generated schema. Each table t<i>: a key, a foreign key to the table before it (t0 to
# itself), one to a table further back, an enum column, and columns of the types diesel maps.
gen_pg() {
  echo "BEGIN;"
  for ((e = 0; e < 10; e++)); do
    echo "CREATE TYPE status_$e AS ENUM ('new', 'active', 'closed');"
  done
  echo "CREATE DOMAIN email_address AS VARCHAR(255) CHECK (VALUE LIKE '%@%');"
  for ((i = 0; i < TABLES; i++)); do
    local parent=$(( i == 0 ? 0 : i - 1 )) far=$(( i / 2 ))
    cat <<SQL
CREATE TABLE t$i (
  id BIGSERIAL PRIMARY KEY,
  parent_id BIGINT REFERENCES t$parent (id),
  owner_id BIGINT NOT NULL REFERENCES t$far (id),
  name VARCHAR(100) NOT NULL,
  email email_address,
  status status_$(( i % 10 )) NOT NULL DEFAULT 'new',
  amount NUMERIC(10, 2) DEFAULT 0,
  active BOOLEAN NOT NULL DEFAULT TRUE,
  tags TEXT[] NOT NULL DEFAULT '{}',
  data JSONB,
  uid UUID,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
SQL
  done
  echo "COMMIT;"
}

gen_sqlite() {
  echo "BEGIN;"
  for ((i = 0; i < TABLES; i++)); do
    local parent=$(( i == 0 ? 0 : i - 1 )) far=$(( i / 2 ))
    cat <<SQL
CREATE TABLE t$i (
  id INTEGER PRIMARY KEY,
  parent_id INTEGER REFERENCES t$parent (id),
  owner_id INTEGER NOT NULL REFERENCES t$far (id),
  name VARCHAR(100) NOT NULL,
  email TEXT,
  status TEXT NOT NULL DEFAULT 'new',
  amount DECIMAL(10, 2) DEFAULT 0,
  active BOOLEAN NOT NULL DEFAULT 1,
  data BLOB,
  score DOUBLE,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);
SQL
  done
  echo "COMMIT;"
}

echo "creating the databases..." >&2
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql "$PG_SERVER/postgres" -c "CREATE DATABASE $PG_REAL" -c "CREATE DATABASE $PG_GEN" >/dev/null
PG_REAL_URL="$PG_SERVER/$PG_REAL"
PG_GEN_URL="$PG_SERVER/$PG_GEN"
SQLITE_REAL="$WORK/real.db"
SQLITE_GEN="$WORK/gen.db"
"$DBCTL" migrate up -q --migrations-dir "$CORPUS/postgresql" --database-url "$PG_REAL_URL"
touch "$SQLITE_REAL"
"$DBCTL" migrate up -q --migrations-dir "$CORPUS/sqlite" --database-url "$SQLITE_REAL"
gen_pg > "$WORK/gen-pg.sql"
psql "$PG_GEN_URL" -f "$WORK/gen-pg.sql" >/dev/null
gen_sqlite | sqlite3 "$SQLITE_GEN"

# diesel and dbctl read diesel.toml from the current folder: run everything from an empty one.
mkdir -p "$WORK/cwd"
cd "$WORK/cwd"

# Same bytes from both printers, or the timings compare different work.
for url in "$PG_REAL_URL" "$SQLITE_REAL" "$PG_GEN_URL" "$SQLITE_GEN"; do
  "$DBCTL" print-schema --database-url "$url" > "$WORK/dbctl.rs"
  "$DIESEL" print-schema --database-url "$url" > "$WORK/diesel.rs" 2>/dev/null
  if ! cmp -s "$WORK/dbctl.rs" "$WORK/diesel.rs"; then
    echo "dbctl print-schema and diesel print-schema differ on $url:" >&2
    diff "$WORK/diesel.rs" "$WORK/dbctl.rs" | head -20 >&2
    exit 1
  fi
  echo "same schema.rs from dbctl and diesel on $url ($(grep -c 'diesel::table!' "$WORK/dbctl.rs") tables)" >&2
done

run() { # name, database URL (a plain path for SQLite, which both tools read)
  local name=$1 url=$2
  echo
  echo "== $name =="
  hyperfine --warmup 1 --min-runs 3 --max-runs "$MAX_RUNS" --style basic --export-json "$WORK/$name.json" \
    -n "dbctl print-schema" "$DBCTL print-schema --database-url '$url'" \
    -n "dbctl inspect --format json" "$DBCTL inspect --database-url '$url' --format json" \
    -n "diesel print-schema" "$DIESEL print-schema --database-url '$url'"
  python3 - "$WORK/$name.json" "$name" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
base = results[0]
print(f"\n{sys.argv[2]}: dbctl print-schema mean {base['mean']*1000:.1f} ms "
      f"(± {base['stddev']*1000:.1f})")
for r in results[1:]:
    ratio = r["mean"] / base["mean"]
    print(f"  {r['command']}: mean {r['mean']*1000:.1f} ms, {ratio:.2f}x dbctl print-schema's")
PY
}

run "vaultwarden-postgresql" "$PG_REAL_URL"
run "vaultwarden-sqlite" "$SQLITE_REAL"
run "generated-postgresql-$TABLES" "$PG_GEN_URL"
run "generated-sqlite-$TABLES" "$SQLITE_GEN"
