-- Every statement jobsupervisor runs against the jobs table, in one place.
-- Blocks start with "-- name: <noun_verb>" and a one-line description; {table}, {runners}
-- and {channel} are filled in per configured table by supervisor/queries.py. Parameters are
-- psycopg named placeholders. The state machine of SPEC §2 lives here.

-- name: job_insert
-- Enqueue one job; with a unique_key that is taken, inserts nothing (the caller looks it up).
INSERT INTO {table} (job_type, payload, queue, priority, run_at, max_attempts, unique_key)
VALUES (%(job_type)s, %(payload)s, %(queue)s, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s::float8)),
        %(max_attempts)s, %(unique_key)s)
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('queued', 'retry', 'running')
DO NOTHING
RETURNING id

-- name: job_insert_many
-- Enqueue many jobs in one statement from parallel arrays; ids come back in input order.
INSERT INTO {table} (job_type, payload, queue, priority, run_at, max_attempts, unique_key)
SELECT t.job_type, t.payload, t.queue, t.priority,
       coalesce(t.run_at, now() + make_interval(secs => t.delay)), t.max_attempts, t.unique_key
FROM unnest(%(job_types)s::text[], %(payloads)s::jsonb[], %(queues)s::text[], %(priorities)s::int[],
            %(run_ats)s::timestamptz[], %(delays)s::float8[], %(max_attempts)s::int[], %(unique_keys)s::text[])
     WITH ORDINALITY AS t(job_type, payload, queue, priority, run_at, delay, max_attempts, unique_key, ord)
ORDER BY t.ord
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('queued', 'retry', 'running')
DO NOTHING
RETURNING id, unique_key

-- name: job_get_by_unique_key
-- The live job holding a unique_key.
SELECT id FROM {table}
WHERE unique_key = %(unique_key)s AND status IN ('queued', 'retry', 'running')

-- name: jobs_claim
-- Claim up to %(n)s runnable jobs of the handled types (and served queues), highest priority
-- first; each claimed row gets one of %(locks)s (the child that will run it) as locked_by.
WITH candidates AS (
    SELECT id
    FROM {table}
    WHERE status IN ('queued', 'retry')
      AND run_at <= now()
      AND job_type = ANY(%(types)s::text[])
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), slots AS (
    SELECT id, row_number() OVER () AS slot FROM candidates
)
UPDATE {table} AS j
SET status = 'running',
    attempts = j.attempts + 1,
    locked_by = (%(locks)s::text[])[slots.slot],
    locked_at = now(),
    updated_at = now()
FROM slots
WHERE j.id = slots.id
RETURNING j.id, j.queue, j.job_type, j.payload::text AS payload, j.priority,
          extract(epoch FROM j.run_at)::float8 AS run_at,
          j.attempts, j.max_attempts, j.locked_by

