#!/usr/bin/env bash
# `dbctl migrate up` against diesel_cli's `migration run` and against the floor (the same SQL fed to
# psql -f / sqlite3, each migration in its own BEGIN ... COMMIT, or none for a migration with
# `run_in_transaction = false`; no bookkeeping), side by side, on the vaultwarden corpus and on a
# generated corpus that looks like a real project's (bench/gen-corpus.py: 1,000 migrations of 1
# to 60 statements, functions and triggers, DO blocks, indexes, back-fills over thousands of
# rows, CREATE INDEX CONCURRENTLY outside a transaction). Every run starts from an empty database
# and is timed whole (process start, connect, read the folder, apply, exit).
#
#   cargo build --release && bench/migrate.sh
# Settings: RUNS (rounds, default 11), GENERATED (default 1000; 0 skips the generated corpus),
# ONLY (a pattern: `vaultwarden`, `generated`, `sqlite`, `postgresql`, `generated.*sqlite`...),
# CORPUS, DBCTL, DIESEL, PGBIN, PG_SERVER.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-11}
ONLY=${ONLY:-}
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

if [ "$GENERATED" -gt 0 ]; then
  python3 "$ROOT/bench/gen-corpus.py" generated/postgresql --count "$GENERATED" --dialect postgresql
  python3 "$ROOT/bench/gen-corpus.py" generated/sqlite --count "$GENERATED" --dialect sqlite
fi

# The floor: every up.sql in version order, each wrapped in its own transaction unless its
# metadata.toml says `run_in_transaction = false`.
floor_sql() {
  local dir=$1
  for d in $(find "$dir" -mindepth 1 -maxdepth 1 -type d | sort); do
    if grep -qsE '^[[:space:]]*run_in_transaction[[:space:]]*=[[:space:]]*false' "$d/metadata.toml"; then
      cat "$d/up.sql"
      printf '\n;\n'
    else
      printf 'BEGIN;\n'
      cat "$d/up.sql"
      printf '\n;\nCOMMIT;\n'
    fi
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
# The machine is shared: the tools take turns run by run so that a burst of someone else's I/O
# hits all of them alike, and the summary uses medians and shows the spread.
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
      "sqlite3 -bail $WORK/bench.db < $WORK/floor.sql")
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
  # Each round in another order (dbctl first, then diesel_cli first, then the floor first), so
  # that none of them always follows the same one.
  for r in $(seq 0 $((RUNS - 1))); do
    for k in 0 1 2; do
      i=$(((r + k) % 3))
      bash -c "$prepare" >/dev/null 2>&1
      time_ms "${cmds[$i]}" >>"$WORK/times.$i"
    done
  done
  local -a med
  for i in 0 1 2; do
    med[i]=$(median <"$WORK/times.$i")
    printf '  %-28s median %6s ms   min %6s  max %6s   runs: %s\n' "${names[$i]}" "${med[$i]}" \
      "$(sort -n "$WORK/times.$i" | head -n 1)" "$(sort -n "$WORK/times.$i" | tail -n 1)" \
      "$(tr '\n' ' ' <"$WORK/times.$i")"
  done
  # Per round, dbctl over each reference: the spread of the ratio, which the shared machine's
  # noise moves less than it moves the times.
  local r_d r_f
  r_d=$(paste "$WORK/times.0" "$WORK/times.1" | awk '{printf "%.4f\n", $1/$2}' | sort -n | tr '\n' ' ')
  r_f=$(paste "$WORK/times.0" "$WORK/times.2" | awk '{printf "%.4f\n", $1/$2}' | sort -n | tr '\n' ' ')
  echo "  per-round dbctl/diesel (sorted): $r_d"
  echo "  per-round dbctl/floor  (sorted): $r_f"
  SUMMARY+=("$(printf '| %-20s | %-10s | %7s ms | %7s ms | %7s ms | %5.3fx | %5.3fx | %s-%s / %s-%s |' \
    "$label" "$backend" "${med[0]}" "${med[1]}" "${med[2]}" \
    "$(echo "${med[0]}/${med[1]}" | bc -l)" "$(echo "${med[0]}/${med[2]}" | bc -l)" \
    "$(echo "$r_d" | awk '{print $1}')" "$(echo "$r_d" | awk '{print $NF}')" \
    "$(echo "$r_f" | awk '{print $1}')" "$(echo "$r_f" | awk '{print $NF}')")")
}

wanted() { [ -z "$ONLY" ] || echo "$1 $2" | grep -qE "$ONLY"; }
wanted vaultwarden sqlite && bench "vaultwarden corpus" sqlite "$CORPUS/sqlite"
wanted vaultwarden postgresql && bench "vaultwarden corpus" postgresql "$CORPUS/postgresql"
if [ "$GENERATED" -gt 0 ]; then
  wanted generated sqlite && bench "$GENERATED generated" sqlite "$WORK/generated/sqlite"
  wanted generated postgresql && bench "$GENERATED generated" postgresql "$WORK/generated/postgresql"
fi

echo
echo "| data set             | backend    |     dbctl  | diesel_cli |      floor | dbctl/diesel | dbctl/floor | per-round ratio ranges |"
echo "|----------------------|------------|------------|------------|------------|--------|--------|--------|"
printf '%s\n' "${SUMMARY[@]}"
echo "(medians of $RUNS interleaved rounds; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "(goals: PostgreSQL dbctl/diesel <= 1.00 and dbctl/floor <= 1.02; SQLite dbctl/floor <= 1.05)"
