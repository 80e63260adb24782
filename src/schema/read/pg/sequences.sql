-- Sequences, with the `table.column` that owns one (serial and identity columns).
SELECT n.nspname::text AS schema, c.relname::text AS name,
       pg_catalog.format_type(s.seqtypid, NULL) AS data_type,
       s.seqstart AS start, s.seqincrement AS increment,
       (SELECT tc.relname || '.' || a.attname FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class tc ON tc.oid = d.refobjid
        JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
          AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1) AS owned_by
FROM pg_catalog.pg_sequence s
JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1)