-- name: jobs_record_and_claim
-- The claim ahead (supervisor/parent.py top_up_prefetch), with the successes waiting to be
-- recorded (jobs_set_succeeded_many) riding along: one round trip and one commit, which is
-- synchronous only when it records something. The two updates touch disjoint rows ('running'
-- ones become 'succeeded', 'queued'/'retry' ones become 'running').
-- It claims up to %(n)s jobs of the quick %(types)s, plus the head of the whole line: the
-- first job in claim order of any of the %(head_types)s, so that a more urgent job of another
-- type is not left waiting behind a backlog of quick ones (the children, kept busy by claims
-- ahead, may never be idle until it is gone). The head is usually one of the quick jobs
-- anyway; when it is not, it takes one of the %(n)s places. Claimed rows come first, in claim
-- order; recorded ids follow with a NULL job_type.
WITH durable AS MATERIALIZED (
    SELECT set_config('synchronous_commit',
                      CASE WHEN cardinality(%(done_ids)s::bigint[]) > 0 THEN 'on' ELSE 'off' END, true)
), recorded AS (
    UPDATE {table} AS j
    SET status = 'succeeded', finished_at = greatest(j.locked_at, now() - done.age * interval '1 microsecond'), updated_at = now()
    FROM durable, unnest(%(done_ids)s::bigint[], %(done_locks)s::text[], %(done_ages)s::bigint[]) AS done(id, lock, age)
    WHERE j.id = done.id AND j.status = 'running' AND j.locked_by = done.lock
    RETURNING j.id
), head AS (
    SELECT ctid, id, priority, run_at
    FROM {table}
    WHERE status IN ('queued', 'retry')
      AND run_at <= now()
      AND job_type = ANY(%(head_types)s::text[])
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), candidates AS (
    SELECT ctid, id, priority, run_at
    FROM {table}
    WHERE status IN ('queued', 'retry')
      AND run_at <= now()
      AND job_type = ANY(%(types)s::text[])
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), slots AS (
    -- A row both scans found (the head is a quick job) is one row: this transaction's own
    -- lock does not make the second scan skip it.
    SELECT ctid, id, row_number() OVER (ORDER BY priority DESC, run_at, id) AS slot
    FROM (SELECT * FROM head UNION SELECT * FROM candidates) AS c
    ORDER BY priority DESC, run_at, id
    LIMIT %(n)s
), claimed AS (
    UPDATE {table} AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        locked_by = (%(locks)s::text[])[slots.slot],
        locked_at = now(),
        updated_at = now()
    FROM slots
    -- Straight to the rows the scans locked (a TID scan): joined on id alone, the planner
    -- hashes the whole table for a few hundred rows. Locked, their ctid cannot move; a row
    -- that a concurrent commit changed after our snapshot is not found and stays queued.
    WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM slots)) AND j.id = slots.id
    RETURNING j.id, j.queue, j.job_type, j.payload::text AS payload, j.priority,
              extract(epoch FROM j.run_at)::float8 AS run_at, j.attempts, j.max_attempts, j.locked_by,
              slots.slot
)
SELECT id, queue, job_type, payload, priority, run_at, attempts, max_attempts, locked_by
FROM (SELECT * FROM claimed ORDER BY slot) AS c
UNION ALL
SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM recorded

-- name: jobs_claim_limited
-- jobs_claim when limits apply: at most %(type_room)s more per job type and %(queue_room)s more
-- per queue on this supervisor (NULL: no limit), and at most %(global_limits)s running per type
-- across every supervisor (the caller holds an advisory lock per such type, so the count
-- below sees every other claim). Types that are full fleet-wide are left out of the scan, as
-- the caller leaves out types and queues that are full here: a saturated type is skipped, never
-- waited behind. It looks at %(scan)s candidates; when a type with a little room has more
-- waiting than that, the caller claims again at once, with that type full and so skipped.
WITH global_room AS (
    SELECT g.job_type,
           g.lim - (SELECT count(*) FROM {table} r WHERE r.status = 'running' AND r.job_type = g.job_type) AS room
    FROM unnest(%(global_types)s::text[], %(global_limits)s::int[]) AS g(job_type, lim)
), candidates AS (
    SELECT id, job_type, queue, priority, run_at
    FROM {table}
    WHERE status IN ('queued', 'retry')
      AND run_at <= now()
      AND job_type = ANY(%(types)s::text[])
      AND job_type NOT IN (SELECT job_type FROM global_room WHERE room <= 0)
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(scan)s
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT c.id, c.job_type, c.queue, c.priority, c.run_at,
           row_number() OVER (PARTITION BY c.job_type ORDER BY c.priority DESC, c.run_at, c.id) AS type_rank,
           row_number() OVER (PARTITION BY c.queue ORDER BY c.priority DESC, c.run_at, c.id) AS queue_rank
    FROM candidates c
), picked AS (
    SELECT r.id, row_number() OVER (ORDER BY r.priority DESC, r.run_at, r.id) AS slot
    FROM ranked r
    JOIN unnest(%(types)s::text[], %(type_room)s::int[]) AS t(job_type, room) ON t.job_type = r.job_type
    LEFT JOIN unnest(%(queues)s::text[], %(queue_room)s::int[]) AS q(queue, room) ON q.queue = r.queue
    LEFT JOIN global_room g ON g.job_type = r.job_type
    WHERE (t.room IS NULL OR r.type_rank <= t.room)
      AND (q.room IS NULL OR r.queue_rank <= q.room)
      AND (g.room IS NULL OR r.type_rank <= g.room)
    ORDER BY r.priority DESC, r.run_at, r.id
    LIMIT %(n)s
)
UPDATE {table} AS j
SET status = 'running',
    attempts = j.attempts + 1,
    locked_by = (%(locks)s::text[])[picked.slot],
    locked_at = now(),
    updated_at = now()
