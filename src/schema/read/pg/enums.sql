-- Enum types, their labels in declaration order.
SELECT n.nspname::text AS schema, t.typname::text AS name,
       array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid
WHERE n.nspname = ANY($1) GROUP BY n.nspname, t.typname
