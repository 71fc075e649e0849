-- Fewer index entries per job. Every change of a job's status writes a new row version and,
-- since status is indexed, an entry in every index whose predicate the new version meets; on
-- a no-op drain, index upkeep was a third of Postgres' work per job. Two indexes become one:
-- (status, id) over the jobs that did not succeed. It serves the dashboard's status filter
-- for every status but 'succeeded' (usually most rows, which a scan along the id order finds
-- at once) and every look at running jobs (the rescuer, global limits), which 0001's
-- (locked_by) index over running jobs served. A success no longer adds an entry to it, a
-- claim adds one entry instead of two.
-- On a large existing table, create it by hand first with CREATE INDEX CONCURRENTLY (same
-- name) to avoid blocking writes while it builds; this migration then finds it and skips.

CREATE INDEX IF NOT EXISTS {status_partial_index} ON {table} (status, id) WHERE status <> 'succeeded';

DROP INDEX IF EXISTS {status_id_index};

DROP INDEX IF EXISTS {running_index};
