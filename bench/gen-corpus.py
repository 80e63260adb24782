#!/usr/bin/env python3
"""Writes a migrations folder that looks like a real project's, for bench/migrate.sh.

    bench/gen-corpus.py OUT_DIR [--count 1000] [--dialect postgresql|sqlite] [--seed 12]

Real projects' up.sql files are not one statement each: they hold 1 to dozens of statements,
functions and triggers with dollar-quoted bodies (semicolons inside), DO blocks, indexes, data
back-fills over thousands of rows, comments, and now and then a migration that must run outside a
transaction (CREATE INDEX CONCURRENTLY). The mix here, per file:

- the number of statements: 1-5 for about 60% of files, 6-20 for 25%, 21-60 for 15%;
- statements: CREATE TABLE (some filled with 3,000 rows), ALTER TABLE ADD COLUMN, CREATE INDEX,
  UPDATE over a whole filled table, INSERT ... SELECT, CREATE VIEW, PL/pgSQL functions and
  triggers (PostgreSQL) or trigger bodies (SQLite), DO blocks (PostgreSQL), comments;
- every 40th migration (PostgreSQL) is `run_in_transaction = false` with one
  CREATE INDEX CONCURRENTLY, alone in its file as diesel_cli requires.

The output is deterministic for a seed, and every file applies cleanly, in order, on an empty
database with dbctl, diesel_cli, psql and sqlite3 alike.
"""

import argparse
import os
import random

ROWS = 3000


class Gen:
    def __init__(self, dialect, rng):
        self.pg = dialect == "postgresql"
        self.rng = rng
        self.tables = []  # [name, [columns], filled]
        self.n_obj = 0

    def name(self, prefix):
        self.n_obj += 1
        return f"{prefix}_{self.n_obj:05d}"

    def comment(self):
        return self.rng.choice([
            "-- keep this in step with the application's model",
            "-- back-fill before the constraint goes on",
            "/* reviewed; see the ticket for why; not before the release */",
            "-- idempotent on purpose: IF NOT EXISTS",
        ])

    def create_table(self, filled):
        t = self.name("tbl")
        cols = ["id", "account_id", "label", "amount", "status", "created_at"]
        if self.pg:
            ddl = (f"CREATE TABLE {t} (\n    id BIGINT PRIMARY KEY,\n    account_id BIGINT NOT NULL,\n"
                   f"    label TEXT NOT NULL DEFAULT '',\n    amount NUMERIC(12, 2) NOT NULL DEFAULT 0,\n"
                   f"    status VARCHAR(20) NOT NULL DEFAULT 'new',\n"
                   f"    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP\n);")
        else:
            ddl = (f"CREATE TABLE {t} (\n    id INTEGER PRIMARY KEY,\n    account_id INTEGER NOT NULL,\n"
                   f"    label TEXT NOT NULL DEFAULT '',\n    amount REAL NOT NULL DEFAULT 0,\n"
                   f"    status VARCHAR(20) NOT NULL DEFAULT 'new',\n"
                   f"    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP\n);")
        out = [ddl]
        if filled:
            out.append(self.fill(t))
        self.tables.append([t, cols, filled])
        return out

    def fill(self, t):
        if self.pg:
            return (f"INSERT INTO {t} (id, account_id, label, amount)\n"
                    f"SELECT g, g % 97, 'row ' || g, (g % 1000) / 10.0\n"
                    f"FROM generate_series(1, {ROWS}) AS g;")
        return (f"INSERT INTO {t} (id, account_id, label, amount)\n"
                f"WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {ROWS})\n"
                f"SELECT x, x % 97, 'row ' || x, (x % 1000) / 10.0 FROM g;")

    def some_table(self, filled=None):
        pool = [t for t in self.tables if filled is None or t[2] == filled]
        return self.rng.choice(pool) if pool else None

    def add_column(self):
        t = self.some_table()
        c = self.name("col")
        t[1].append(c)
        kind = self.rng.choice(["INTEGER NOT NULL DEFAULT 0", "TEXT", "BOOLEAN NOT NULL DEFAULT FALSE"
                                if self.pg else "BOOLEAN NOT NULL DEFAULT 0"])
        return [f"ALTER TABLE {t[0]} ADD COLUMN {c} {kind};"]

    def index(self):
        t = self.some_table()
        col = self.rng.choice(t[1][1:])
        return [f"CREATE INDEX {self.name('idx')} ON {t[0]} ({col});"]

    def update(self):
        t = self.some_table(filled=True) or self.some_table()
        m = self.rng.randint(2, 7)
        return [f"UPDATE {t[0]}\n   SET status = 'migrated',\n       label = label || ' (v2)'\n"
                f" WHERE id % {m} = 0;"]

    def insert_select(self):
        src = self.some_table(filled=True) or self.some_table()
        dst = self.create_table(False)
        return dst + [f"INSERT INTO {self.tables[-1][0]} (id, account_id, label)\n"
                      f"SELECT id, account_id, label FROM {src[0]} WHERE id <= 500;"]

    def insert_values(self):
        t = self.some_table(filled=False) or self.some_table()
        rows = []
        for _ in range(self.rng.randint(2, 8)):
            self.n_obj += 1
            rows.append(f"({100000 + self.n_obj}, {self.n_obj % 97}, 'seed value {self.n_obj}; it''s data')")
        return [f"INSERT INTO {t[0]} (id, account_id, label) VALUES\n    " + ",\n    ".join(rows) + ";"]

    def small_update(self):
        t = self.some_table(filled=False) or self.some_table()
        return [f"UPDATE {t[0]} SET status = 'active' WHERE account_id = {self.rng.randint(0, 96)};"]

    def delete(self):
        t = self.some_table()
        return [f"DELETE FROM {t[0]} WHERE status = 'obsolete' AND id > {self.rng.randint(0, 5000)};"]

    def view(self):
        t = self.some_table()
        return [f"CREATE VIEW {self.name('v')} AS\n  SELECT id, label, status\n    FROM {t[0]}\n"
                f"   WHERE status <> 'deleted';"]

    def function_and_trigger(self):
        # On a table without the bulk rows: a trigger firing for thousands of rows of every
        # later back-fill would make the benchmark a trigger benchmark.
        t = self.some_table(filled=False) or self.some_table()
        f = self.name("fn")
        tr = self.name("trg")
        if self.pg:
            return [
                f"CREATE OR REPLACE FUNCTION {f}() RETURNS trigger\nLANGUAGE plpgsql AS $body$\n"
                f"BEGIN\n    -- normalise; a ';' inside the body must not end the statement\n"
                f"    NEW.label := trim(NEW.label);\n    IF NEW.status IS NULL THEN\n"
                f"        NEW.status := 'new';\n    END IF;\n    RETURN NEW;\nEND;\n$body$;",
                f"CREATE TRIGGER {tr} BEFORE INSERT OR UPDATE ON {t[0]}\n"
                f"    FOR EACH ROW EXECUTE FUNCTION {f}();",
            ]
        return [
            f"CREATE TRIGGER {tr} AFTER UPDATE OF label ON {t[0]}\nBEGIN\n"
            f"    UPDATE {t[0]} SET status = 'touched' WHERE id = NEW.id AND status = 'new';\n"
            f"    SELECT CASE WHEN NEW.id < 0 THEN RAISE(ABORT, 'negative; id') END;\nEND;",
        ]

    def do_block(self):
        t = self.some_table()
        c = self.name("col")
        return [
            f"DO $$\nBEGIN\n    IF NOT EXISTS (\n        SELECT 1 FROM pg_catalog.pg_attribute\n"
            f"         WHERE attrelid = '{t[0]}'::regclass AND attname = '{c}'\n    ) THEN\n"
            f"        EXECUTE 'ALTER TABLE {t[0]} ADD COLUMN {c} INTEGER';\n    END IF;\nEND\n$$;"
        ]

    def statements(self, count):
        out = []
        if not self.tables or self.rng.random() < 0.15:
            out += self.create_table(self.rng.random() < 0.08)
        kinds = [(self.add_column, 8), (self.index, 8), (self.update, 5),
                 (self.create_table_small, 4), (self.view, 3), (self.function_and_trigger, 3),
                 (self.insert_select, 1), (self.comment_only, 4), (self.insert_values, 30),
                 (self.small_update, 15), (self.delete, 6)]
        if self.pg:
            kinds.append((self.do_block, 4))
        fns, weights = zip(*kinds)
        while len(out) < count:
            out += self.rng.choices(fns, weights)[0]()
        return out[:max(count, 1)]

    def create_table_small(self):
        return self.create_table(self.rng.random() < 0.02)

    def comment_only(self):
        # A comment line counts as a line, not a statement: pair it with a statement.
        return [self.comment() + "\n" + self.index()[0]]


