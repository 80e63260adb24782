#!/usr/bin/env bash
# The vaultwarden corpus through dbctl and through diesel_cli, on SQLite and PostgreSQL:
#   dbctl: apply all, revert all (as far as the corpus can be reverted), apply all again;
#   diesel_cli: apply all;
# then compare the two schemas (sqlite3 .schema, pg_dump --schema-only) and check that diesel_cli
# sees every migration dbctl applied as applied (shared bookkeeping).
#
# Not part of the test suite: users do not have the corpus. Run by hand:
#   cargo build --release && bench/corpus.sh
# Settings: CORPUS, DBCTL, DIESEL, PGBIN, PG_SERVER (postgres://user@host:port, no database).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/work/shared/corpus/vaultwarden}
DBCTL=${DBCTL:-$ROOT/target/release/dbctl}
DIESEL=${DIESEL:-/work/tools/bin/diesel}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
status=0

say() { printf '%s\n' "$*"; }
fail() { say "FAIL: $*"; status=1; }

# dbctl's round trip on one database URL and one migrations folder.
dbctl_round_trip() {
  local url=$1 dir=$2 total
  export DATABASE_URL=$url
  total=$(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l)
  "$DBCTL" --migrations-dir "$dir" migrate up --format json >up1.json 2>up1.err \
    || { cat up1.err; fail "dbctl migrate up"; return; }
  say "  dbctl migrate up:         applied $(jq '.steps | length' up1.json) of $total"

  # Reverting everything: the corpus has migrations without down.sql, so dbctl must refuse before
  # touching anything (exit 2) and leave every migration applied.
  local rc=0
  "$DBCTL" --migrations-dir "$dir" migrate down --all >down-all.out 2>down-all.err || rc=$?
  local still
  still=$("$DBCTL" --migrations-dir "$dir" migrate status --format json | jq '.applied')
  if [ "$rc" = 2 ] && [ "$still" = "$total" ]; then
    say "  dbctl migrate down --all: refused (exit 2), $still still applied: $(grep -o 'cannot revert: [^;]*' down-all.err | cut -c1-80)..."
  else
    fail "migrate down --all: exit $rc, $still applied"
  fi

  # Revert everything that can be reverted: every migration after the newest irreversible one.
  local last_irreversible
  last_irreversible=$("$DBCTL" --migrations-dir "$dir" migrate status --format json |
    jq -r '[.migrations[] | select(.reversible == false) | .version] | last // empty')
  if [ -n "$last_irreversible" ]; then
    "$DBCTL" --migrations-dir "$dir" migrate down --to "$last_irreversible" --format json >down.json 2>down.err \
      || { cat down.err; fail "dbctl migrate down --to $last_irreversible"; return; }
    say "  dbctl migrate down --to $last_irreversible: reverted $(jq '.steps | length' down.json)"
  else
    "$DBCTL" --migrations-dir "$dir" migrate down --all --format json >down.json 2>down.err \
      || { cat down.err; fail "dbctl migrate down --all"; return; }
    say "  dbctl migrate down --all: reverted $(jq '.steps | length' down.json)"
  fi
  "$DBCTL" --migrations-dir "$dir" migrate up --format json >up2.json 2>up2.err \
    || { cat up2.err; fail "dbctl migrate up (second time)"; return; }
  say "  dbctl migrate up again:   applied $(jq '.steps | length' up2.json)"
  "$DBCTL" --migrations-dir "$dir" migrate status --check >/dev/null \
    || fail "status --check after the round trip"
  unset DATABASE_URL
}

