#!/usr/bin/env bash
# Speed of `dbctl revision --autogenerate` on a large project: a migrations folder of TABLES
# migrations (one table each: six columns, a foreign key to the table before, an index) against a
# desired schema.sql of the same TABLES tables where every table has one more column and every
# tenth one more index. Times, per backend, `revision --check` (everything but writing: both
# scratch schemas built and read, both directions diffed) when the schema differs and when it
# does not, and `revision NAME --autogenerate` (the folder written). Whole process timed, scratch
# databases included (PostgreSQL: one created and dropped per run). Prints the median of RUNS.
#
#   cargo build --release && bench/autogen.sh
# Settings: TABLES (default 200), RUNS (default 5), DBCTL, PG_SERVER.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TABLES=${TABLES:-200}
RUNS=${RUNS:-5}
DBCTL=${DBCTL:-$ROOT/target/release/dbctl}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
[ -x "$DBCTL" ] || { echo "no build at $DBCTL (cargo build --release)"; exit 2; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

table() { # n extra(0|1)
  local n=$1 ref=""
  [ "$n" -gt 1 ] && ref=", parent_id INTEGER REFERENCES t$((n - 1)) (id)"
  local extra=""; [ "$2" = 1 ] && extra=", note TEXT"
  echo "CREATE TABLE t$n (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, qty INTEGER DEFAULT 0, price NUMERIC(10, 2), created TEXT$ref$extra);"
  echo "CREATE INDEX t${n}_name ON t$n (name);"
  if [ "$2" = 1 ] && [ $((n % 10)) -eq 0 ]; then echo "CREATE INDEX t${n}_qty ON t$n (qty) WHERE qty > 0;"; fi
}

for n in $(seq 1 "$TABLES"); do
  d="$WORK/project/migrations/$(printf '2024-01-01-%06d' "$n")_t$n"
  mkdir -p "$d"
  table "$n" 0 >"$d/up.sql"
  echo "DROP TABLE t$n;" >"$d/down.sql"
  table "$n" 1 >>"$WORK/project/schema.sql"
  table "$n" 0 >>"$WORK/project/same.sql"
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

# Runs `dbctl ARGS` RUNS times; prints the median wall time in seconds. $EXPECT is the exit code.
timed() {
  local i t0 t1 rc
  for i in $(seq 1 "$RUNS"); do
    rm -rf "$WORK/project/migrations/"*_written*
    t0=$(date +%s.%N)
    set +e; "$DBCTL" "$@" >/dev/null 2>"$WORK/err"; rc=$?; set -e
    t1=$(date +%s.%N)
    [ "$rc" = "$EXPECT" ] || { echo "dbctl $* exited $rc (expected $EXPECT): $(head -3 "$WORK/err")" >&2; exit 1; }
    echo "$t1 - $t0" | bc
  done | median
}

cd "$WORK/project"
for backend in sqlite postgresql; do
  url="sqlite://$WORK/unused.db"; [ $backend = postgresql ] && url="$PG_SERVER/postgres"
  export DATABASE_URL=$url
  diff=$(EXPECT=4 timed revision --check)
  same=$(EXPECT=0 timed revision --check --from same.sql)
  write=$(EXPECT=0 timed revision written --autogenerate)
  printf '%-10s %s tables, %s migrations: check (differs) %ss, check (no change) %ss, --autogenerate %ss\n' \
    "$backend" "$TABLES" "$TABLES" "$diff" "$same" "$write"
done