def size(rng):
    r = rng.random()
    if r < 0.60:
        return rng.randint(1, 5)
    if r < 0.85:
        return rng.randint(6, 20)
    return rng.randint(21, 60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--dialect", choices=["postgresql", "sqlite"], default="postgresql")
    ap.add_argument("--seed", type=int, default=12)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    gen = Gen(args.dialect, rng)
    os.makedirs(args.out, exist_ok=True)
    statements = 0
    for i in range(1, args.count + 1):
        folder = os.path.join(args.out, f"2024-01-01-{i:06d}_step_{i:04d}")
        os.makedirs(folder, exist_ok=True)
        metadata = None
        if gen.pg and i % 40 == 0 and gen.tables:
            t = gen.some_table()
            body = [f"CREATE INDEX CONCURRENTLY {gen.name('idx_conc')} ON {t[0]} (account_id);"]
            metadata = "run_in_transaction = false\n"
        else:
            body = gen.statements(size(rng))
        statements += len(body)
        text = "-- generated by bench/gen-corpus.py\n" + "\n\n".join(body) + "\n"
        with open(os.path.join(folder, "up.sql"), "w") as f:
            f.write(text)
        with open(os.path.join(folder, "down.sql"), "w") as f:
            f.write("-- irreversible (benchmark corpus)\n")
        if metadata:
            with open(os.path.join(folder, "metadata.toml"), "w") as f:
                f.write(metadata)
    print(f"{args.count} migrations, {statements} statements, in {args.out}")


if __name__ == "__main__":
    main()
