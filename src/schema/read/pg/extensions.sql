-- Every extension of the database, whatever schemas are read: extensions belong to the database.
SELECT e.extname::text AS name, n.nspname::text AS schema, e.extversion::text AS version
FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
