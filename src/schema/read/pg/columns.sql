-- The columns of every relation of relations.sql, in each relation's order.
SELECT a.attrelid::bigint AS oid, a.attname::text AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type,
       a.attnotnull AS not_null, pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) AS default_expr,
       a.attidentity::text AS identity, a.attgenerated::text AS generated,
       pg_catalog.col_description(a.attrelid, a.attnum) AS comment
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = ANY($1)
ORDER BY a.attrelid, a.attnum
