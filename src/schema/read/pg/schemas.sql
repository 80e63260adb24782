-- The schemas to read: those asked for, else those on the search path.
SELECT nspname::text AS value FROM pg_catalog.pg_namespace
WHERE nspname = ANY(COALESCE($1, current_schemas(false))) ORDER BY nspname