FROM picked
WHERE j.id = picked.id
RETURNING j.id, j.queue, j.job_type, j.payload::text AS payload, j.priority,
          extract(epoch FROM j.run_at)::float8 AS run_at,
          j.attempts, j.max_attempts, j.locked_by

-- name: jobs_count_due
-- Runnable jobs of the given types (and queues) by type and queue, among the first %(limit)s in
-- claim order, with how many of each type in %(global_types)s run fleet-wide: whether and how
-- much the pool should grow (the caller fits them into the room each type and queue has left).
SELECT due.job_type, due.queue, count(*)::int,
       CASE WHEN due.job_type = ANY(%(global_types)s::text[])
            THEN (SELECT count(*) FROM {table} r WHERE r.status = 'running' AND r.job_type = due.job_type)::int
       END AS running_everywhere
FROM (
    SELECT job_type, queue
    FROM {table}
    WHERE status IN ('queued', 'retry')
      AND run_at <= now()
      AND job_type = ANY(%(types)s::text[])
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
) AS due
GROUP BY due.job_type, due.queue

-- name: job_set_succeeded
-- Record success, fenced: only the child that holds the lock can complete the job.
UPDATE {table}
SET status = 'succeeded', finished_at = now(), updated_at = now()
WHERE id = %(id)s AND status = 'running' AND locked_by = %(lock)s

-- name: jobs_set_succeeded_many
-- Record the success of many jobs at once (handlers that wrote nothing through job.conn report
-- to the supervisor, which batches them), each fenced by its own child's lock. Returns the ids
-- recorded: a missing one had lost its lock (recovered, killed, deleted) meanwhile.
-- The supervisor's connection commits asynchronously (claims); this statement is its own
-- transaction and turns synchronous commit on for it (set_config(..., true) lasts until the
-- commit, which reads it): a logged success survives a crash of the server, in one round trip.
-- finished_at is when the child reported the job done, %(ages)s microseconds ago, not when the batch
-- it waited in is recorded (never before the claim: clocks of two machines meet here).
WITH durable AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'on', true)
)
UPDATE {table} AS j
SET status = 'succeeded', finished_at = greatest(j.locked_at, now() - done.age * interval '1 microsecond'), updated_at = now()
FROM durable, unnest(%(ids)s::bigint[], %(locks)s::text[], %(ages)s::bigint[]) AS done(id, lock, age)
WHERE j.id = done.id AND j.status = 'running' AND j.locked_by = done.lock
RETURNING j.id

-- name: jobs_set_succeeded_many_again
-- The same, after a connection loss cut off the last attempt: its commit may have happened, so
-- rows already recorded as succeeded under the same lock count as recorded too (the
-- statement's snapshot predates its own update: a row is counted once).
WITH durable AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'on', true)
), done AS (
    SELECT done.* FROM durable, unnest(%(ids)s::bigint[], %(locks)s::text[], %(ages)s::bigint[]) AS done(id, lock, age)
), recorded AS (
    UPDATE {table} AS j
    SET status = 'succeeded', finished_at = greatest(j.locked_at, now() - done.age * interval '1 microsecond'), updated_at = now()
    FROM done
    WHERE j.id = done.id AND j.status = 'running' AND j.locked_by = done.lock
    RETURNING j.id
)
SELECT id FROM recorded
UNION ALL
SELECT j.id FROM {table} AS j JOIN done ON j.id = done.id AND j.locked_by = done.lock
WHERE j.status = 'succeeded'

