-- Indexes for the dashboard's job lists: keyset pages (newest first, by id) filtered by status
-- or by job type stay index range scans on tables of millions of rows. Only these two: every
-- index costs every enqueue and every status change, and the other filters (queue, runner,
-- time range, search) are applied along the primary key's order, which stops after one page.
-- On a large existing table, create them by hand first with CREATE INDEX CONCURRENTLY (same
-- names) to avoid blocking writes while they build; this migration then finds them and skips.

CREATE INDEX IF NOT EXISTS {status_id_index} ON {table} (status, id);

CREATE INDEX IF NOT EXISTS {type_id_index} ON {table} (job_type, id);
