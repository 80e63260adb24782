-- The database's own schemas, not PostgreSQL's internal ones (for an error message).
SELECT nspname::text AS value FROM pg_catalog.pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'
ORDER BY nspname