-- name: job_set_failed_or_retry
-- Record a failed attempt, fenced: retry after %(delay)s seconds, or failed once attempts are used up.
UPDATE {table}
SET status = CASE WHEN attempts >= coalesce(max_attempts, %(default_max_attempts)s) THEN 'failed' ELSE 'retry' END,
    run_at = CASE WHEN attempts >= coalesce(max_attempts, %(default_max_attempts)s) THEN run_at
                  ELSE now() + make_interval(secs => %(delay)s) END,
    finished_at = CASE WHEN attempts >= coalesce(max_attempts, %(default_max_attempts)s) THEN now() END,
    locked_by = CASE WHEN attempts >= coalesce(max_attempts, %(default_max_attempts)s) THEN locked_by END,
    locked_at = CASE WHEN attempts >= coalesce(max_attempts, %(default_max_attempts)s) THEN locked_at END,
    last_error = %(error)s,
    updated_at = now()
WHERE id = %(id)s AND status = 'running' AND locked_by = %(lock)s
RETURNING status, extract(epoch FROM run_at)::float8 AS run_at

-- name: job_set_killed
-- A running job killed by an operator fails at once, whatever attempts remain.
UPDATE {table}
SET status = 'failed', finished_at = now(), updated_at = now(), last_error = %(error)s
WHERE id = %(id)s AND status = 'running' AND locked_by = %(lock)s

-- name: job_return
-- Give a running job back (graceful shutdown ran out of time, its completion was cut off, or
-- it was prefetched and never started): queued again at once, keeping its place in line, and
-- the interrupted attempt does not count.
UPDATE {table}
SET status = 'queued', attempts = greatest(attempts - 1, 0), run_at = least(run_at, now()),
    locked_by = NULL, locked_at = NULL, updated_at = now()
WHERE id = %(id)s AND status = 'running' AND locked_by = %(lock)s

-- name: jobs_return_many
-- job_return for many jobs in one statement (a child's queue of claimed-ahead jobs that will
-- not start), each fenced by its own lock.
UPDATE {table} AS j
SET status = 'queued', attempts = greatest(j.attempts - 1, 0), run_at = least(j.run_at, now()),
    locked_by = NULL, locked_at = NULL, updated_at = now()
FROM unnest(%(ids)s::bigint[], %(locks)s::text[]) AS back(id, lock)
WHERE j.id = back.id AND j.status = 'running' AND j.locked_by = back.lock

-- name: jobs_held_by_runner
-- Running jobs locked by this runner's children (lock = '<runner>/<child pid>'): after a lost
-- connection, a claim may have committed without its rows ever reaching the supervisor.
SELECT id, locked_by FROM {table}
WHERE status = 'running' AND left(locked_by, length(%(runner)s) + 1) = %(runner)s || '/'

-- name: jobs_next_run_at
-- When the next not-yet-due job of the handled types becomes due (epoch seconds), if any.
SELECT extract(epoch FROM min(run_at))::float8
FROM {table}
WHERE status IN ('queued', 'retry') AND run_at > now() AND job_type = ANY(%(types)s::text[])
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))

-- name: jobs_lock_lost
-- Which of our running attempts (id, lock) no longer hold their job (recovered by a rescuer,
-- killed, deleted), and whether an operator killed it (jobs_kill keeps the lock): the check
-- can see a kill before its NOTIFY arrives, and must report it the same way.
SELECT x.id, x.lock, k.id IS NOT NULL AS killed
FROM unnest(%(ids)s::bigint[], %(locks)s::text[]) AS x(id, lock)
LEFT JOIN {table} j ON j.id = x.id AND j.status = 'running' AND j.locked_by = x.lock
LEFT JOIN {table} k ON k.id = x.id AND k.status = 'failed' AND k.locked_by = x.lock
                   AND k.last_error = 'killed by operator'
WHERE j.id IS NULL