# What diesel_cli does with "revert all, apply all" on the same corpus, for comparison: it reverts
# the newest ones, then stops with an error at the first migration without down.sql (after having
# changed the database), where dbctl refuses before touching anything.
diesel_round_trip() {
  local dir=$1 url=$2 rc=0
  "$DIESEL" migration revert --all --migration-dir "$dir" --database-url "$url" >revert.out 2>&1 || rc=$?
  say "  diesel migration revert --all on its database: exit $rc: $(tail -n 1 revert.out | cut -c1-110)"
  rc=0
  "$DIESEL" migration run --migration-dir "$dir" --database-url "$url" >rerun.out 2>&1 || rc=$?
  say "  diesel migration run again: exit $rc"
}

compare() {
  local label=$1
  if diff -u diesel.schema dbctl.schema >schema.diff; then
    say "  schema: identical ($(wc -l <dbctl.schema) lines of $label)"
  else
    fail "schemas differ:"
    cat schema.diff
  fi
}

# --- SQLite
say "== SQLite ($CORPUS/sqlite)"
: >dbctl.db
: >diesel.db
dbctl_round_trip "sqlite://$WORK/dbctl.db" "$CORPUS/sqlite"
"$DIESEL" migration run --migration-dir "$CORPUS/sqlite" --database-url "$WORK/diesel.db" >diesel.out 2>&1 \
  || { cat diesel.out; fail "diesel migration run"; }
say "  diesel migration run:     applied $(grep -c '^Running migration' diesel.out)"
sqlite3 diesel.db .schema >diesel.schema
# dbctl's companion table spans several lines in .schema: drop that whole statement.
python3 - dbctl.db >dbctl.schema <<'PY'
import subprocess, sys
out = subprocess.run(["sqlite3", sys.argv[1], ".schema"], capture_output=True, text=True).stdout
stmts, cur = [], []
for line in out.splitlines(keepends=True):
    cur.append(line)
    if line.rstrip().endswith(";"):
        stmts.append("".join(cur)); cur = []
sys.stdout.write("".join(s for s in stmts if "__dbctl_migrations" not in s))
PY
compare "sqlite3 .schema"
listed=$("$DIESEL" migration list --migration-dir "$CORPUS/sqlite" --database-url "$WORK/dbctl.db" | grep -c '\[X\]' || true)
say "  diesel migration list on dbctl's database: $listed applied"
diesel_round_trip "$CORPUS/sqlite" "$WORK/diesel.db"

# --- PostgreSQL
say "== PostgreSQL ($CORPUS/postgresql)"
db_a=dbctl_corpus_$$
db_b=diesel_corpus_$$
psql_admin() { "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 "$PG_SERVER/postgres" -c "$1" >/dev/null; }
psql_admin "CREATE DATABASE $db_a"
psql_admin "CREATE DATABASE $db_b"
trap 'psql_admin "DROP DATABASE IF EXISTS $db_a WITH (FORCE)"; psql_admin "DROP DATABASE IF EXISTS $db_b WITH (FORCE)"; rm -rf "$WORK"' EXIT
dbctl_round_trip "$PG_SERVER/$db_a" "$CORPUS/postgresql"
"$DIESEL" migration run --migration-dir "$CORPUS/postgresql" --database-url "$PG_SERVER/$db_b" >diesel.out 2>&1 \
  || { cat diesel.out; fail "diesel migration run"; }
say "  diesel migration run:     applied $(grep -c '^Running migration' diesel.out)"
dump() {
  "$PGBIN/pg_dump" --schema-only --no-owner -T __dbctl_migrations "$PG_SERVER/$1" |
    grep -vE '^\\(un)?restrict '
}
dump "$db_b" >diesel.schema
dump "$db_a" >dbctl.schema
compare "pg_dump --schema-only"
listed=$("$DIESEL" migration list --migration-dir "$CORPUS/postgresql" --database-url "$PG_SERVER/$db_a" | grep -c '\[X\]' || true)
say "  diesel migration list on dbctl's database: $listed applied"
diesel_round_trip "$CORPUS/postgresql" "$PG_SERVER/$db_b"

if [ "$status" = 0 ]; then say "OK"; else say "FAILED"; fi
exit "$status"
