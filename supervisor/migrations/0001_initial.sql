-- The jobs table of SPEC §2, its runners table, the NOTIFY trigger and the claim index.
-- {table}, {runners}, {notify_fn}, {notify_trigger} and {channel} are filled in per configured table.

CREATE TABLE IF NOT EXISTS {table} (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue         text        NOT NULL DEFAULT 'default',
    job_type      text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}',
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'retry', 'failed', 'cancelled')),
    priority      integer     NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer     NULL CHECK (max_attempts IS NULL OR max_attempts >= 1),
    last_error    text        NULL,
    locked_by     text        NULL,
    locked_at     timestamptz NULL,
    unique_key    text        NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz NULL
);

-- Serves the claim: waiting jobs, highest priority first, then run_at, then id.
CREATE INDEX IF NOT EXISTS {claim_index} ON {table} (priority DESC, run_at, id)
    WHERE status IN ('queued', 'retry');

-- At most one job per unique_key among the jobs that are still to run or running.
CREATE UNIQUE INDEX IF NOT EXISTS {unique_index} ON {table} (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('queued', 'retry', 'running');

-- The rescuer and the operator commands look at running jobs only; this stays tiny.
CREATE INDEX IF NOT EXISTS {running_index} ON {table} (locked_by)
    WHERE status = 'running';

-- Retention deletes finished jobs by age.
CREATE INDEX IF NOT EXISTS {finished_index} ON {table} (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS {runners} (
    id            text        PRIMARY KEY,
    host          text        NOT NULL,
    pid           integer     NOT NULL,
    pidns         text        NOT NULL DEFAULT '',
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    children      integer     NOT NULL DEFAULT 0,
    busy          integer     NOT NULL DEFAULT 0,
    queues        text[]      NULL,
    job_types     text[]      NOT NULL DEFAULT '{}',
    version       text        NOT NULL DEFAULT '',
    info          jsonb       NOT NULL DEFAULT '{}'
);

-- One NOTIFY per INSERT statement (not per row), carrying the earliest run_at as epoch
-- seconds, so a bulk insert of 10,000 jobs wakes listeners once and a future job tells
-- them when to wake up.
CREATE OR REPLACE FUNCTION {notify_fn}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    earliest timestamptz;
BEGIN
    SELECT min(run_at) INTO earliest FROM new_rows WHERE status IN ('queued', 'retry');
    IF earliest IS NOT NULL THEN
        PERFORM pg_notify({channel}, extract(epoch FROM earliest)::text);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS {notify_trigger} ON {table};
CREATE TRIGGER {notify_trigger}
    AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {notify_fn}();
