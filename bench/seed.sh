#!/usr/bin/env bash
# bench/seed.sh: `dbctl seed` against the backends' own bulk loaders, side by side in one run.
#
#   SQLite:     dbctl seed   vs  sqlite3 -cmd ".mode csv" db ".import --skip 1 file events"
#   PostgreSQL: dbctl seed   vs  psql -c "\copy events FROM file WITH (FORMAT csv, HEADER true)"
#
# on a generated CSV of ROWS rows (integers, text, a timestamp, quoted fields with commas, empty
# fields), each run into a freshly created table. Prints mean times, dbctl/reference ratios and
# rows per second. Then seeds a ~1 GB file with `--dry-run` under /usr/bin/time -v and prints
# dbctl's peak resident memory next to the peak for the small file (flat memory = about equal).
#
# Usage: bench/seed.sh            (ROWS=1000000 RUNS=5 BIG_MB=1024 by default; BIG_MB=0 skips)
# Needs: hyperfine, sqlite3, /usr/lib/postgresql/15/bin/psql, /usr/bin/time, python3, a
# PostgreSQL server at $PG_URL (default postgres://postgres@127.0.0.1:5432, trust auth).
set -euo pipefail

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-5}
BIG_MB=${BIG_MB:-1024}
PG_SERVER=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PSQL=${PSQL:-/usr/lib/postgresql/15/bin/psql}
PG_DB=dbctl_seed_bench_$$
PG_DB_URL="$PG_SERVER/$PG_DB"

root=$(cd "$(dirname "$0")/.." && pwd)
for tool in hyperfine sqlite3 python3 /usr/bin/time "$PSQL"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

echo "building dbctl (release)..." >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
DBCTL="$root/target/release/dbctl"

work=$(mktemp -d /tmp/dbctl-seed-bench.XXXXXX)
cleanup() {
    rm -rf "$work"
    "$PSQL" "$PG_SERVER/postgres" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT

SCHEMA="CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, \
score INTEGER, created_at TIMESTAMP, note TEXT);"

# rows, note padding -> CSV on stdout. Every 10th note is empty (NULL), every 7th quoted with a comma.
generate() {
    awk -v rows="$1" -v pad="$2" 'BEGIN {
        print "id,name,email,score,created_at,note"
        for (i = 1; i <= rows; i++) {
            note = (i % 10 == 0) ? "" : ((i % 7 == 0) ? "\"quoted, with comma " i "\"" : "note " i pad)
            printf "%d,user %d,user%d@example.com,%d,2024-%02d-%02d %02d:%02d:%02d,%s\n",
                i, i, i, (i * 7919) % 100000, i % 12 + 1, i % 28 + 1, i % 24, i % 60, (i * 7) % 60, note
        }
    }'
}

mkdir -p "$work/seeds"
echo "generating $ROWS rows..." >&2
generate "$ROWS" "" > "$work/seeds/events.csv"
CSV="$work/seeds/events.csv"
echo "file: $(du -h "$CSV" | cut -f1), $ROWS rows" >&2

# Helper scripts keep hyperfine's command lines free of nested quoting.
cat > "$work/reset_sqlite.sh" <<EOF
rm -f "$work/bench.db" "$work/bench.db-journal"
sqlite3 "$work/bench.db" "$SCHEMA"
EOF
cat > "$work/sqlite_dbctl.sh" <<EOF
exec "$DBCTL" seed --database-url "sqlite://$work/bench.db" --seeds-dir "$work/seeds" -q
EOF
cat > "$work/sqlite_import.sh" <<EOF
exec sqlite3 -cmd ".mode csv" "$work/bench.db" ".import --skip 1 $CSV events"
EOF
cat > "$work/reset_pg.sh" <<EOF
"$PSQL" "$PG_DB_URL" -qc "DROP TABLE IF EXISTS events" -c "$SCHEMA" >/dev/null
EOF
cat > "$work/pg_dbctl.sh" <<EOF
exec "$DBCTL" seed --database-url "$PG_DB_URL" --seeds-dir "$work/seeds" -q
EOF
cat > "$work/pg_copy.sh" <<EOF
exec "$PSQL" "$PG_DB_URL" -qc "\\copy events FROM '$CSV' WITH (FORMAT csv, HEADER true)"
EOF

