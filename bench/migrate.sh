#!/usr/bin/env bash
# `dbctl migrate up` against diesel_cli's `migration run` and against the floor (the same SQL fed to
# psql -f / sqlite3, each migration in its own BEGIN ... COMMIT, no bookkeeping), side by side in one
# hyperfine run per data set and backend. Data sets: the vaultwarden corpus, and 1,000 generated
# small migrations (a table and an index each). Every run starts from an empty database.
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

command -v hyperfine >/dev/null || { echo "hyperfine is missing (apt-get install -y hyperfine)"; exit 2; }
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

declare -a SUMMARY
bench() {
  local label=$1 backend=$2 dir=$3
  local url prepare floor
  floor_sql "$dir" >floor.sql
  if [ "$backend" = sqlite ]; then
    url="$WORK/bench.db"
    prepare="rm -f $WORK/bench.db $WORK/bench.db-journal; touch $WORK/bench.db"
    floor="sqlite3 $WORK/bench.db < $WORK/floor.sql"
    dburl="sqlite://$url"
  else
    url="$PG_SERVER/$PGDB"
    prepare="$PGBIN/psql -q -X $PG_SERVER/postgres -c 'DROP DATABASE IF EXISTS $PGDB WITH (FORCE)' -c 'CREATE DATABASE $PGDB'"
    floor="$PGBIN/psql -q -X -v ON_ERROR_STOP=1 -f $WORK/floor.sql $url"
    dburl=$url
  fi
  echo
  echo "== $label on $backend ($(find "$dir" -mindepth 1 -maxdepth 1 -type d | wc -l) migrations)"
  hyperfine --runs "$RUNS" --style basic --prepare "$prepare" \
    --export-json "$WORK/result.json" \
    -n "dbctl migrate up" "DATABASE_URL=$dburl $DBCTL --migrations-dir $dir migrate up --quiet" \
    -n "diesel migration run" "$DIESEL migration run --migration-dir $dir --database-url $url" \
    -n "floor ($([ "$backend" = sqlite ] && echo sqlite3 || echo psql -f))" "$floor >/dev/null"
  local d f w
  d=$(jq '.results[0].mean' "$WORK/result.json")
  f=$(jq '.results[1].mean' "$WORK/result.json")
  w=$(jq '.results[2].mean' "$WORK/result.json")
  SUMMARY+=("$(printf '| %-22s | %-10s | %8.0f ms | %8.0f ms | %8.0f ms | %5.2fx | %5.2fx |' \
    "$label" "$backend" "$(echo "$d*1000" | bc -l)" "$(echo "$f*1000" | bc -l)" "$(echo "$w*1000" | bc -l)" \
    "$(echo "$d/$f" | bc -l)" "$(echo "$d/$w" | bc -l)")")
}

bench "vaultwarden corpus" sqlite "$CORPUS/sqlite"
bench "vaultwarden corpus" postgresql "$CORPUS/postgresql"
bench "$GENERATED generated" sqlite "$WORK/generated"
bench "$GENERATED generated" postgresql "$WORK/generated"

echo
echo "| data set               | backend    |    dbctl    |  diesel_cli |    floor    | dbctl/diesel | dbctl/floor |"
echo "|------------------------|------------|-------------|-------------|-------------|--------|--------|"
printf '%s\n' "${SUMMARY[@]}"
echo "(means of $RUNS runs each; goal: dbctl/diesel <= 1.00, dbctl/floor <= 1.10)"