-- name: jobs_rescue
-- Running jobs whose runner is gone (listed dead, row missing, heartbeat stale) or whose lock is
-- older than lock_timeout go to retry, or to failed once attempts are used up; the attempt counts.
WITH lost AS (
    SELECT j.id,
           CASE
               WHEN r.id IS NULL THEN 'runner ' || split_part(j.locked_by, '/', 1) || ' is gone'
               WHEN r.id = ANY(%(dead_runners)s::text[]) THEN 'runner ' || r.id || ' died (process gone)'
               WHEN r.heartbeat_at < now() - make_interval(secs => %(stale_after)s)
                   THEN 'runner ' || r.id || ' stopped sending heartbeats at ' || r.heartbeat_at::text
               ELSE 'lock older than lock_timeout (' || %(lock_timeout_text)s || ')'
           END AS reason
    FROM {table} j
    LEFT JOIN {runners} r ON r.id = split_part(j.locked_by, '/', 1)
    WHERE j.status = 'running'
      AND (r.id IS NULL
           OR r.id = ANY(%(dead_runners)s::text[])
           OR r.heartbeat_at < now() - make_interval(secs => %(stale_after)s)
           OR j.locked_at < now() - make_interval(secs => %(lock_timeout)s))
    ORDER BY j.id
    LIMIT %(batch)s
    FOR UPDATE OF j SKIP LOCKED
), decided AS (
    SELECT lost.id, lost.reason,
           j.attempts >= coalesce(j.max_attempts,
                                  (SELECT m FROM unnest(%(types)s::text[], %(type_max_attempts)s::int[]) AS t(name, m)
                                   WHERE t.name = j.job_type),
                                  %(default_max_attempts)s) AS exhausted
    FROM lost JOIN {table} j ON j.id = lost.id
)
UPDATE {table} AS j
SET status = CASE WHEN decided.exhausted THEN 'failed' ELSE 'retry' END,
    run_at = CASE WHEN decided.exhausted THEN j.run_at ELSE now() END,
    finished_at = CASE WHEN decided.exhausted THEN now() END,
    locked_by = CASE WHEN decided.exhausted THEN j.locked_by END,
    locked_at = CASE WHEN decided.exhausted THEN j.locked_at END,
    last_error = 'recovered: ' || decided.reason || ' (attempt ' || j.attempts || ')'
                 || coalesce(E'\nprevious error: ' || j.last_error, ''),
    updated_at = now()
FROM decided
WHERE j.id = decided.id
RETURNING j.id, j.job_type, j.queue, j.status, j.attempts, decided.reason

-- name: runner_upsert
-- Register this supervisor (or re-register after a rescuer removed its row).
INSERT INTO {runners} (id, host, pid, pidns, started_at, heartbeat_at, children, busy, queues, job_types, version)
VALUES (%(id)s, %(host)s, %(pid)s, %(pidns)s, to_timestamp(%(started_at)s), now(), %(children)s, %(busy)s,
        %(queues)s, %(job_types)s, %(version)s)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), children = excluded.children, busy = excluded.busy,
    queues = excluded.queues, job_types = excluded.job_types

-- name: runner_heartbeat
-- Heartbeat from the loop that does the work; returns the row (info carries operator requests).
UPDATE {runners}
SET heartbeat_at = now(), children = %(children)s, busy = %(busy)s, job_types = %(job_types)s,
    info = info || %(info)s::jsonb
WHERE id = %(id)s
RETURNING info

-- name: runner_delete
-- A runner leaves after giving its jobs back.
DELETE FROM {runners} WHERE id = %(id)s

-- name: runners_on_host
-- Runners registered from this host and pid namespace: candidates for the dead-pid check.
SELECT id, pid, extract(epoch FROM started_at)::float8 AS started_at
FROM {runners}
WHERE host = %(host)s AND pidns = %(pidns)s AND id <> %(id)s

-- name: runners_delete_stale
-- Forget runners that are dead or silent for long; their jobs were rescued first.
DELETE FROM {runners}
WHERE id = ANY(%(dead_runners)s::text[])
   OR heartbeat_at < now() - make_interval(secs => %(forget_after)s)

-- name: runners_list
-- Live and recently seen runners, for status and the dashboard.
SELECT id, host, pid, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age,
       children, busy, queues, job_types, version, info
FROM {runners}
ORDER BY host, pid

-- name: jobs_count_by_status
-- Counts by status, type and queue.
SELECT status, job_type, queue, count(*) AS n
FROM {table}
GROUP BY status, job_type, queue
ORDER BY job_type, queue, status

-- name: job_oldest_waiting
-- The waiting job that has been due the longest.
SELECT id, job_type, queue, run_at, extract(epoch FROM now() - run_at)::float8 AS waiting_seconds
FROM {table}
WHERE status IN ('queued', 'retry') AND run_at <= now()
ORDER BY run_at, id
LIMIT 1

