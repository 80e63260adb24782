#!/usr/bin/env bash
# `dbctl migrate up` against diesel_cli's `migration run` and against the floor (the same SQL fed to
# psql -f / sqlite3, each migration in its own BEGIN ... COMMIT, no bookkeeping), side by side in one
# run per data set and backend. Data sets: the vaultwarden corpus, and 1,000 generated
# small migrations (a table and an index each). Every run starts from an empty database.
# Wall time of the whole command (process start, connect, read the folder, apply, exit).
#
#   cargo build --release && bench/migrate.sh
# Settings: RUNS (default 5), CORPUS, DBCTL, DIESEL, PGBIN, PG_SERVER, GENERATED (default 1000).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
GENERATED=${GENERATED:-1000}
CORPUS=${CORPUS:-/work/shared/corpus/vaultwarden}
DBCTL=${DBCTL:-$ROOT/target/release/dbctl}
DIESEL=${DIESEL:-/work/tools/bin/diesel}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
PGDB=dbctl_bench_$$

[ -x "$DBCTL" ] || { echo "no release build at $DBCTL (cargo build --release)"; exit 2; }
[ -x "$DIESEL" ] || { echo "diesel_cli is missing at $DIESEL"; exit 2; }

WORK=$(mktemp -d)
admin() { "$PGBIN/psql" -q -X -v ON_ERROR_STOP=1 "$PG_SERVER/postgres" -c "$1" >/dev/null; }
trap 'admin "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" || true; rm -rf "$WORK"' EXIT
cd "$WORK"

# 1,000 small migrations, portable SQL.
mkdir -p generated
for i in $(seq 1 "$GENERATED"); do
  d=$(printf 'generated/2024-01-01-%06d_table_%04d' "$i" "$i")
  mkdir -p "$d"
  printf 'CREATE TABLE t%d (\n  id INTEGER PRIMARY KEY,\n  name VARCHAR(100) NOT NULL\n);\nCREATE INDEX t%d_name ON t%d (name);\n' "$i" "$i" "$i" >"$d/up.sql"
  printf 'DROP TABLE t%d;\n' "$i" >"$d/down.sql"
done

# The floor: every up.sql in version order, each wrapped in its own transaction.
floor_sql() {
  local dir=$1
  for d in $(find "$dir" -mindepth 1 -maxdepth 1 -type d | sort); do
    printf 'BEGIN;\n'
    cat "$d/up.sql"
    printf '\n;\nCOMMIT;\n'
  done
}

# Milliseconds taken by a shell command.
time_ms() {
  local t0 t1
  t0=$(date +%s%N)
  bash -c "$1" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err"; echo "failed: $1"; exit 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -a SUMMARY
# The machine is shared: the tools take turns run by run (A B C A B C ...) so that a burst of
# someone else's I/O hits all of them alike, and the summary uses medians.
bench() {
  local label=$1 backend=$2 dir=$3
  local prepare dburl
  local -a names cmds
  floor_sql "$dir" >floor.sql
  if [ "$backend" = sqlite ]; then
    prepare="rm -f $WORK/bench.db $WORK/bench.db-journal; touch $WORK/bench.db"
    dburl="sqlite://$WORK/bench.db"
    cmds=("DATABASE_URL=$dburl $DBCTL --migrations-dir $dir migrate up --quiet"
      "$DIESEL migration run --migration-dir $dir --database-url $WORK/bench.db"
      "sqlite3 $WORK/bench.db < $WORK/floor.sql")
    names=("dbctl migrate up" "diesel migration run" "floor: sqlite3 < floor.sql")
  else
    prepare="$PGBIN/psql -q -X $PG_SERVER/postgres -c 'DROP DATABASE IF EXISTS $PGDB WITH (FORCE)' -c 'CREATE DATABASE $PGDB'"
    dburl="$PG_SERVER/$PGDB"
    cmds=("DATABASE_URL=$dburl $DBCTL --migrations-dir $dir migrate up --quiet"
      "$DIESEL migration run --migration-dir $dir --database-url $dburl"
      "$PGBIN/psql -q -X -v ON_ERROR_STOP=1 -f $WORK/floor.sql $dburl")
    names=("dbctl migrate up" "diesel migration run" "floor: psql -f floor.sql")
  fi
  echo
  echo "== $label on $backend ($(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l) migrations, $RUNS runs each, interleaved)"
  : >"$WORK/times.0"; : >"$WORK/times.1"; : >"$WORK/times.2"
  for _ in $(seq 1 "$RUNS"); do
    for i in 0 1 2; do
      bash -c "$prepare" >/dev/null 2>&1
      time_ms "${cmds[$i]}" >>"$WORK/times.$i"
    done
  done
  local -a med
  for i in 0 1 2; do
    med[i]=$(median <"$WORK/times.$i")
    printf '  %-28s median %6s ms   runs: %s\n' "${names[$i]}" "${med[$i]}" "$(tr '\n' ' ' <"$WORK/times.$i")"
  done
  SUMMARY+=("$(printf '| %-20s | %-10s | %7s ms | %7s ms | %7s ms | %5.2fx | %5.2fx |' \
    "$label" "$backend" "${med[0]}" "${med[1]}" "${med[2]}" \
    "$(echo "${med[0]}/${med[1]}" | bc -l)" "$(echo "${med[0]}/${med[2]}" | bc -l)")")
}

bench "vaultwarden corpus" sqlite "$CORPUS/sqlite"
bench "vaultwarden corpus" postgresql "$CORPUS/postgresql"
bench "$GENERATED generated" sqlite "$WORK/generated"
bench "$GENERATED generated" postgresql "$WORK/generated"

echo
echo "| data set             | backend    |     dbctl  | diesel_cli |      floor | dbctl/diesel | dbctl/floor |"
echo "|----------------------|------------|------------|------------|------------|--------|--------|"
printf '%s\n' "${SUMMARY[@]}"
echo "(medians of $RUNS interleaved runs; goal: dbctl/diesel <= 1.00, dbctl/floor <= 1.10)"
