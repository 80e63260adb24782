-- Which of the tables (quoted names, with their positions) no longer exist.
SELECT t.i FROM unnest($1::text[], $2::bigint[]) AS t(name, i)
WHERE pg_catalog.to_regclass(t.name) IS NULL