-- name: job_get
-- One job, whole.
SELECT id, queue, job_type, payload, status, priority, run_at, attempts, max_attempts,
       last_error, locked_by, locked_at, unique_key, created_at, updated_at, finished_at
FROM {table}
WHERE id = %(id)s

-- name: jobs_list
-- Jobs matching optional filters, newest first, keyset-paginated by id.
-- error_summary is one line: a traceback's last line (the exception), else the first line.
SELECT id, queue, job_type, status, priority, run_at, attempts, max_attempts,
       left(last_error, 200) AS last_error,
       left(CASE WHEN starts_with(last_error, 'Traceback')
                 THEN substring(rtrim(last_error, E' \n') FROM '[^\n]*$')
                 ELSE split_part(last_error, E'\n', 1) END, 200) AS error_summary,
       locked_by, created_at, updated_at, finished_at
FROM {table}
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(job_type)s::text IS NULL OR job_type = %(job_type)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: jobs_notify
-- Wake listening supervisors (after operator changes that make jobs runnable).
SELECT pg_notify({channel}, extract(epoch FROM now())::text)

-- name: jobs_retry
-- Operator: failed or cancelled jobs go back to queued, due now, with a fresh set of attempts
-- (last_error stays until the next attempt replaces it).
UPDATE {table}
SET status = 'queued', run_at = now(), attempts = 0, finished_at = NULL, locked_by = NULL, locked_at = NULL,
    updated_at = now()
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('failed', 'cancelled')
RETURNING id

-- name: jobs_cancel
-- Operator: waiting jobs are cancelled and will not run.
UPDATE {table}
SET status = 'cancelled', finished_at = now(), updated_at = now()
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('queued', 'retry')
RETURNING id

-- name: jobs_run_now
-- Operator: waiting jobs become due at once.
UPDATE {table}
SET run_at = now(), updated_at = now()
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('queued', 'retry')
RETURNING id

-- name: jobs_delete
-- Operator: remove jobs that are not running.
DELETE FROM {table}
WHERE id = ANY(%(ids)s::bigint[]) AND status <> 'running'
RETURNING id

-- name: jobs_status_of
-- The status of each given id that exists.
SELECT id, status FROM {table} WHERE id = ANY(%(ids)s::bigint[])

-- name: jobs_kill
-- Operator: running jobs fail at once with "killed by operator"; the runner holding each one
-- kills its child when told (NOTIFY) or at its next heartbeat (its lock is gone).
UPDATE {table}
SET status = 'failed', finished_at = now(), updated_at = now(), last_error = 'killed by operator'
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running'
RETURNING id, locked_by

-- name: control_notify
-- Tell runners about an operator request (payload is JSON: {"kill": id, "lock": ...} or {"stop": runner}).
SELECT pg_notify({control_channel}, %(payload)s)

-- name: runner_request_stop
-- Operator: ask one runner to drain and exit (seen at its next heartbeat even if NOTIFY is missed).
UPDATE {runners}
SET info = info || '{"stop": true}'::jsonb
WHERE id = %(id)s
RETURNING id

-- name: schedule_init
-- First sight of a schedule: start counting ticks from now (past ticks are not owed).
INSERT INTO {schedules} (name, last_tick, cron)
VALUES (%(name)s, %(now)s, %(cron)s)
ON CONFLICT (name) DO NOTHING

-- name: schedule_get
-- The last tick a schedule enqueued.
SELECT last_tick FROM {schedules} WHERE name = %(name)s

-- name: schedule_advance
-- Claim a tick: succeeds for exactly one supervisor (the row moves forward once).
UPDATE {schedules}
SET last_tick = %(tick)s, cron = %(cron)s, updated_at = now()
WHERE name = %(name)s AND last_tick < %(tick)s
RETURNING name

-- name: schedules_list
-- Every schedule's last tick, for 'jobsupervisor schedules'.
SELECT name, last_tick, cron FROM {schedules} ORDER BY name

