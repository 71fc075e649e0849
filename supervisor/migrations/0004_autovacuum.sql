-- A queue table churns: every job is inserted, updated two or three times and deleted. With
-- the default thresholds (20 % of the table changed) its statistics describe a queue of long
-- ago and dead rows pile up in the claim index. Analyse and vacuum it after 2 % instead.
ALTER TABLE {table} SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);
