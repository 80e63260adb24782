-- Indexes, but not those that back a primary key or unique constraint (shown as that constraint).
-- An expression key is given as its text.
SELECT i.indrelid::bigint AS oid, ic.relname::text AS name, i.indisunique AS unique,
       ARRAY(SELECT CASE WHEN i.indkey[k - 1] = 0
                         THEN COALESCE(pg_catalog.pg_get_indexdef(i.indexrelid, k, true), '')
                         ELSE (SELECT a.attname::text FROM pg_catalog.pg_attribute a
                               WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[k - 1]) END
             FROM generate_series(1, i.indnkeyatts) k ORDER BY k) AS columns,
       (i.indexprs IS NOT NULL) AS expression,
       pg_catalog.pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       am.amname::text AS method, COALESCE(pg_catalog.pg_get_indexdef(i.indexrelid, 0, true), '') AS definition
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_constraint con
     ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u')
WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = ANY($1) AND con.oid IS NULL
