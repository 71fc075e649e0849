-- Built-in cron: the last tick each schedule enqueued. Advancing it with a compare-and-set in
-- the same transaction as the job insert makes every tick enqueue exactly once, however many
-- supervisors run the same schedule.
CREATE TABLE IF NOT EXISTS {schedules} (
    name        text        PRIMARY KEY,
    last_tick   timestamptz NOT NULL,
    cron        text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
