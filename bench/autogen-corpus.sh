#!/usr/bin/env bash
# `revision --autogenerate` over a real project's history (vaultwarden's migrations): for each
# migration N, the desired schema is the one after N (dumped: sqlite_master's statements, or
# pg_dump --schema-only), the migrations folder holds 1..N-1; dbctl writes the migration, which is
# applied with `migrate up` and must give the schema after N (`inspect --format json` compared,
# PostgreSQL's column order aside), then `migrate down` must give the schema after N-1.
# Prints one line per failing step with the reason, and the counts per backend.
#
# Not part of the test suite (a few minutes on PostgreSQL). Run by hand:
#   cargo build && bench/autogen-corpus.sh [sqlite|postgresql|both]
# Settings: CORPUS (default /work/shared/corpus/vaultwarden), DBCTL, PG_SERVER.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${CORPUS:-/work/shared/corpus/vaultwarden}
DBCTL=${DBCTL:-$ROOT/target/debug/dbctl}
PG_SERVER=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
WHICH=${1:-both}
[ -d "$CORPUS/sqlite" ] || { echo "autogen-corpus: skipped: no corpus at $CORPUS"; exit 0; }
[ -x "$DBCTL" ] || { echo "autogen-corpus: no binary at $DBCTL (cargo build first)"; exit 2; }
command -v jq >/dev/null || { echo "autogen-corpus: needs jq"; exit 2; }

WORK=$(mktemp -d)
# The PostgreSQL databases made (a file: new_db runs in a subshell).
: >"$WORK/pg_dbs"
cleanup() {
  while read -r db; do
    psql -qh 127.0.0.1 -U postgres -c "drop database if exists \"$db\" with (force)" >/dev/null 2>&1
  done <"$WORK/pg_dbs"
  rm -rf "$WORK"
}
trap cleanup EXIT

ordered() { ls -1 "$1" | while read -r n; do [ -d "$1/$n" ] && printf '%s\t%s\n' "$(echo "${n%%_*}" | tr -d -)" "$n"; done | sort | cut -f2; }

# The schema of a database as JSON, with what a migration does not decide taken out.
normal_json() { # url backend
  local sort='.'
  [ "$2" = postgresql ] && sort='.tables[].columns |= sort_by(.name)'
  local json
  # A failed read never compares equal to anything.
  json=$("$DBCTL" inspect --format json --no-rows --database-url "$1" 2>/dev/null) \
    && jq -e -S "del(.migrations) | .tables[].rows = null | $sort" <<<"$json" 2>/dev/null \
    || echo "inspect of $1 failed ($RANDOM$RANDOM)"
}

dump() { # url backend file
  if [ "$2" = sqlite ]; then
    sqlite3 "${1#sqlite://}" "select sql || ';' from sqlite_master where sql is not null and name not like 'sqlite_%' and name not like '__diesel%' and name not like '__dbctl%' order by rowid" >"$3"
  else
    # Recent pg_dump versions wrap the dump in psql's \restrict ... \unrestrict: not SQL.
    pg_dump --schema-only --no-owner --no-privileges -T __diesel_schema_migrations -T '__dbctl*' "$1" \
      | grep -v -E '^\\(un)?restrict ' >"$3"
  fi
}

new_db() { # backend name -> url
  if [ "$1" = sqlite ]; then
    : >"$WORK/$2.db"; echo "sqlite://$WORK/$2.db"
  else
    psql -qh 127.0.0.1 -U postgres -c "create database \"$2\"" >/dev/null && echo "$2" >>"$WORK/pg_dbs"
    echo "$PG_SERVER/$2"
  fi
}

drop_db() { # backend name
  if [ "$1" = sqlite ]; then rm -f "$WORK/$2.db"; else psql -qh 127.0.0.1 -U postgres -c "drop database if exists \"$2\" with (force)" >/dev/null 2>&1; fi
}

run_backend() {
  local be=$1 src="$CORPUS/$1" pass=0 fail=0 n=0 same=0
  mapfile -t all < <(ordered "$src")
  local ref_name="agc_ref_$$"; local ref; ref=$(new_db "$be" "$ref_name")
  local full="$WORK/full_$be"; mkdir -p "$full"; cp -r "$src"/. "$full"/
  normal_json "$ref" "$be" >"$WORK/schema_0.json"
  # Where the scratch databases go (SQLite's are in memory: the URL only names the backend).
  local server="$PG_SERVER/postgres"; [ "$be" = sqlite ] && server="sqlite://$WORK/unused.db"
  for i in "${!all[@]}"; do
    n=$((i + 1)); local name=${all[$i]}
    "$DBCTL" migrate up -q --step 1 --migrations-dir "$full" --database-url "$ref" >/dev/null 2>&1
    normal_json "$ref" "$be" >"$WORK/schema_$n.json"
    dump "$ref" "$be" "$WORK/desired_$n.sql"
    local dir="$WORK/m_${be}_$n"; mkdir -p "$dir"
    for j in $(seq 0 $((i - 1))); do cp -r "$src/${all[$j]}" "$dir/"; done
    local out rc
    out=$("$DBCTL" revision step --autogenerate --from "$WORK/desired_$n.sql" --migrations-dir "$dir" \
      --database-url "$server" 2>&1 >/dev/null)
    rc=$?
    local why=""
    if [ $rc -ne 0 ]; then
      why="autogenerate exit $rc: $(echo "$out" | grep -v '^warning' | head -1)"
    elif ! ls "$dir" | grep -q '_step'; then
      why="autogenerate found no change"
      # No change is right when migration N changed nothing the model shows.
      cmp -s "$WORK/schema_$n.json" "$WORK/schema_$i.json" && why="" && same=$((same + 1))
    fi
    if [ -z "$why" ] && ls "$dir" | grep -q '_step'; then
      local t="agc_t_$$_$n"; local url; url=$(new_db "$be" "$t")
      out=$("$DBCTL" migrate up -q --migrations-dir "$dir" --database-url "$url" 2>&1)
      if [ $? -ne 0 ]; then
        why="migrate up: $(echo "$out" | head -2 | tr '\n' ' ')"
      elif ! diff <(normal_json "$url" "$be") "$WORK/schema_$n.json" >"$WORK/diff" ; then
        why="schema after up.sql differs: $(grep '^[<>]' "$WORK/diff" | head -4 | tr -s ' ' | tr '\n' ' ')"
      else
        out=$("$DBCTL" migrate down -q --migrations-dir "$dir" --database-url "$url" 2>&1)
        if [ $? -ne 0 ]; then
          why="migrate down: $(echo "$out" | head -2 | tr '\n' ' ')"
        elif ! diff <(normal_json "$url" "$be") "$WORK/schema_$i.json" >"$WORK/diff"; then
          why="schema after down.sql differs: $(grep '^[<>]' "$WORK/diff" | head -4 | tr -s ' ' | tr '\n' ' ')"
        fi
      fi
      drop_db "$be" "$t"
    fi
    if [ -z "$why" ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "  $be step $n ($name): $why"; fi
  done
  echo "autogen-corpus $be: $pass of $n steps pass ($same of them rightly found no schema change), $fail fail"
}

case $WHICH in
  sqlite) run_backend sqlite ;;
  postgresql) run_backend postgresql ;;
  *) run_backend sqlite; run_backend postgresql ;;
esac
