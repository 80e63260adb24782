#!/usr/bin/env bash
# `dbctl ping` against PostgreSQL's own pg_isready, side by side in one hyperfine run.
# Usage: bench/ping.sh [RUNS]   (needs hyperfine and a PostgreSQL server on 127.0.0.1:5432)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-100}
PG_BIN=/usr/lib/postgresql/$(ls /etc/postgresql | sort -V | tail -n1)/bin
URL=${DBCTL_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
cargo build --release --quiet
DBCTL=target/release/dbctl
# Debian's /usr/bin/pg_isready is a Perl wrapper: time the real binary.
hyperfine -N --warmup 10 --runs "$RUNS" \
  -n "pg_isready" "$PG_BIN/pg_isready -q -h 127.0.0.1 -p 5432" \
  -n "dbctl ping" "$DBCTL ping -q --database-url $URL" \
  -n "dbctl ping (sslmode=disable)" "$DBCTL ping -q --database-url $URL?sslmode=disable" \
  -n "dbctl ping sqlite" "$DBCTL ping -q --database-url sqlite::memory:"