-- name: jobs_delete_finished
-- Retention: delete one batch of finished jobs of the given statuses older than the cutoff.
DELETE FROM {table}
WHERE id IN (
    SELECT id FROM {table}
    WHERE finished_at IS NOT NULL AND finished_at < now() - make_interval(secs => %(older_than)s)
      AND status = ANY(%(statuses)s::text[])
    ORDER BY finished_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
)

-- Dashboard (supervisor/web). Job lists are keyset-paginated by id: jobs_page_newest walks
-- down from %(before_id)s, jobs_page_oldest walks up from %(after_id)s. Every filter is
-- optional (NULL: no filter). The dashboard plans these per execution (prepare_threshold=None)
-- so that a NULL filter folds away and a status or type filter uses its index; the other
-- filters are checked along that index's order.
-- The (job_type, id) index leaves out running jobs (migration 0006: a claim then adds no entry
-- to it), so a type filter reads two ordered parts, merged by id: the jobs of that type that
-- are not running (that index) and those running (the (status, id) index). Without a type
-- filter the second part folds to nothing at planning time.
-- %(pattern)s is an ILIKE pattern (wildcards in user input escaped by the caller) matched
-- against the payload's JSON text and last_error. payload_small is the payload when it is
-- small enough to summarise in a list (a handler's describe=), else NULL.

-- name: _job_filters
-- A fragment, not a statement: the job lists' filters but the type and the id bound.
(%(status)s::text IS NULL OR status = %(status)s::text)
AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
AND (%(runner)s::text IS NULL OR starts_with(locked_by, %(runner)s::text))
AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
AND (%(pattern)s::text IS NULL OR payload::text ILIKE %(pattern)s::text OR last_error ILIKE %(pattern)s::text)

-- name: _job_list_columns
-- A fragment: the columns of a job list's row.
id, queue, job_type, status, priority, run_at, attempts, max_attempts,
left(CASE WHEN starts_with(last_error, 'Traceback')
          THEN substring(rtrim(last_error, E' \n') FROM '[^\n]*$')
          ELSE split_part(last_error, E'\n', 1) END, 200) AS error_summary,
left(payload::text, 200) AS payload_preview,
CASE WHEN pg_column_size(payload) <= 2048 THEN payload END AS payload_small,
locked_by, locked_at, created_at, updated_at, finished_at

-- name: jobs_page_newest
-- Dashboard: one page of jobs matching the filters, newest first, with ids below %(before_id)s.
SELECT {_job_list_columns}
FROM ((SELECT * FROM {table}
       WHERE {_job_filters}
         AND (%(job_type)s::text IS NULL OR (job_type = %(job_type)s::text AND status <> 'running'))
         AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
       ORDER BY id DESC LIMIT %(limit)s)
      UNION ALL
      (SELECT * FROM {table}
       WHERE {_job_filters}
         AND job_type = %(job_type)s::text AND status = 'running'
         AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
       ORDER BY id DESC LIMIT %(limit)s)) AS page
ORDER BY id DESC
LIMIT %(limit)s

-- name: jobs_page_oldest
-- Dashboard: one page of jobs matching the filters, oldest first, with ids above %(after_id)s.
SELECT {_job_list_columns}
FROM ((SELECT * FROM {table}
       WHERE {_job_filters}
         AND (%(job_type)s::text IS NULL OR (job_type = %(job_type)s::text AND status <> 'running'))
         AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s::bigint)
       ORDER BY id LIMIT %(limit)s)
      UNION ALL
      (SELECT * FROM {table}
       WHERE {_job_filters}
         AND job_type = %(job_type)s::text AND status = 'running'
         AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s::bigint)
       ORDER BY id LIMIT %(limit)s)) AS page
ORDER BY id
LIMIT %(limit)s

-- name: jobs_ids_matching
-- Dashboard bulk actions: the next batch of ids matching the filters, newest first, below %(before_id)s.
SELECT id
FROM ((SELECT id FROM {table}
       WHERE {_job_filters}
         AND (%(job_type)s::text IS NULL OR (job_type = %(job_type)s::text AND status <> 'running'))
         AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
       ORDER BY id DESC LIMIT %(limit)s)
      UNION ALL
      (SELECT id FROM {table}
       WHERE {_job_filters}
         AND job_type = %(job_type)s::text AND status = 'running'
         AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
       ORDER BY id DESC LIMIT %(limit)s)) AS matching
