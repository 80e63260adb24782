#!/usr/bin/env bash
# bench/pgbouncer.sh: `dbctl seed` of ROWS CSV rows into PostgreSQL, directly and through PgBouncer
# in transaction pooling mode (Debian's pgbouncer, started here on a free port in front of the same
# server, pool size 4), side by side in one hyperfine run; prints the through/direct ratio.
# Then times 8 concurrent `dbctl migrate up` of 50 migrations through PgBouncer (each migration
# once, all exit 0) and prints the wall time and each run's lock wait.
#
# Usage: bench/pgbouncer.sh        (ROWS=1000000 RUNS=5 by default)
# Needs: hyperfine, /usr/sbin/pgbouncer, psql, a PostgreSQL server at 127.0.0.1:$PG_PORT (5432),
# user postgres with trust auth. As root, pgbouncer runs as the postgres user.
set -euo pipefail

ROWS=${ROWS:-1000000}
RUNS=${RUNS:-5}
PG_PORT=${PG_PORT:-5432}
PSQL=${PSQL:-/usr/lib/postgresql/15/bin/psql}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
DB=dbctl_pgb_bench_$$

root=$(cd "$(dirname "$0")/.." && pwd)
for tool in hyperfine python3 "$PSQL" "$PGBOUNCER"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
echo "building dbctl (release)..." >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
DBCTL="$root/target/release/dbctl"

work=$(mktemp -d /tmp/dbctl-pgb-bench.XXXXXX)
chmod 755 "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() {
    [ -f "$work/pgbouncer.pid" ] && kill "$(cat "$work/pgbouncer.pid")" 2>/dev/null || true
    "$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=$PG_PORT user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $work/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
echo '"postgres" ""' > "$work/users.txt"
if [ "$(id -u)" = 0 ]; then
    chown -R postgres "$work"
    setpriv --reuid=postgres --regid=postgres --clear-groups "$PGBOUNCER" -d "$work/pgbouncer.ini"
else
    "$PGBOUNCER" -d "$work/pgbouncer.ini"
fi
for _ in $(seq 1 50); do "$PSQL" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAtc 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done

"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE $DB"
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" -qc \
    "CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, score INTEGER, created_at TIMESTAMP)"
mkdir -p "$work/seeds"
echo "generating $ROWS rows..." >&2
awk -v rows="$ROWS" 'BEGIN { print "id,name,email,score,created_at"
    for (i = 1; i <= rows; i++) printf "%d,user %d,user%d@example.com,%d,2024-%02d-%02d 10:00:00\n", i, i, i, (i * 7919) % 100000, i % 12 + 1, i % 28 + 1 }' \
    > "$work/seeds/events.csv"
DIRECT="postgres://postgres@127.0.0.1:$PG_PORT/$DB"
POOLED="postgres://postgres@127.0.0.1:$port/$DB"
cd "$work"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$work/seed.json" \
    -n direct "$DBCTL seed --truncate -q --database-url $DIRECT" \
    -n pgbouncer "$DBCTL seed --truncate -q --database-url $POOLED"
python3 - "$work/seed.json" "$ROWS" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
rows = int(sys.argv[2])
print(f"seed {rows} rows: direct {r['direct']:.2f} s, through PgBouncer {r['pgbouncer']:.2f} s, "
      f"ratio {r['pgbouncer'] / r['direct']:.2f}x")
PY

mkdir -p "$work/mig"
for i in $(seq -w 1 50); do
    mkdir -p "$work/mig/2024-01-01-0000${i}_t$i"
    echo "CREATE TABLE t$i (id INT PRIMARY KEY); INSERT INTO t$i SELECT generate_series(1, 100);" > "$work/mig/2024-01-01-0000${i}_t$i/up.sql"
done
start=$(date +%s.%N)
for n in $(seq 1 8); do
    "$DBCTL" --migrations-dir "$work/mig" migrate up --format json --database-url "$POOLED" > "$work/up$n.json" 2>/dev/null &
done
fail=0; for job in $(jobs -p); do wait "$job" || fail=$((fail + 1)); done
end=$(date +%s.%N)
python3 - "$work" "$start" "$end" "$fail" <<'PY'
import json, sys, glob
work, start, end, fail = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
runs = [json.load(open(f)) for f in sorted(glob.glob(work + "/up*.json"))]
steps = sum(len(r.get("steps", [])) for r in runs)
waits = sorted(round(r.get("lock_wait_ms", -1)) for r in runs)
print(f"8 concurrent migrate up through PgBouncer: {fail} failed, {steps} migrations applied in all "
      f"(50 expected), wall {end - start:.2f} s, lock waits (ms) {waits}")
PY
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$DB" -qAtc \
    "SELECT 'recorded: ' || count(*) || ' rows, ' || count(DISTINCT version) || ' versions' FROM __diesel_schema_migrations"
