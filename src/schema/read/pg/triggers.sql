-- User triggers (not the internal ones behind foreign keys) of every table and view read.
SELECT t.tgrelid::bigint AS oid, t.tgname::text AS name, t.tgenabled::text AS enabled,
       pg_catalog.pg_get_triggerdef(t.oid, true) AS definition
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = ANY($1)