"$PSQL" "$PG_SERVER/postgres" -qc "CREATE DATABASE $PG_DB" >/dev/null

hyperfine --style basic --runs "$RUNS" --export-json "$work/sqlite.json" \
    --prepare "bash $work/reset_sqlite.sh" \
    -n "dbctl seed (sqlite)" "bash $work/sqlite_dbctl.sh" \
    -n "sqlite3 .import" "bash $work/sqlite_import.sh"

hyperfine --style basic --runs "$RUNS" --export-json "$work/pg.json" \
    --prepare "bash $work/reset_pg.sh" \
    -n "dbctl seed (postgres)" "bash $work/pg_dbctl.sh" \
    -n "psql \\copy" "bash $work/pg_copy.sh"

# Both loaded every row.
bash "$work/reset_sqlite.sh" && bash "$work/sqlite_dbctl.sh"
test "$(sqlite3 "$work/bench.db" 'SELECT count(*) FROM events')" = "$ROWS"
bash "$work/reset_pg.sh" && bash "$work/pg_dbctl.sh"
test "$("$PSQL" "$PG_DB_URL" -tAc 'SELECT count(*) FROM events')" = "$ROWS"

peak_kb() { # command... -> peak RSS in KiB of that command
    /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ { print $2 }'
}

small_sqlite=$(bash "$work/reset_sqlite.sh"; peak_kb "$DBCTL" seed --database-url "sqlite://$work/bench.db" --seeds-dir "$work/seeds" -q --dry-run)
small_pg=$(bash "$work/reset_pg.sh"; peak_kb "$DBCTL" seed --database-url "$PG_DB_URL" --seeds-dir "$work/seeds" -q --dry-run)

big_report=""
if [ "$BIG_MB" -gt 0 ]; then
    # ~1 KB rows: BIG_MB MiB of CSV.
    big_rows=$(( BIG_MB * 1024 ))
    pad=$(printf '%01200d' 0)
    mkdir -p "$work/big"
    echo "generating a ${BIG_MB} MiB file ($big_rows rows)..." >&2
    generate "$big_rows" "$pad" > "$work/big/events.csv"
    big_size=$(du -h "$work/big/events.csv" | cut -f1)
    bash "$work/reset_sqlite.sh"
    big_sqlite=$(peak_kb "$DBCTL" seed --database-url "sqlite://$work/bench.db" --seeds-dir "$work/big" -q --dry-run)
    bash "$work/reset_pg.sh"
    big_pg=$(peak_kb "$DBCTL" seed --database-url "$PG_DB_URL" --seeds-dir "$work/big" -q --dry-run)
    rm -f "$work/big/events.csv"
    big_report="$big_size|$big_rows|$big_sqlite|$big_pg"
fi

python3 - "$work/sqlite.json" "$work/pg.json" "$ROWS" "$small_sqlite" "$small_pg" "$big_report" <<'EOF'
import json, sys
sqlite, pg, rows = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
print()
print(f"{'backend':<11} {'tool':<24} {'mean s':>8} {'rows/s':>11} {'ratio':>7}")
for name, doc in (("sqlite", sqlite), ("postgres", pg)):
    ours, ref = doc["results"]
    for r in (ours, ref):
        ratio = r["mean"] / ref["mean"]
        print(f"{name:<11} {r['command']:<24} {r['mean']:>8.3f} {rows / r['mean']:>11,.0f} {ratio:>7.2f}")
    verdict = "within" if ours["mean"] / ref["mean"] <= 1.3 else "NOT within"
    print(f"{'':<11} dbctl/{ref['command']} = {ours['mean'] / ref['mean']:.2f}x ({verdict} the 1.3x goal)")
print()
print(f"peak RSS, {rows:,}-row file (--dry-run): sqlite {int(sys.argv[4]) / 1024:.1f} MiB, postgres {int(sys.argv[5]) / 1024:.1f} MiB")
if sys.argv[6]:
    size, big_rows, s, p = sys.argv[6].split("|")
    print(f"peak RSS, {size} file ({int(big_rows):,} rows, --dry-run): sqlite {int(s) / 1024:.1f} MiB, postgres {int(p) / 1024:.1f} MiB")
EOF