ORDER BY id DESC
LIMIT %(limit)s

-- name: jobs_finished_per_bucket
-- Dashboard charts: succeeded and failed jobs per job type and time bucket of %(bucket)s
-- seconds over the last %(window)s seconds (buckets as epoch seconds; the finished index serves it).
SELECT (floor(extract(epoch FROM finished_at) / %(bucket)s) * %(bucket)s)::float8 AS bucket,
       job_type,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM {table}
WHERE finished_at >= now() - make_interval(secs => %(window)s)
  AND status IN ('succeeded', 'failed')
GROUP BY 1, 2
ORDER BY 1, 2

-- name: jobs_duration_buckets
-- /metrics: how many jobs of each type that finished in the last %(window)s seconds ran at
-- most each of %(bounds)s seconds (claim to finish of the last attempt), with their count and sum.
WITH done AS (
    SELECT job_type, extract(epoch FROM finished_at - locked_at)::float8 AS seconds
    FROM {table}
    WHERE finished_at >= now() - make_interval(secs => %(window)s)
      AND status IN ('succeeded', 'failed') AND locked_at IS NOT NULL
)
SELECT done.job_type, b.le, count(*) FILTER (WHERE done.seconds <= b.le) AS at_most,
       count(*) AS total, coalesce(sum(done.seconds), 0)::float8 AS seconds_sum
FROM done CROSS JOIN unnest(%(bounds)s::float8[]) AS b(le)
GROUP BY done.job_type, b.le
ORDER BY done.job_type, b.le

-- name: db_now
-- The database's clock (epoch seconds): ages on the dashboard are measured against it.
SELECT extract(epoch FROM now())::float8

-- Bulk enqueue (COPY)
-- enqueue_many() of many jobs: ids are taken from the table's identity sequence first, so the
-- plain rows can go in with COPY (no RETURNING there) and still come back in input order.

-- name: jobs_ids_reserve
-- %(n)s fresh ids from the jobs' identity sequence, ascending, and the transaction's now() (the
-- run_at of jobs due at once, the base of delays). OFFSET 0 resolves the sequence once, not per id.
SELECT now(), array(SELECT nextval(s.seq)
                    FROM (SELECT pg_get_serial_sequence('{table}', 'id')::regclass AS seq OFFSET 0) AS s,
                         generate_series(1, %(n)s::int)
                    ORDER BY 1)

-- name: jobs_copy
-- The rows without a unique_key, as COPY text with ids from jobs_ids_reserve. COPY writes the
-- given ids into the GENERATED ALWAYS column (as OVERRIDING SYSTEM VALUE would) and fires the
-- statement-level NOTIFY trigger like an INSERT.
COPY {table} (id, job_type, payload, queue, priority, run_at, max_attempts) FROM STDIN

-- name: jobs_copy_due
-- jobs_copy when every row is due at once: run_at takes its default, now(), as created_at does.
COPY {table} (id, job_type, payload, queue, priority, max_attempts) FROM STDIN

-- name: job_insert_many_with_ids
-- job_insert_many with ids from jobs_ids_reserve, so a batch mixing rows with and without a
-- unique_key keeps ids ascending in input order; a row whose key is taken inserts nothing.
INSERT INTO {table} (id, job_type, payload, queue, priority, run_at, max_attempts, unique_key)
OVERRIDING SYSTEM VALUE
SELECT t.id, t.job_type, t.payload, t.queue, t.priority,
       coalesce(t.run_at, now() + make_interval(secs => t.delay)), t.max_attempts, t.unique_key
FROM unnest(%(ids)s::bigint[], %(job_types)s::text[], %(payloads)s::jsonb[], %(queues)s::text[],
            %(priorities)s::int[], %(run_ats)s::timestamptz[], %(delays)s::float8[], %(max_attempts)s::int[],
            %(unique_keys)s::text[])
     WITH ORDINALITY AS t(id, job_type, payload, queue, priority, run_at, delay, max_attempts, unique_key, ord)
ORDER BY t.ord
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('queued', 'retry', 'running')
DO NOTHING
RETURNING id
