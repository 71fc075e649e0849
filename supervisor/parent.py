"""The supervisor: one thread, one loop (SPEC §6).

It waits on the signal wake-up pipe, the LISTEN socket and its children's sockets and
output pipes at once, with a timeout equal to the next due time. Then, every tick, in order:

    handle signals -> read children -> reap children -> kill overdue children
    -> database chores (flush, heartbeat, rescue, poll) -> manage the pool -> claim and hand out
    -> grow the pool if work is still waiting

Signal handlers only record the signal number; everything else happens here, in the loop.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import os
import secrets
import select
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import psycopg

from . import __version__, logs
from .backoff import retry_delay
from .children import protocol
from .children.pool import BOOTING, BUSY, IDLE, Child, Pool, Running, describe_exit
from .config import Config, load_config
from .courier import Answer, Courier
from .children.web import WebProcess
from .db import close_quietly, connect, describe_error, int_array, is_permanent, text_array
from .errors import ConfigError, UserError
from .gates import ClaimPlan, Gatekeeper
from .logs import JobFields
from .listener import Listener, parse_due
from .migrate import current_version, latest_version, migrate
from .queries import queries_for
from .registry import DEFAULT_MAX_ATTEMPTS
from .rescuer import Rescuer, host_name, pid_namespace
from .retention import Retention
from .scheduler import Scheduler
from .sdnotify import Notifier
from .units import mask_dsn

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP,
                   signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
MAX_BOOTING = max(2, os.cpu_count() or 2)  # children starting at once when demand grows
BOOT_FAILURES_TO_GIVE_UP = 5  # children dying before "ready" in a row (without a boot_error message)
RETENTION_INTERVAL = 60.0  # seconds between retention passes
# Prefetch: while a backlog of short jobs waits, each busy child gets more jobs claimed for it
# and sent ahead (up to PUSH_BYTES at once, more once fewer than PUSH_LOW are left in its
# socket; the rest wait here), which it runs back to back: one claim statement then serves
# many jobs, and a child never waits for a claim round trip. A child's queue holds about
# PREFETCH_WINDOW seconds of work (by the types' average duration), at most PREFETCH_MAX
# jobs; it is topped up once it has run down by half, or by an eighth (1/PREFETCH_TOP_UP) when
# the half left would run out before a statement comes back: Postgres takes ~30 µs a job to
# record one and claim the next, two children run a no-op in ~20 µs each, so for such jobs a
# statement must go out long before a queue runs dry, and a deep queue is what lets two
# statements be out at once without either coming back to idle children. Only without limits or gates (they count what runs), only for types
# quicker than PREFETCH_MAX_AVG_SECONDS. A child whose current job has run PREFETCH_STALE
# gives its queue back (the jobs go back to queued, for other children or machines).
PREFETCH_WINDOW = 0.2
PREFETCH_MAX = 1024
PREFETCH_TOP_UP = 8  # top up once the queues ran down by 1/PREFETCH_TOP_UP of their depth
PREFETCH_MAX_AVG_SECONDS = 0.025
PREFETCH_STALE = 0.5
# The first claims ahead of a backlog are small and each next one twice the size: a statement
# of a thousand rows takes Postgres ~50-100 ms, which children with nothing queued would spend
# idle; small ones come back in a few milliseconds while the next, bigger one is out already.
AHEAD_FIRST = 64
PUSH_BYTES = 64 * 1024
PUSH_LOW = 64  # a child with fewer queued jobs in its socket than this is sent more
# Successes reported by children are recorded together: once this many wait, or the oldest has
# waited this long (its finished_at is that much late; nothing else waits for it).
COMPLETION_BATCH = 128
# Statements of the hot path out at once (each on its own courier and connection): while one
# is in Postgres, the next one can be too; children run through their queues in a fraction of
# the time one statement takes.
COURIERS = 2
COMPLETION_DELAY = 0.02
# While claims ahead go out (a backlog of quick jobs), successes wait longer to ride along with
# the next one: one statement instead of two. Measured on ~3 ms jobs, two children: 0.08 ->
# 0.04 transactions a job, ~260 -> ~190 µs of supervisor and Postgres CPU a job.
COMPLETION_DELAY_AHEAD = 0.1
LOCK_LOST_GRACE = 0.2  # how long a child whose job lost its lock gets to show it finished it instead
# While every child has jobs queued in its socket behind the one it runs, its reports can wait:
# the loop then wakes at most every REPORT_BATCH seconds for children (at once for anything
# else: signals, NOTIFYs, answers, deadlines), and one tick handles several jobs' reports. Never
# longer than half of the work the least-stocked child has queued, nor when that is under
# REPORT_BATCH_MIN (quick jobs: ticks batch many reports on their own). Each wake-up costs the
# loop ~300 µs on a machine whose caches the children's handlers keep cold: 10 ms -> 50 ms took
# ~5 ms jobs on two children from ~170 to ~50 ticks a second, 125-195 -> 65-110 µs of supervisor
# CPU a job. A queued job's deadline counts from the child's own report (``at``), not the tick.
REPORT_BATCH = 0.05
REPORT_BATCH_MIN = 0.001
# A child's own time of a queued job's start is believed within this of ours (the same clock;
# anything further off is a message from before a pause, or nonsense).
REPORT_BATCH_MAX_LATE = 1.0
GATE_RETRY = 1.0  # a closed gate is asked again after this long (it samples once a second)
GLOBAL_LIMIT_LOCK_SPACE = 0x6A6F6273  # first key of the advisory locks serialising global_concurrency claims


class FatalError(Exception):
    """The supervisor cannot go on (a child cannot boot): drain and exit 1."""


@dataclass
class PendingWrite:
    """An outcome the supervisor must record but could not yet (the database is away)."""

    query: str
    params: dict[str, Any]
    what: str


@dataclass
class Flight:
    """What a statement sent with the courier carries: the children its claimed rows are for
    (one entry per row asked for; None: it claims nothing), the successes it records, and the
    jobs an operator killed while it was out (their rows must not start when they arrive)."""

    slots: list[Child] | None
    batch: list[tuple[Running, int, Any]]
    killed: set[tuple[int, str]]
    # Rows asked for per child (by id of the child): asked on every tick while it is out.
    per_child: collections.Counter = field(default_factory=collections.Counter)
    quick: frozenset[str] = frozenset()  # the types claimed ahead; another is the head of the line

    def __post_init__(self) -> None:
        if self.slots:
            self.per_child.update(id(c) for c in self.slots)


class Supervisor:
    def __init__(self, config: Config, dsn: str):
        self.config = config
        self.dsn = dsn
        self.q = queries_for(config.database.table)
        self.log = logs.get_logger()
        self.host = host_name()
        self.runner_id = f"{self.host}:{os.getpid()}:{secrets.token_hex(2)}"
        self.started_wall = time.time()
        self.pool = Pool(self.runner_id)
        self.listener = Listener(dsn, [self.q.channel, self.q.control_channel])
        self.rescuer = Rescuer(self.q, self.runner_id, lock_timeout=config.lock_timeout,
                               stale_after=self.stale_after(config))
        self.notifier = Notifier()
        self.gatekeeper = self.make_gatekeeper(config)
        self.scheduler = self.make_scheduler(config)
        self.retention = Retention(self.q, config.retention.succeeded, config.retention.failed)
        self.web = WebProcess(config, dsn) if config.web.listen else None
        # Signals, NOTIFYs, couriers' answers, the web child: read at once. Children's sockets
        # and output pipes have their own selector, which may wait a little (report_batch).
        self.selector = selectors.DefaultSelector()
        self.child_selector = selectors.DefaultSelector()
        self.any_selector = selectors.DefaultSelector()
        self.any_selector.register(self.selector.fileno(), selectors.EVENT_READ, self.selector)
        self.any_selector.register(self.child_selector.fileno(), selectors.EVENT_READ, self.child_selector)
        self.signals: collections.deque[int] = collections.deque()
        self.conn: psycopg.Connection | None = None
        self.db_retry_at = 0.0
        self.db_retry_delay = 0.2
        self.db_lost_since: float | None = None
        self.pending: list[PendingWrite] = []
        # The connection broke: a claim in flight may have committed without its rows reaching
        # us. Once it is back (and the outcomes kept meanwhile are written), give those back.
        self.orphan_check = False
        # Successes reported by children whose handler wrote nothing through job.conn, recorded
        # by the supervisor in one statement (COMPLETION_DELAY, COMPLETION_BATCH):
        # (job, child pid, duration in ms).
        self.completions: list[tuple[Running, int, Any]] = []
        self.completions_uncertain = False
        self.completions_due = 0.0  # monotonic time by which the waiting successes are recorded
        # The hot path's statements (record successes, claim ahead) run on the couriers' own
        # connections while the loop goes on; what each carries is its context (a Flight).
        self.couriers = [Courier(lambda: self.open_connection("jobsupervisor-claims")) for _ in range(COURIERS)]
        self.courier_retry_at = 0.0
        self.courier_retry_delay = 0.2
        self.courier_lost_since: float | None = None
        # Per-job log records of the batch being handled, written together by flush_logs()
        # before any other line, so each job's lines stay in order.
        self.log_lines: list[tuple[str, str, Any]] = []  # for logs.emit_many: fields are a dict or JobFields
        # The last claim's plan allowed prefetching (no limits, no gates) of these types.
        self.prefetch_types: list[str] = []
        self.prefetch_queues: list[str] | None = None
        self.claim_seconds = 0.01  # how long a claim ahead takes to come back (moving average)
        self.ahead_cap = AHEAD_FIRST  # rows the next claim ahead may take (doubles up to the depths)
        self.prefetch_head_types: list[str] = []  # every type the claim ahead looks at for the head of the line
        # Job types and their options, as reported by children (the parent imports no user code).
        self.types: dict[str, dict[str, Any]] = {}
        self.children_min = config.children.min
        self.children_max = config.children.max
        # Claim bookkeeping.
        self.claim_wanted = True
        self.next_due_wall: float | None = None  # earliest known future run_at (local clock)
        self.clock_offset = 0.0  # database now() - local time.time()
        now = time.monotonic()
        self.next_poll = now
        self.next_heartbeat = now
        self.next_rescue = now
        self.next_probe = now + config.poll_interval
        self.next_retention = now + 10.0  # not in the middle of starting up
        self.next_schedule_wall: float | None = None  # next cron tick (local clock)
        # When a claim was pointless (gates closed, every type at its limit), try again no
        # sooner than this, or the loop would spin; a finished job resets it.
        self.reap_wanted = True
        self.next_reap = 0.0
        self.type_avg: dict[str, float] = {}  # seconds, moving average per job type (prefetch: quick ones only)
        self.claim_retry_at = 0.0
        # The last claim was held back by a limit (a type, a queue, a gate's cap, fleet-wide):
        # a finished job may make room for work that waits now, so job_done asks again.
        self.claim_held_back = False
        # How many more jobs the gates let start after the last claim (None: no cap): the pool
        # does not grow for work they would not let start.
        self.gate_headroom: int | None = None
        # Work waits behind a fleet-wide limit: room frees up when a job ends on another
        # machine, which we do not hear about, so look again at this time.
        self.next_fleet_check: float | None = None
        # Shutdown state.
        self.draining = False
        self.drain_deadline: float | None = None
        self.stop_now = False
        self.immediate = False
        self.exit_code = 0
        self.ready_sent = False
        self.boot_failures = 0
        # Why the supervisor cannot go on (a child cannot boot). Set where it is noticed, raised
        # by the tick: noticing happens in selector callbacks and while reaping, also during the
        # final cleanup, where a second child's boot error must not escape as a traceback.
        self.fatal: str | None = None
        self.stats = collections.Counter()
        self.last_status = ""

    @staticmethod
    def make_gatekeeper(config: Config, fresh: bool = False) -> Gatekeeper:
        try:
            return Gatekeeper(config, fresh=fresh)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's gate module failed to import
            raise UserError(f"gate.python: cannot load {config.gate.python!r}: "
                            f"{type(error).__name__}: {error}", exit_code=2) from None

    def make_scheduler(self, config: Config) -> Scheduler:
        # The job type's registered queue is known from the children's ready messages.
        return Scheduler(config.schedules, self.q, config.database.table,
                         default_queue=lambda job_type: self.types.get(job_type, {}).get("queue", "default"))

    @staticmethod
    def stale_after(config: Config) -> float:
        # Long enough that a loop busy for a moment is not declared dead, short enough that a
        # machine that died is noticed within seconds.
        return max(3 * config.heartbeat_interval, 10.0)

    # ======================================================================================
    # Start and stop
    # ======================================================================================
    def run(self) -> int:
        self.install_signals()
        try:
            self.start()
            while not self.finished():
                self.tick()
        except FatalError as error:
            self.log.error("supervisor_fatal", error=str(error))
            self.exit_code = 1
            self.shutdown_fast()
        finally:
            self.cleanup()
        return self.exit_code

    def start(self) -> None:
        self.connect_first()
        self.register()
        self.rescue()
        self.listener.open()
        self.update_listener_registration()
        for courier in self.couriers:
            self.selector.register(courier, selectors.EVENT_READ, lambda c=courier: self.on_courier_answer(c))
        for _ in range(max(self.children_min, 1)):
            self.spawn_child()
        if self.web is not None:
            self.start_web()
        self.log.info("supervisor_started", runner=self.runner_id, version=__version__,
                      table=self.config.database.table, dsn=mask_dsn(self.dsn),
                      children_min=self.children_min, children_max=self.children_max,
                      queues=sorted(self.config.queues) if self.config.queues is not None else "all",
                      config=self.config.path)

    def connect_first(self) -> None:
        """The first connection: a wrong DSN is a configuration error (exit 2); a database that
        is merely away is waited for, so systemd does not crash-loop us."""
        delay = 0.2
        while True:
            try:
                self.conn = self.open_connection()
                break
            except psycopg.Error as error:
                if is_permanent(error):
                    raise UserError(f"cannot connect to database {mask_dsn(self.dsn)}: "
                                    f"{describe_error(error)}", exit_code=2) from None
                self.log.warning("db_unavailable", error=describe_error(error), retry_in=delay)
                self.wait_for_signal(delay)
                if self.stop_now or self.draining:
                    raise UserError("stopped while waiting for the database", exit_code=0) from None
                delay = min(delay * 2, 5.0)
        version = current_version(self.conn, self.config.database.table)
        if version < latest_version():
            if not self.config.database.auto_migrate:
                raise UserError(f"the schema of table {self.config.database.table!r} is at version {version}, "
                                f"this version needs {latest_version()}: run 'jobsupervisor migrate'", exit_code=2)
            applied = migrate(self.conn, self.config.database.table)
            if applied:
                self.log.info("schema_migrated", table=self.config.database.table,
                              versions=[m.version for m in applied])
        db_now = self.conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
        self.clock_offset = db_now - time.time()

    def register(self) -> None:
        self.conn.execute(self.q.runner_upsert, self.runner_row())

    def runner_row(self) -> dict[str, Any]:
        return {
            "id": self.runner_id, "host": self.host, "pid": os.getpid(), "pidns": pid_namespace(),
            "started_at": self.started_wall, "children": len(self.pool), "busy": len(self.pool.busy()),
            "queues": sorted(self.config.queues) if self.config.queues is not None else None,
            "job_types": sorted(self.types), "version": __version__,
        }

    def finished(self) -> bool:
        if self.immediate:
            return True
        return self.draining and len(self.pool) == 0

    def cleanup(self) -> None:
        """Last steps on every way out: no child left behind, outcomes written if possible,
        the runner row removed."""
        self.flush_logs()
        if self.web is not None:
            self.stop_web()
        if self.immediate:
            self.pool.kill_all()
            self.pool.wait_all(2.0)
            self.log.info("supervisor_stopped", runner=self.runner_id, mode="immediate", exit_code=self.exit_code)
            return
        if len(self.pool):
            self.pool.kill_all()
            self.pool.wait_all(5.0)
            for child in self.pool.poll_exited():
                self.child_exited(child)
        for courier in self.couriers:
            if courier.busy:
                answer = courier.wait(10.0)
                if answer is not None:
                    self.courier_answered(answer)  # what it claimed goes back; what it recorded is logged
            courier.close()
        deadline = time.monotonic() + 10.0
        while (self.pending or self.completions) and time.monotonic() < deadline:
            if not (self.flush_completions() and self.flush_pending()):
                time.sleep(0.2)
        if self.orphan_check and not self.pending and not self.completions and not self.couriers_busy():
            self.return_orphans()
        if self.pending or self.completions:
            self.log.error("outcomes_not_recorded", count=len(self.pending) + len(self.completions),
                           hint="the database was unreachable; the jobs will be recovered by the rescuer")
        db = self.db()
        if db is not None and not self.pending:
            try:
                db.execute(self.q.runner_delete, {"id": self.runner_id})
            except psycopg.Error:
                pass
        self.listener.close()
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.log.info("supervisor_stopped", runner=self.runner_id, exit_code=self.exit_code,
                      jobs_succeeded=self.stats["succeeded"], jobs_failed=self.stats["failed"],
                      jobs_retried=self.stats["retry"])

    # ======================================================================================
    # The tick
    # ======================================================================================
    def tick(self) -> None:
        self.wait(self.next_timeout())
        self.handle_signals()
        if self.immediate:
            return
        self.read_children()
        self.reap_children()
        if self.fatal is not None:
            raise FatalError(self.fatal)
        self.kill_overdue()
        self.database_chores()
        self.manage_pool()
        self.claim_and_hand_out()
        self.grow_for_waiting_work()
        self.flush_logs()
        self.report_status()

    def wait(self, timeout: float) -> None:
        batch = self.report_batch()
        if batch > 0.0:
            for key, _ in self.selector.select(min(timeout, batch)):
                key.data()
            for key, _ in self.child_selector.select(0):
                key.data()
            return
        for ready, _ in self.any_selector.select(timeout):
            for key, _ in ready.data.select(0):
                key.data()

    def report_batch(self) -> float:
        """How long children's reports may wait (0: not at all): only while each child has
        jobs in its socket to go on with, for at most half of the fewest seconds of them."""
        least = math.inf
        for child in self.pool:
            if (child.job is None or child.sent < 2 or child.releasing is not None or child.ending is not None
                    or child.kill_at is not None):
                return 0.0
            average = self.type_avg.get(child.prefetched[0][0].job_type)
            if average is None:
                return 0.0
            least = min(least, child.sent * average)
        if least == math.inf or self.draining:  # no children
            return 0.0
        batch = min(REPORT_BATCH, least / 2)
        return batch if batch >= REPORT_BATCH_MIN else 0.0

    def wait_for_signal(self, timeout: float) -> None:
        """Sleep that a signal cuts short (used before the loop runs)."""
        self.wait(timeout)
        self.handle_signals()

    def next_timeout(self) -> float:
        now = time.monotonic()
        due = [self.next_poll, self.next_heartbeat, self.next_rescue, self.next_probe, self.next_reap]
        if self.conn is None or self.pending:
            due.append(self.db_retry_at)
        if self.completions and self.free_courier() is not None:  # else an answer wakes us
            due.append(max(self.completions_due, self.db_retry_at if self.conn is None else 0.0))
        if not self.listener.up:
            due.append(self.listener.retry_at)
        if self.next_due_wall is not None:
            due.append(now + (self.next_due_wall - time.time()))
        if self.drain_deadline is not None:
            due.append(self.drain_deadline)
        if self.next_schedule_wall is not None:
            due.append(now + (self.next_schedule_wall - time.time()))
        if self.next_fleet_check is not None:
            due.append(self.next_fleet_check)
        if self.retention.enabled:
            due.append(self.next_retention)
        if self.web is not None and self.web.restart_at is not None:
            due.append(self.web.restart_at)
        for child in self.pool:
            if child.job is not None and child.job.deadline is not None:
                due.append(child.job.deadline)
            if child.job is not None and child.prefetched and child.releasing is None:
                due.append(child.job.started + PREFETCH_STALE)
            if child.kill_at is not None:
                due.append(child.kill_at)
            if child.state == IDLE and len(self.pool) > self.children_min:
                due.append(child.idle_since + self.config.children.idle_timeout)
        # Idle children that a courier's statement out brings rows for wait for its answer
        # (which wakes us): counting them here would spin the loop until it comes.
        if (self.claim_wanted and self.types and not self.draining and self.conn is not None
                and self.claimable_idle()):
            if now >= self.claim_retry_at:
                return 0.0
            due.append(self.claim_retry_at)
        return min(max(min(due) - now, 0.0), 1.0 if self.draining else 30.0)

    # ======================================================================================
    # Signals
    # ======================================================================================
    def install_signals(self) -> None:
        read_end, write_end = socket.socketpair()
        read_end.setblocking(False)
        write_end.setblocking(False)
        self._wakeup = (read_end, write_end)
        signal.set_wakeup_fd(write_end.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._record_signal)
        self.selector.register(read_end, selectors.EVENT_READ, self._drain_wakeup)

    def _record_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)  # only record: no I/O, no logging, no locks here

    def _drain_wakeup(self) -> None:
        try:
            while self._wakeup[0].recv(4096):
                pass
        except BlockingIOError:
            pass

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.popleft()
            handler = {
                signal.SIGINT: self.handle_int, signal.SIGTERM: self.handle_term,
                signal.SIGQUIT: self.handle_quit, signal.SIGHUP: self.handle_hup,
                signal.SIGTTIN: self.handle_ttin, signal.SIGTTOU: self.handle_ttou,
                signal.SIGCHLD: self.handle_chld,
            }[signum]
            handler()

    def handle_int(self) -> None:
        if self.draining:
            self.log.warning("supervisor_stopping", mode="quick", reason="second SIGINT",
                             returning=len(self.pool.busy()))
            self.stop_running_jobs()
        else:
            self.begin_drain("SIGINT")

    def handle_term(self) -> None:
        if self.draining:
            self.log.warning("supervisor_stopping", mode="quick", reason="second SIGTERM",
                             returning=len(self.pool.busy()))
            self.stop_running_jobs()
        else:
            self.begin_drain("SIGTERM")

    def handle_quit(self) -> None:
        self.log.warning("supervisor_stopping", mode="immediate", reason="SIGQUIT",
                         running=len(self.pool.busy()))
        self.immediate = True

    def handle_hup(self) -> None:
        self.reload()

    def handle_ttin(self) -> None:
        """One more child than now, kept: the minimum rises to it (a pool that grew for work is
        above its minimum, so raising the minimum by one would add nothing), and so does the
        maximum if needed. Counted from the minimum too, so signals handled in one tick add up."""
        live = len([c for c in self.pool if c.ending is None])
        self.children_min = max(self.children_min, live) + 1
        self.children_max = max(self.children_max, self.children_min)
        self.log.info("pool_resized", signal="SIGTTIN", children_min=self.children_min, children_max=self.children_max)

    def handle_ttou(self) -> None:
        """One fewer child than now (at least one): the maximum drops to it, and so does the
        minimum if needed. manage_pool retires an idle child at once, a busy one after its job."""
        live = len([c for c in self.pool if c.ending is None])
        self.children_max = max(min(self.children_max, live) - 1, 1)
        self.children_min = min(self.children_min, self.children_max)
        self.log.info("pool_resized", signal="SIGTTOU", children_min=self.children_min, children_max=self.children_max)

    def begin_drain(self, reason: str, exit_code: int = 0) -> None:
        if self.draining:
            return
        self.draining = True
        self.exit_code = max(self.exit_code, exit_code)
        self.drain_deadline = time.monotonic() + self.config.shutdown_timeout
        busy = len(self.pool.busy())
        self.log.info("supervisor_stopping", mode="drain", reason=reason, running=busy,
                      shutdown_timeout=self.config.shutdown_timeout)
        self.notifier.stopping(f"draining: {busy} job(s) running")
        for child in self.pool:
            self.return_prefetched(child, "shutdown")
            self.pool.ask_to_stop(child, "shutdown", self.config.children.kill_grace)

    def stop_running_jobs(self) -> None:
        """Drain time is up (or a second SIGINT): kill what still runs; its jobs go back to queued."""
        self.drain_deadline = None
        for child in self.pool:
            if child.job is not None:
                child.ending = "shutdown"
            self.pool.kill(child)

    def shutdown_fast(self) -> None:
        self.draining = True
        self.stop_running_jobs()

    def reload(self) -> None:
        try:
            new = load_config(self.config.path)
        except ConfigError as error:
            self.log.error("config_reload_failed", error=str(error), hint="still running on the previous configuration")
            return
        if new.database.table != self.config.database.table or new.database.dsn != self.config.database.dsn:
            self.log.error("config_reload_failed", error="database.dsn and database.table cannot change on reload; restart instead")
            return
        try:
            gatekeeper = self.make_gatekeeper(new, fresh=True)
        except UserError as error:
            self.log.error("config_reload_failed", error=str(error), hint="still running on the previous configuration")
            return
        # Only now, with nothing left that can fail: an invalid config changes nothing at all.
        self.children_min, self.children_max = new.children.min, new.children.max
        self.config = new
        # A gate closed under the old config is still closed until the new gates say otherwise:
        # their first answer then logs gate_opened (or nothing), not a second gate_closed.
        gatekeeper.closed = self.gatekeeper.closed
        self.gatekeeper = gatekeeper
        self.claim_retry_at = 0.0
        self.claim_wanted = True  # new limits and gates may let more start
        self.scheduler = self.make_scheduler(new)
        self.next_schedule_wall = None
        self.retention = Retention(self.q, new.retention.succeeded, new.retention.failed)
        self.rescuer.lock_timeout = new.lock_timeout
        self.rescuer.stale_after = self.stale_after(new)
        logs.configure(new.logging.format, new.logging.level, syslog_address=new.logging.syslog_address)
        self.log = logs.get_logger()
        # The dashboard re-reads the config when it starts: restart it (or start/stop it).
        if self.web is not None:
            self.stop_web()
            self.web = None
        if new.web.listen:
            self.web = WebProcess(new, self.dsn)
            self.start_web()
        self.pool.generation += 1
        # New children load the new handler code; old ones finish their job first.
        for child in self.pool:
            self.return_prefetched(child, "reload")
            self.pool.ask_to_stop(child, "reload", self.config.children.kill_grace)
        self.log.info("config_reloaded", config=new.path, generation=self.pool.generation)

    # ======================================================================================
    # Children
    # ======================================================================================
    def spawn_child(self) -> Child | None:
        hello = {"dsn": self.dsn, "runner": self.runner_id}
        try:
            child = self.pool.spawn(hello, self.config)
        except OSError as error:
            self.log.error("child_spawn_failed", error=describe_error(error))
            return None
        self.child_selector.register(child.sock, selectors.EVENT_READ, lambda c=child: self.on_child_message(c))
        self.child_selector.register(child.out_fd, selectors.EVENT_READ, lambda c=child: self.on_child_output(c))
        self.log.info("child_started", child_pid=child.pid, generation=child.generation)
        return child

    def on_child_message(self, child: Child) -> None:
        for message in self.pool.read_messages(child):
            op = message.get("op")
            if op == protocol.READY:
                self.child_ready(child, message)
            elif op == protocol.DONE:
                self.job_done(child, message)
            elif op == protocol.RELEASED:
                self.jobs_released(child, message)
            elif op == protocol.BOOT_ERROR:
                child.ending = "boot_error"
                self.give_up(f"child {child.pid} could not start: {message.get('error')}")
        self.flush_logs()
        if child.eof:
            self.stop_watching(child.sock)

    def stop_watching(self, fileobj: Any) -> None:
        """A closed socket or pipe stays readable forever: stop selecting on it (or the loop
        spins until the child is reaped) and reap soon."""
        try:
            self.child_selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass
        self.reap_wanted = True

    def on_child_output(self, child: Child) -> None:
        for line in self.pool.read_output(child):
            logs.write_line(line)
        if child.out_eof:
            self.stop_watching(child.out_fd)

    def read_children(self) -> None:
        """Selector callbacks already ran; nothing else to do here (kept as a named step)."""

    def child_ready(self, child: Child, message: dict[str, Any]) -> None:
        child.types = message.get("types", {})
        if child.generation == self.pool.generation:
            self.types = child.types  # the newest code decides which types we claim
        self.boot_failures = 0
        if child.state == BOOTING:
            child.state = IDLE
            child.idle_since = time.monotonic()
        if child.ending is not None:  # asked to stop while it was starting
            self.pool.ask_to_stop(child, child.ending, self.config.children.kill_grace)
        if not self.ready_sent:
            self.ready_sent = True
            self.notifier.ready(self.status_line())
            self.update_listener_registration()

    def job_done(self, child: Child, message: dict[str, Any]) -> None:
        if child.job is None and child.sent and child.prefetched[0][0].id == message.get("id"):
            # A queued job it started before it read our release: it was its current one.
            self.start_next(child)
        job = child.job
        if job is None or job.id != message.get("id"):
            return
        child.job = None
        child.jobs_done += 1
        at = reported_at(message.get("at"))  # when it ended here, and the next queued one began
        child.rss = message.get("rss", child.rss)
        self.claim_retry_at = 0.0  # a slot is free: a type that was at its limit may have room
        if self.claim_held_back:
            self.claim_wanted = True  # ... and its work waits without anything announcing it
        outcome = message.get("outcome")
        if outcome == "ok":  # ours to record, together with other successes (flush_completions)
            job.finished = at or time.monotonic()
            if not self.completions:
                self.completions_due = time.monotonic() + (COMPLETION_DELAY_AHEAD if self.prefetch_types
                                                           else COMPLETION_DELAY)
            self.completions.append((job, child.pid, message.get("duration_ms")))
            outcome = None
        else:
            self.flush_logs()
            self.stats[outcome] += 1
        context = {"job_id": job.id, "job_type": job.job_type, "queue": job.queue, "attempt": job.attempts,
                   "duration_ms": message.get("duration_ms"), "child_pid": child.pid}
        if outcome is None:
            pass
        elif outcome == "succeeded":
            self.log.info("job_succeeded", **context)
        elif outcome == "retry":
            self.log.warning("job_retry_scheduled", error=message.get("error"), run_at=message.get("run_at"), **context)
            self.note_due(message.get("run_at"))
        elif outcome == "failed":
            self.log.error("job_failed", error=message.get("error"), **context)
        elif outcome == "returned":
            self.log.warning("job_returned", reason=message.get("error"), **context)
            self.claim_wanted = True
        else:
            self.log.warning("job_lock_lost", outcome=outcome, **context)
        duration = message.get("duration_ms")
        if isinstance(duration, (int, float)):
            seconds = duration / 1000.0
            previous = self.type_avg.get(job.job_type)
            self.type_avg[job.job_type] = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        if child.ending is not None or self.draining:
            self.return_prefetched(child, child.ending or "shutdown")
            self.pool.ask_to_stop(child, child.ending or "shutdown", self.config.children.kill_grace)
        elif self.should_recycle(child):
            self.return_prefetched(child, "recycle")
            self.pool.ask_to_stop(child, "recycle", self.config.children.kill_grace)
        else:
            child.state = IDLE
            child.idle_since = time.monotonic()
            if child.releasing is not None and child.sent:
                child.state = BUSY  # its queue is being taken back: wait for 'released'
            elif child.prefetched:
                self.start_next(child, at)
                if child.sent < PUSH_LOW:
                    self.push_queued(child)

    def start_next(self, child: Child, at: float | None = None) -> None:
        """The child's next queued job is its current one now (sent with it, or sent now).
        ``at``: when the child reported its previous job done, i.e. started a job it had."""
        running, spec, payload = child.prefetched.popleft()
        was_sent = child.sent > 0
        if was_sent:
            child.sent -= 1
        self.start_job(child, running, spec, payload, sent=was_sent, started=at if was_sent else None)

    def jobs_released(self, child: Child, message: dict[str, Any]) -> None:
        """The child dropped these queued jobs unstarted (after 'release' or 'stop'): they go
        back to queued, the attempt not counted."""
        ids = message.get("ids") or []
        reason = child.releasing or child.ending or "released"
        child.releasing = None
        released = set(ids)
        sent = list(itertools.islice(child.prefetched, 0, child.sent))
        returned = [running for running, _, _ in sent if running.id in released]
        for _ in range(child.sent):
            child.prefetched.popleft()
        child.prefetched.extendleft(reversed([p for p in sent if p[0].id not in released]))
        child.sent -= len(returned)
        self.return_jobs(returned, reason)
        if child.job is None and child.state == BUSY and child.ending is None:
            child.state = IDLE
            child.idle_since = time.monotonic()
            if child.prefetched:
                self.start_next(child)

    def should_recycle(self, child: Child) -> bool:
        limits = self.config.children
        if limits.max_jobs and child.jobs_done >= limits.max_jobs:
            self.log.info("child_recycled", child_pid=child.pid, reason="max_jobs", jobs=child.jobs_done)
            return True
        if limits.max_memory and child.rss > limits.max_memory:
            self.log.info("child_recycled", child_pid=child.pid, reason="max_memory", rss=child.rss,
                          max_memory=limits.max_memory)
            return True
        return False

    def handle_chld(self) -> None:
        self.reap_wanted = True

    def reap_children(self) -> None:
        # Polling every child costs a wait4() each: do it when SIGCHLD said one exited, and
        # once a second anyway (signals of the same kind coalesce; this is the safety net).
        now = time.monotonic()
        if not self.reap_wanted and now < self.next_reap:
            return
        self.reap_wanted = False
        self.next_reap = now + 1.0
        for child in self.pool.poll_exited():
            self.child_exited(child)

    def child_exited(self, child: Child) -> None:
        # Whatever it said or printed last is still in the pipes: read it before judging.
        self.on_child_output_final(child)
        self.on_child_message(child)
        self.unregister_child(child)
        self.pool.forget(child)
        status = child.exit_status if child.exit_status is not None else 0
        self.log.info("child_exited", child_pid=child.pid, status=describe_exit(status),
                      reason=child.ending, jobs=child.jobs_done)
        if child.state == BOOTING and child.ending is None:
            self.boot_failures += 1
            if status == protocol.EXIT_BOOT_ERROR or self.boot_failures >= BOOT_FAILURES_TO_GIVE_UP:
                self.give_up(f"child {child.pid} exited before it was ready ({describe_exit(status)}); "
                             "see its output above")
        if child.job is not None:
            self.job_lost_with_child(child, status)
        child.sent = 0  # what it had queued never started: jobs run in order, each reported
        self.return_prefetched(child, "its child exited")

    def give_up(self, reason: str) -> None:
        """Remember the first reason to stop (the tick raises FatalError); later ones, such as
        the other children's identical boot errors, add nothing."""
        if self.fatal is None:
            self.fatal = reason

    def on_child_output_final(self, child: Child) -> None:
        for line in self.pool.read_output(child, final=True):
            logs.write_line(line)

    def unregister_child(self, child: Child) -> None:
        for fileobj in (child.sock, child.out_fd):
            try:
                self.child_selector.unregister(fileobj)
            except (KeyError, ValueError):
                pass

    def job_lost_with_child(self, child: Child, status: int) -> None:
        """The child died with a job: record why, fenced by the child's lock."""
        job = child.job
        context = {"job_id": job.id, "job_type": job.job_type, "queue": job.queue, "attempt": job.attempts,
                   "child_pid": child.pid, "duration_ms": round((time.monotonic() - job.started) * 1000, 3)}
        params = {"id": job.id, "lock": job.lock}
        if child.ending == "shutdown":
            self.log.warning("job_returned", reason="shutdown_timeout reached", **context)
            self.record(self.q.job_return, params, f"return job {job.id}")
            return
        if child.ending == "killed":
            self.log.error("job_failed", error="killed by operator", **context)
            self.record(self.q.job_set_killed, params | {"error": "killed by operator"}, f"kill job {job.id}")
            return
        if child.ending == "lock_lost":
            self.log.warning("job_lock_lost", **context)
            return
        if child.ending == "timeout":
            error = f"timed out after {job.timeout or 0:g}s"  # SPEC §2 spells it "timed out after 60s"
            self.log.error("job_timed_out", error=error, **context)
        else:
            error = f"worker process died: {describe_exit(status)}"
            self.log.error("job_worker_died", error=error, **context)
        opts = self.types.get(job.job_type, {})
        max_attempts = job.max_attempts or opts.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        delay = retry_delay(job.attempts, kind=opts.get("backoff", "linear"), delay=opts.get("backoff_delay", 30.0),
                            maximum=opts.get("backoff_max", 3600.0), jitter=opts.get("backoff_jitter", False))
        outcome = "failed" if job.attempts >= max_attempts else "retry"
        self.stats[outcome] += 1
        if outcome == "retry":
            self.log.warning("job_retry_scheduled", error=error, delay=delay, **context)
            self.note_due(time.time() + delay + self.clock_offset)
        else:
            self.log.error("job_failed", error=error, **context)
        self.record(self.q.job_set_failed_or_retry,
                    params | {"error": error, "delay": delay, "default_max_attempts": max_attempts},
                    f"record failure of job {job.id}")

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for child in self.pool:
            if (child.prefetched and child.releasing is None and child.job is not None
                    and now - child.job.started > PREFETCH_STALE):
                # This job turned out long: what waits behind it could run elsewhere now.
                self.return_prefetched(child, "its child is busy with a long job")
            job = child.job
            if job is not None and job.deadline is not None and now >= job.deadline and child.term_sent is None:
                self.pool.terminate(child, "timeout", self.config.children.kill_grace)
            elif child.kill_at is not None and now >= child.kill_at:
                self.pool.kill(child)
                child.kill_at = None
        if self.drain_deadline is not None and now >= self.drain_deadline:
            if self.pool.busy():
                self.log.warning("shutdown_timeout_reached", returning=len(self.pool.busy()),
                                 shutdown_timeout=self.config.shutdown_timeout)
            self.stop_running_jobs()

    def manage_pool(self) -> None:
        if self.draining:
            return
        live = [c for c in self.pool if c.ending is None]
        # Keep the minimum (a replacement for every child that exited or is being recycled).
        for _ in range(self.children_min - len(live)):
            if self.spawn_child() is None:
                break
            live.append(None)  # type: ignore[arg-type]
        # Shrink: retire children idle too long above the minimum, or above a lowered maximum.
        now = time.monotonic()
        live = [c for c in self.pool if c.ending is None]
        excess = len(live) - self.children_max
        for child in sorted(self.pool.idle(), key=lambda c: c.idle_since):
            if excess > 0:
                self.pool.ask_to_stop(child, "retire", self.config.children.kill_grace)
                excess -= 1
            elif len(live) > self.children_min and now - child.idle_since >= self.config.children.idle_timeout:
                self.log.info("child_retiring", child_pid=child.pid, idle_seconds=round(now - child.idle_since, 1))
                self.pool.ask_to_stop(child, "retire", self.config.children.kill_grace)
                live.remove(child)

    def grow_for_waiting_work(self) -> None:
        """After the claim: every child is taken and the batch was full, so start as many
        children as there are jobs waiting beyond those already booting. It runs after the
        claim, not before: with short jobs a child is idle at the start of nearly every tick
        (it just finished), so "every child is taken" only shows once the claim refilled it.
        Asking the table matters too: a full batch only says work *may* wait, and one long job
        would otherwise start a spare child on every tick that then idles until idle_timeout.
        Only work that could start counts: jobs of a type or queue at its limit (here or
        fleet-wide) or beyond a gate's cap would only give the new child nothing to do."""
        if (self.draining or not self.claim_wanted or self.pool.idle() or self.conn is None or not self.types
                or self.gatekeeper.closed is not None):
            return
        booting = len(self.pool.in_state(BOOTING))
        live = len([c for c in self.pool if c.ending is None])
        room = min(MAX_BOOTING - booting, self.children_max - live)
        if room <= 0:
            return
        r = self.gatekeeper.room([(c.job.job_type, c.job.queue) for c in self.pool.busy()], self.types)
        if r.empty:
            return
        rows = self.count_due(r.types, r.queues, booting + room)
        if rows is None:
            return
        if not rows:
            self.claim_wanted = False  # new work announces itself (NOTIFY, run_at, poll)
            return
        startable = fit_into_room(rows, r, self.global_limits(r.types), self.gate_headroom)
        for _ in range(min(startable - booting, room)):
            if self.spawn_child() is None:
                break

    def global_limits(self, types: list[str]) -> dict[str, int]:
        return {t: self.types[t]["global_concurrency"] for t in types if self.types[t].get("global_concurrency")}

    def count_due(self, types: list[str], queues: list[str] | None, limit: int) -> list[tuple] | None:
        """(job_type, queue, waiting, running fleet-wide if that type has a fleet-wide limit)."""
        cur = self.execute(self.q.jobs_count_due, {"types": types, "queues": queues, "limit": limit,
                                                   "global_types": list(self.global_limits(types))})
        return cur.fetchall() if cur is not None else None

    # ======================================================================================
    # Database chores
    # ======================================================================================
    def open_connection(self, application_name: str = "jobsupervisor") -> psycopg.Connection:
        conn = connect(self.dsn, autocommit=True, application_name=application_name)
        # The claim must walk the claim index in order and stop after n rows. When the table's
        # statistics are stale (analysed while the queue was small: the normal state of a queue
        # table) the planner picks a bitmap scan of every due row plus a sort instead: 0.2 ms
        # becomes 8 ms with 30,000 waiting jobs. None of the supervisor's statements needs a
        # bitmap scan, so this connection does without them.
        conn.execute("SET enable_bitmapscan = off")
        # Claims commit without waiting for the WAL flush (0.8 ms -> 0.3 ms per claim, and the
        # claim is the loop's hot path). Safe for at-least-once: a claim lost in a server crash
        # leaves its job queued, to run again; and WAL is written in order, so a child's
        # completion (committed synchronously on its own connection, after the claim) is never
        # durable while the claim before it is lost. Outcomes this connection records for dead
        # children are written with synchronous commit (flush_pending).
        conn.execute("SET synchronous_commit = off")
        return conn

    def db(self) -> psycopg.Connection | None:
        """The supervisor's connection, reopened with backoff after a loss; None while away."""
        if self.conn is not None:
            return self.conn
        if time.monotonic() < self.db_retry_at:
            return None
        try:
            self.conn = self.open_connection()
        except psycopg.Error as error:
            self.db_retry_at = time.monotonic() + self.db_retry_delay
            self.db_retry_delay = min(self.db_retry_delay * 2, 5.0)
            return None
        down_ms = round((time.monotonic() - (self.db_lost_since or time.monotonic())) * 1000)
        self.log.info("db_reconnected", connection="main", down_ms=down_ms, pending=len(self.pending))
        if self.db_lost_since is not None:
            self.orphan_check = True
        self.db_lost_since = None
        self.db_retry_delay = 0.2
        self.claim_wanted = True
        self.next_heartbeat = time.monotonic()
        return self.conn

    def db_lost(self, error: BaseException) -> None:
        close_quietly(self.conn)
        self.conn = None
        if self.db_lost_since is None:
            self.db_lost_since = time.monotonic()
            self.log.warning("db_connection_lost", connection="main", error=describe_error(error))
        self.db_retry_at = time.monotonic() + self.db_retry_delay

    def execute(self, query: str, params: dict[str, Any] | None = None) -> psycopg.Cursor | None:
        db = self.db()
        if db is None:
            return None
        try:
            return db.execute(query, params)
        except psycopg.OperationalError as error:
            self.db_lost(error)
            return None

    def record(self, query: str, params: dict[str, Any], what: str) -> None:
        """Write an outcome now, or keep it until the database is back (never dropped)."""
        self.pending.append(PendingWrite(query, params, what))
        self.flush_pending()

    def flush_pending(self) -> bool:
        while self.pending:
            write = self.pending[0]
            db = self.db()
            if db is None:
                return False
            try:
                with db.transaction():
                    db.execute("SET LOCAL synchronous_commit = on")  # an outcome must survive a crash
                    db.execute(write.query, write.params)
            except psycopg.OperationalError as error:
                self.db_lost(error)
                return False
            self.pending.pop(0)
        return True

    def flush_completions(self) -> bool:
        """Record the successes children reported: one statement, each job fenced by its own
        lock, committed synchronously (a logged success survives a crash of the database
        server). Kept for the next tick while the database is away."""
        if not self.completions:
            return True
        db = self.db()
        if db is None:
            return False
        batch = self.completions
        params = successes(batch)
        query = self.q.jobs_set_succeeded_many_again if self.completions_uncertain else self.q.jobs_set_succeeded_many
        try:
            recorded = {row[0] for row in db.execute(query, params).fetchall()}
        except psycopg.OperationalError as error:
            self.completions_uncertain = True  # the commit may have happened before the cut
            self.db_lost(error)
            return False
        self.completions = []
        self.completions_uncertain = False
        self.completions_recorded(batch, recorded)
        return True

    def completions_recorded(self, batch: list[tuple[Running, int, Any]], recorded: set[int]) -> None:
        records: list[tuple[str, str, Any]] = []
        for job, child_pid, duration_ms in batch:
            if job.id in recorded:
                records.append(("info", "job_succeeded", JobFields(job.id, job.job_type, job.queue, job.attempts,
                                                                    child_pid, duration_ms)))
            else:
                records.append(("warning", "job_lock_lost", {
                    "outcome": "lost", "job_id": job.id, "job_type": job.job_type, "queue": job.queue,
                    "attempt": job.attempts, "duration_ms": duration_ms, "child_pid": child_pid}))
        self.stats["succeeded"] += len(recorded)
        self.stats["lost"] += len(batch) - len(recorded)
        self.log_lines.extend(records)
        self.flush_logs()

    def flush_logs(self) -> None:
        if self.log_lines:
            lines, self.log_lines = self.log_lines, []
            logs.emit_many(lines)

    def return_orphans(self) -> None:
        """Jobs locked by our children that we never handed out (the claim committed, its
        answer was lost with the connection) go back to queued, the attempt not counted."""
        cur = self.execute(self.q.jobs_held_by_runner, {"runner": self.runner_id})
        if cur is None:
            return
        self.orphan_check = False
        known = {(c.job.id, c.job.lock) for c in self.pool.busy()}
        known.update((p[0].id, p[0].lock) for c in self.pool for p in c.prefetched)
        known.update((job.id, job.lock) for job, _, _ in self.completions)
        orphans = [(job_id, lock) for job_id, lock in cur.fetchall() if (job_id, lock) not in known]
        for job_id, lock in orphans:
            self.log.warning("job_returned", job_id=job_id, reason="not started: claimed as the connection broke")
            self.record(self.q.job_return, {"id": job_id, "lock": lock}, f"return job {job_id}")
        if orphans:
            self.claim_wanted = True

    def database_chores(self) -> None:
        now = time.monotonic()
        if self.completions and (len(self.completions) >= COMPLETION_BATCH or now >= self.completions_due
                                 or self.draining) and self.free_courier() is not None:
            courier = self.courier_ready()
            if self.completions_uncertain or courier is None:
                self.flush_completions()
            elif self.claim_wanted and self.top_up_prefetch(force=True):
                pass  # they ride along with the claim of the next quick jobs
            else:
                batch, self.completions = self.completions, []
                params = successes(batch)
                courier.send(self.q.jobs_set_succeeded_many, params, Flight(None, batch, set()))
        if self.pending:
            self.flush_pending()
        if (self.orphan_check and self.conn is not None and not self.pending and not self.completions
                and not self.couriers_busy()):
            self.return_orphans()
        if not self.listener.up and now >= self.listener.retry_at:
            if self.listener.open():
                self.update_listener_registration()
                self.claim_wanted = True  # notifications may have been missed while it was down
        if now >= self.next_probe:
            self.next_probe = now + self.config.poll_interval
            if self.listener.up and not self.listener.probe():
                self.update_listener_registration()
            else:
                # A notification that arrived during the probe's round trip was read off the
                # socket by it and waits in psycopg's backlog: the socket will not wake us for it.
                self.on_listen_readable()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.config.heartbeat_interval
            self.heartbeat()
        if now >= self.next_rescue:
            self.next_rescue = now + max(self.config.heartbeat_interval, 1.0)
            self.rescue()
        if now >= self.next_poll:
            self.next_poll = now + self.config.poll_interval
            self.claim_wanted = True
            self.refresh_next_due()
        if self.next_fleet_check is not None and now >= self.next_fleet_check:
            self.next_fleet_check = None
            self.claim_wanted = True
        if self.next_due_wall is not None and time.time() >= self.next_due_wall:
            self.next_due_wall = None
            self.claim_wanted = True
            self.refresh_next_due()
        if self.config.schedules and self.types and not self.draining:
            if self.next_schedule_wall is None or time.time() >= self.next_schedule_wall:
                self.run_schedules()
        if self.retention.enabled and now >= self.next_retention:
            self.next_retention = now + RETENTION_INTERVAL
            self.prune()
        if self.web is not None:
            self.watch_web()

    def run_schedules(self) -> None:
        """Enqueue due cron ticks (once fleet-wide), then sleep until the next one."""
        db = self.db()
        if db is None:
            return
        try:
            for done in self.scheduler.run_once(db):
                self.log.info("schedule_enqueued", schedule=done.schedule, tick=done.tick.isoformat(),
                              job_id=done.job_id, catch_up=done.catch_up)
        except psycopg.OperationalError as error:
            self.db_lost(error)
            return
        except psycopg.Error as error:
            # A schedule whose insert fails (e.g. a payload the table refuses) must not stop
            # the others or the supervisor; it is retried at the next poll.
            self.log.error("schedule_failed", error=describe_error(error))
            self.next_schedule_wall = time.time() + self.config.poll_interval
            return
        due = self.scheduler.next_due()
        self.next_schedule_wall = None if due is None else due - self.clock_offset

    def prune(self) -> None:
        db = self.db()
        if db is None:
            return
        try:
            deleted = self.retention.run_once(db)
        except psycopg.OperationalError as error:
            self.db_lost(error)
            return
        except psycopg.Error as error:
            # E.g. a foreign key someone added to the jobs table: log it, keep serving.
            self.log.error("retention_failed", error=describe_error(error))
            return
        if deleted:
            self.log.info("jobs_pruned", **{f"deleted_{k.replace('+', '_')}": v for k, v in deleted.items()})
        if self.retention.more:
            self.next_retention = time.monotonic() + 1.0  # more to delete: keep going soon

    # --- the dashboard --------------------------------------------------------------------
    def start_web(self) -> None:
        try:
            self.web.start()
        except OSError as error:
            self.log.error("web_spawn_failed", error=describe_error(error))
            self.web.restart_at = time.monotonic() + 5.0
            return
        self.selector.register(self.web.out_fd, selectors.EVENT_READ, self.on_web_output)
        self.log.info("web_child_started", web_pid=self.web.proc.pid, listen=self.config.web.listen)

    def on_web_output(self) -> None:
        for line in self.web.read_output():
            logs.write_line(line)

    def watch_web(self) -> None:
        web = self.web
        pid = web.proc.pid if web.proc else None
        status = web.poll()
        if status is not None:
            for line in web.read_output(final=True):
                logs.write_line(line)
            self.unregister_web()
            self.log.error("web_child_exited", web_pid=pid, status=describe_exit(status),
                           restart_in=round(web.restart_at - time.monotonic(), 1) if web.restart_at else None)
        if web.proc is None and web.restart_at is not None and time.monotonic() >= web.restart_at \
                and not self.draining:
            self.start_web()

    def unregister_web(self) -> None:
        if self.web is not None and self.web.out_fd is not None:
            try:
                self.selector.unregister(self.web.out_fd)
            except (KeyError, ValueError):
                pass
            self.web.close_output()

    def stop_web(self) -> None:
        self.web.stop()
        for line in self.web.read_output(final=True):
            logs.write_line(line)
        self.unregister_web()

    def on_listen_readable(self) -> None:
        for channel, payload in self.listener.drain():
            if channel == self.q.channel:
                due = parse_due(payload)
                if due is None or due - self.clock_offset <= time.time() + 0.001:
                    self.claim_wanted = True
                else:
                    self.note_due(due)
            elif channel == self.q.control_channel:
                self.on_operator_request(payload)
        if not self.listener.up:
            self.update_listener_registration()

    def on_operator_request(self, payload: str) -> None:
        """``{"kill": id, "lock": ...}`` or ``{"stop": runner}`` from supervisor/admin.py. The
        database already says so (the job is failed, the runner row asks to stop); the NOTIFY
        only makes it immediate. Without it the heartbeat notices: the lock check, or its info."""
        try:
            request = json.loads(payload)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self.log.warning("operator_request_invalid", payload=payload[:200])
            return
        if "kill" in request:
            for courier in self.couriers:
                if courier.busy and courier.context.slots:
                    courier.context.killed.add((request["kill"], request.get("lock")))
            for child in self.pool:
                self.drop_queued(child, {(request["kill"], request.get("lock"))}, "killed by operator")
            for child in self.pool.busy():
                if child.job.id == request["kill"] and child.job.lock == request.get("lock"):
                    self.pool.kill(child, "killed")
        if request.get("stop") == self.runner_id:
            self.begin_drain("operator request")

    def update_listener_registration(self) -> None:
        registered = getattr(self, "_listen_registered", None)
        if registered is not None:
            try:
                self.selector.unregister(registered)
            except (KeyError, ValueError):
                pass
            self._listen_registered = None
        fd = self.listener.fileno()
        if fd is not None:
            self.selector.register(fd, selectors.EVENT_READ, self.on_listen_readable)
            self._listen_registered = fd

    def note_due(self, db_epoch: float | None) -> None:
        """Remember a future run_at (database clock) so the loop wakes exactly then."""
        if db_epoch is None:
            return
        local = db_epoch - self.clock_offset
        if self.next_due_wall is None or local < self.next_due_wall:
            self.next_due_wall = local

    def refresh_next_due(self) -> None:
        if not self.types:
            return
        cur = self.execute(self.q.jobs_next_run_at, {"types": list(self.types), "queues": self.queue_filter()})
        if cur is None:
            return
        value = cur.fetchone()[0]
        if value is not None:
            # Never wake before the database's clock says it is due, and never spin.
            local = max(value - self.clock_offset, time.time() + 0.005)
            if self.next_due_wall is None or local < self.next_due_wall:
                self.next_due_wall = local

    def heartbeat(self) -> None:
        busy = self.pool.busy()
        cur = self.execute(self.q.runner_heartbeat, {
            "id": self.runner_id, "children": len(self.pool), "busy": len(busy),
            "job_types": sorted(self.types), "info": json.dumps({"gate": self.gatekeeper.describe()}),
        })
        if cur is None:
            return
        row = cur.fetchone()
        if row is None:  # a rescuer thought we were dead: register again
            self.log.warning("runner_reregistered", runner=self.runner_id)
            self.execute(self.q.runner_upsert, self.runner_row())
        elif (row[0] or {}).get("stop") and not self.draining:
            self.begin_drain("operator request")  # asked while our NOTIFY was missed
        self.stop_children_without_lock()

    def stop_children_without_lock(self) -> None:
        """Kill children whose job is no longer theirs (recovered, killed by an operator or
        deleted): that attempt can no longer complete, and its lock may be someone else's now."""
        busy = [c for c in self.pool.busy() if c.ending != "lock_lost"]
        waiting = [p[0] for c in self.pool for p in c.prefetched]
        if not busy and not waiting:
            return
        jobs = [c.job for c in busy] + waiting
        cur = self.execute(self.q.jobs_lock_lost, {"ids": [j.id for j in jobs], "locks": [j.lock for j in jobs]})
        if cur is None:
            return
        # By (id, lock), not by id: after our own lock on a job was recovered, one child may run
        # the stale attempt while another already runs the new one; only the stale one goes.
        rows = cur.fetchall()
        lost = {(job_id, lock) for job_id, lock, _ in rows}
        killed = {(job_id, lock) for job_id, lock, by_operator in rows if by_operator}
        for child in self.pool:  # not started yet: never start them
            self.drop_queued(child, lost, "lock lost")
        for child in busy:
            job = child.job
            if job is None or (job.id, job.lock) not in lost:
                continue
            # A child that has just recorded its outcome itself no longer holds a 'running' row
            # either; its "done" is on the way (the child may have been descheduled between its
            # commit and its write). Wait a moment for it before judging, or checks under load
            # would kill children that did nothing wrong.
            deadline = time.monotonic() + LOCK_LOST_GRACE
            self.on_child_message(child)
            poller = select.poll()  # not select(): no limit on the fd number
            poller.register(child.sock, select.POLLIN)
            while child.job is job and not child.eof and (left := deadline - time.monotonic()) > 0:
                if poller.poll(left * 1000):
                    self.on_child_message(child)
            if child.job is job:
                self.pool.kill(child, "killed" if (job.id, job.lock) in killed else "lock_lost")

    def rescue(self) -> None:
        db = self.db()
        if db is None:
            return
        try:
            maxes = {name: opts.get("max_attempts", DEFAULT_MAX_ATTEMPTS) for name, opts in self.types.items()}
            rescued = self.rescuer.run_once(db, maxes)
        except psycopg.OperationalError as error:
            self.db_lost(error)
            return
        for job in rescued:
            self.log.warning("job_recovered", job_id=job.id, job_type=job.job_type, queue=job.queue,
                             status=job.status, attempt=job.attempts, reason=job.reason)
        if rescued:
            # Some may be ours (lock_timeout): stop those children now, before this tick's claim
            # hands the job to another child, not at the next heartbeat.
            self.stop_children_without_lock()
            self.claim_wanted = True

    # ======================================================================================
    # Claim and hand out
    # ======================================================================================
    def queue_filter(self) -> list[str] | None:
        return sorted(self.config.queues) if self.config.queues is not None else None

    def claim_and_hand_out(self) -> None:
        if self.draining or not self.claim_wanted or not self.types:
            return
        idle = self.claimable_idle()
        if not idle:
            self.top_up_prefetch()
            return
        if time.monotonic() < self.claim_retry_at:
            return
        plan = self.gatekeeper.plan(len(idle), [(c.job.job_type, c.job.queue) for c in self.pool.busy()], self.types)
        self.log_gate_events()
        self.claim_held_back = plan.capped
        self.gate_headroom = plan.n if plan.allowance.limit is not None else None
        if plan.n == 0 or plan.room.empty:
            # Gates closed: ask again when they sample next. Every type at its limit: a
            # finished job frees room (job_done resets this); the poll is the safety net.
            wait = GATE_RETRY if plan.n == 0 else self.config.poll_interval
            self.claim_retry_at = time.monotonic() + wait
            return
        slots = idle[:plan.n]
        rows = self.claim(plan, slots)
        if rows is None:
            return
        self.hand_out(rows, slots)
        # A full batch: a backlog waits. If its jobs are quick, claim ahead from now on.
        if len(rows) == len(slots):
            self.prefetch_types = self.prefetchable(plan)
        else:
            self.end_claims_ahead()
        self.prefetch_queues = plan.room.queues
        self.prefetch_head_types = plan.room.types
        if len(rows) == len(slots):
            self.top_up_prefetch(force=True)
        if self.gate_headroom is not None:
            self.gate_headroom -= len(rows)
        if len(rows) == len(slots):
            self.claim_wanted = True  # a full batch: more may be waiting
        elif rows and plan.limited:
            # Fewer than asked, but not because the table ran dry: a type or queue may have
            # reached its limit with the work behind it beyond what the statement looked at.
            # Ask again at once; the new room skips what is full now.
            self.claim_wanted = True
        else:
            self.claim_wanted = False  # nothing more to start now; new work announces itself
            if plan.global_limits and self.count_due(list(plan.global_limits), plan.room.queues, 1):
                # Nothing was taken yet work of a fleet-wide limited type is due: it waits for
                # room that frees up on other machines. Look again soon, not at the next poll.
                self.next_fleet_check = time.monotonic() + GATE_RETRY

    def claimable_idle(self) -> list[Child]:
        """Idle children, except those a courier's statement out claims jobs for."""
        idle = self.pool.idle()
        if idle and self.couriers_busy():
            coming = self.in_flight_for()
            idle = [c for c in idle if id(c) not in coming]
        return idle

    def log_gate_events(self) -> None:
        for event, fields in self.gatekeeper.events:
            if event == "gate_opened":
                self.log.info(event, **fields)
            elif event == "gate_error":
                self.log.error(event, **fields)
            else:
                self.log.warning(event, **fields)
        self.gatekeeper.events.clear()

    def claim(self, plan: ClaimPlan, children: list[Child]) -> list[tuple] | None:
        """One statement; with limits, the statement that honours them (and, for fleet-wide
        limits, under an advisory lock per type so concurrent claims cannot both see room)."""
        r = plan.room
        params: dict[str, Any] = {"n": len(children), "types": r.types, "queues": r.queues,
                                  "locks": [c.lock for c in children]}
        if not plan.limited:
            cur = self.execute(self.q.jobs_claim, params)
            return cur.fetchall() if cur is not None else None
        params.update({
            "scan": max(len(children) * 4, 32), "type_room": r.type_room, "queue_room": r.queue_room,
            "global_types": list(plan.global_limits), "global_limits": list(plan.global_limits.values()),
        })
        if any(job.job_type in plan.global_limits for job, _, _ in self.completions):
            # Our own finished jobs of a fleet-wide limited type still count as running until
            # recorded: record them first, or this claim finds no room and the next of that
            # type waits for a fleet check (a second) instead of starting now.
            self.flush_completions()
        db = self.db()
        if db is None:
            return None
        try:
            with db.transaction():
                for job_type in sorted(plan.global_limits):  # one order everywhere: no deadlocks
                    db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                               (GLOBAL_LIMIT_LOCK_SPACE, job_type))
                return db.execute(self.q.jobs_claim_limited, params).fetchall()
        except psycopg.OperationalError as error:
            self.db_lost(error)
            return None

    def prefetchable(self, plan: ClaimPlan) -> list[str]:
        """The types whose next jobs may be claimed ahead: never with limits or gates (they
        count what runs), never slow types (a prefetched job would wait behind a long one while
        another machine could run it)."""
        if plan.limited or self.gatekeeper.gates:
            return []
        return [t for t in plan.room.types if self.type_avg.get(t, 1.0) < PREFETCH_MAX_AVG_SECONDS]

    def end_claims_ahead(self) -> None:
        """The backlog of quick jobs is gone: successes no longer wait for a claim to ride along."""
        self.prefetch_types = []
        self.ahead_cap = AHEAD_FIRST
        if self.completions:
            self.completions_due = min(self.completions_due, time.monotonic() + COMPLETION_DELAY)

    def prefetch_slowest(self) -> float:
        return max(self.type_avg.get(t, 1.0) for t in self.prefetch_types)

    def prefetch_depth(self) -> int:
        return max(1, min(PREFETCH_MAX, int(PREFETCH_WINDOW / max(self.prefetch_slowest(), 1e-6))))

    def top_up_threshold(self, depth: int, eligible: int) -> int:
        """Free places needed before a claim ahead goes out: half of the queues, so that each
        statement claims many jobs, unless the half left would run out before a statement
        comes back (the quickest jobs: two children run half of a deep queue faster than
        Postgres claims it), then 1/PREFETCH_TOP_UP."""
        if depth // 2 * self.prefetch_slowest() >= 2 * self.claim_seconds:
            return max(1, depth * eligible // 2)
        return max(1, depth * eligible // PREFETCH_TOP_UP)

    def top_up_prefetch(self, force: bool = False) -> bool:
        """A backlog of quick jobs waits (the last claim was full): claim the next ones for
        every busy child, through a courier, to queue behind its current job. Only once the
        queues ran down by half (or successes wait to be recorded), so that each statement
        claims many jobs. Idle children are claimed for on the loop's connection, every type
        in priority order: a claim ahead takes only the quick types, and an urgent job of
        another type must not wait for a backlog of quick ones to drain. True if a statement
        went out."""
        courier = self.courier_ready() if self.prefetch_types and not self.draining else None
        if courier is None:
            return False
        depth = self.prefetch_depth()
        now = time.monotonic()
        coming = self.in_flight_for()  # rows another courier is bringing, per child
        # Not behind a job that turned long: what it queued was just given back (kill_overdue).
        rooms = [(child, self.prefetch_room(child, depth) - coming[id(child)]) for child in self.pool
                 if child.ending is None and child.state == BUSY and child.releasing is None
                 and child.job is not None and now - child.job.started <= PREFETCH_STALE]
        eligible = len(rooms)
        rooms = [(child, room) for child, room in rooms if room > 0]
        wanted = sum(room for _, room in rooms)
        if wanted == 0 or (not force and wanted < self.top_up_threshold(depth, eligible)):
            return False
        slots = fill_order(rooms, depth)[:self.ahead_cap]
        # Bounded: a backlog may last days, and the depths bind long before this.
        self.ahead_cap = min(self.ahead_cap * 2, PREFETCH_MAX * 1024)
        batch: list[tuple[Running, int, Any]] = []
        if not self.completions_uncertain:
            # The successes waiting to be recorded ride along: one round trip, one commit.
            batch, self.completions = self.completions, []
        # The head of the line goes to an idle child, if there is one (claim_and_hand_out) or
        # soon will be (one is starting), not to the end of a busy child's queue.
        head_types = [] if self.claimable_idle() or self.pool.in_state(BOOTING) else self.prefetch_head_types
        done = successes(batch)
        params = {"n": len(slots), "types": self.prefetch_types, "head_types": head_types,
                  "queues": self.prefetch_queues, "locks": text_array(c.lock for c in slots),
                  "done_ids": done["ids"], "done_locks": done["locks"], "done_ages": done["ages"]}
        courier.send(self.q.jobs_record_and_claim, params,
                     Flight(slots, batch, set(), quick=frozenset(self.prefetch_types)))
        return True

    def free_courier(self) -> Courier | None:
        """A courier that may take a statement. A second statement goes out while one is in
        Postgres only for the quickest types (their queues are at the depth cap and run dry
        before one statement returns); for slower ones it would only add statements."""
        free = next((c for c in self.couriers if not c.busy), None)
        if free is not None and self.couriers_busy():
            if not self.prefetch_types or self.prefetch_depth() < PREFETCH_MAX:
                return None
        return free

    def courier_ready(self) -> Courier | None:
        """A courier free to take a statement now (none while their connection is down)."""
        return self.free_courier() if time.monotonic() >= self.courier_retry_at else None

    def couriers_busy(self) -> bool:
        return any(c.busy for c in self.couriers)

    def in_flight_for(self) -> collections.Counter:
        """How many rows the statements out claim for each child (by id of the child)."""
        coming: collections.Counter = collections.Counter()
        for courier in self.couriers:
            flight = courier.context if courier.busy else None
            if flight is not None:
                coming.update(flight.per_child)
        return coming

    def on_courier_answer(self, courier: Courier) -> None:
        """A courier's statement came back: record the successes it carried, hand out the
        jobs it claimed. On failure nothing is lost: the successes are recorded again (counting
        any the cut-off commit did record) and claimed rows that never reached us are returned
        once no statement is out any more (return_orphans)."""
        answer = courier.take()
        if answer is not None:
            self.courier_answered(answer)

    def courier_answered(self, answer: Answer) -> None:
        flight: Flight = answer.context
        if answer.rows is None:
            self.courier_lost(answer)
            if flight.batch:
                self.completions[:0] = flight.batch
                self.completions_uncertain = True
                self.completions_due = time.monotonic()
            if flight.slots:
                self.orphan_check = True
                self.claim_wanted = True
            return
        if self.courier_lost_since is not None:
            down_ms = round((time.monotonic() - self.courier_lost_since) * 1000)
            self.log.info("db_reconnected", connection="claims", down_ms=down_ms)
            self.courier_lost_since = None
            self.courier_retry_delay = 0.2
        rows = answer.rows
        if flight.slots is None:
            self.completions_recorded(flight.batch, {row[0] for row in rows})
            if self.claim_held_back and any(self.types.get(job.job_type, {}).get("global_concurrency")
                                            for job, _, _ in flight.batch):
                # Room of a fleet-wide limited type, counted as taken while these were out.
                self.claim_wanted = True
                self.claim_retry_at = 0.0
        elif flight.batch:
            self.completions_recorded(flight.batch, {row[0] for row in rows if row[2] is None})
            rows = [row for row in rows if row[2] is not None]
        if flight.slots is not None:
            self.claim_seconds = 0.8 * self.claim_seconds + 0.2 * answer.seconds
            self.hand_out(rows, flight.slots, flight.killed, flight.quick)
            if len(rows) < len(flight.slots):
                # No more of the quick types. Others may wait (a type whose speed we do not
                # know yet): the next claim, for idle children, looks at every type.
                self.end_claims_ahead()
                self.claim_wanted = True
            else:
                self.top_up_prefetch()
        self.flush_logs()

    def courier_lost(self, answer: Answer) -> None:
        self.courier_retry_at = time.monotonic() + self.courier_retry_delay
        self.courier_retry_delay = min(self.courier_retry_delay * 2, 5.0)
        if self.courier_lost_since is None:
            self.courier_lost_since = time.monotonic()
            self.log.warning("db_connection_lost", connection="claims", error=describe_error(answer.error))

    def prefetch_room(self, child: Child, depth: int) -> int:
        room = depth - len(child.prefetched)
        if self.config.children.max_jobs:  # never more than it will run before it is recycled
            room = min(room, self.config.children.max_jobs - child.jobs_done - 1 - len(child.prefetched))
        return max(room, 0)

    def hand_out(self, rows: list[tuple], slots: list[Child], killed: set[tuple[int, str]] | None = None,
                 quick: frozenset[str] | None = None) -> None:
        """Start claimed jobs on their children or queue them there. Rows the courier brings
        may find their child gone, stopping or giving its queue back, or the job killed by an
        operator meanwhile: those do not start. Nor does the head of the line (a row of a type
        not in ``quick``) behind a busy child when a child went idle while the claim was out:
        it goes back to the queue, for the idle child."""
        by_lock = {c.lock: c for c in slots}
        unwanted = []
        head_goes_back = quick is not None and bool(self.pool.idle())
        for_idle = []
        for job_id, queue, job_type, payload, priority, run_at, attempts, max_attempts, lock in rows:
            child = by_lock[lock]
            if killed and (job_id, lock) in killed:
                continue  # the database says failed ('killed by operator') already
            opts = self.types.get(job_type, {})
            timeout = opts.get("timeout")
            running = Running(id=job_id, job_type=job_type, queue=queue, attempts=attempts,
                              max_attempts=max_attempts, lock=lock, started=0.0, deadline=None, timeout=timeout)
            if (self.draining or child.ending is not None or child.releasing is not None
                    or child.exit_status is not None or child.eof or self.pool.children.get(child.pid) is not child):
                unwanted.append(running)
                continue
            if head_goes_back and job_type not in quick and child.job is not None:
                for_idle.append(running)
                continue
            spec = {"id": job_id, "job_type": job_type, "queue": queue, "priority": priority,
                    "run_at": run_at, "attempts": attempts, "max_attempts": max_attempts,
                    "lock": lock}
            if child.job is None and child.state == IDLE:
                self.start_job(child, running, spec, payload)
            else:
                child.prefetched.append((running, spec, payload))
        for child in {id(c): c for c in slots}.values():
            self.push_queued(child)
        self.flush_logs()
        if unwanted:
            self.return_jobs(unwanted, "its child is stopping" if not self.draining else "shutdown")
        if for_idle:
            self.return_jobs(for_idle, "a child went idle while it was claimed behind a busy one")

    def push_queued(self, child: Child) -> None:
        """Send a busy child the jobs queued for it, in one write: it runs them back to back,
        without waiting for us between jobs. Small ones only (a large payload waits here and is
        sent when its turn comes, so a send never blocks the loop)."""
        if child.job is None or child.releasing is not None or child.ending is not None:
            return
        data = []
        size = 0
        for running, spec, payload in itertools.islice(child.prefetched, child.sent, None):
            if size + len(payload) > PUSH_BYTES:
                break
            data.append(protocol.encode_run(spec, payload))
            size += len(data[-1])
            child.sent += 1
        if data:
            self.pool.send(child, b"".join(data))

    def drop_queued(self, child: Child, jobs: set[tuple[int, str]], reason: str) -> None:
        """These jobs must not start (killed, lock lost): forget them if still here; if already
        queued in the child, ask for its queue back."""
        if not any((p[0].id, p[0].lock) in jobs for p in child.prefetched):
            return
        if any((p[0].id, p[0].lock) in jobs for p in itertools.islice(child.prefetched, 0, child.sent)):
            self.release_queued(child, reason)
        kept = [p for p in itertools.islice(child.prefetched, child.sent, None) if (p[0].id, p[0].lock) not in jobs]
        for _ in range(len(child.prefetched) - child.sent):
            child.prefetched.pop()
        child.prefetched.extend(kept)

    def start_job(self, child: Child, running: Running, spec: dict[str, Any], payload: str, sent: bool = False,
                  started: float | None = None) -> None:
        """Send a claimed job to a child; its deadline counts from now (or from ``started``, when
        the child began it on its own), not from the claim."""
        begun = time.monotonic() if started is None else started
        running.started = begun
        running.deadline = begun + running.timeout if running.timeout else None
        # Written with the other lines of this batch (flush_logs): one write() for many jobs.
        self.log_lines.append(("info", "job_started", JobFields(running.id, running.job_type, running.queue,
                                                                 running.attempts, child.pid)))
        # If the child died between claim and hand-out, reaping records the attempt.
        self.pool.hand_out(child, running, spec, payload, sent=sent)

    def return_prefetched(self, child: Child, reason: str) -> None:
        """Jobs claimed for a child that will not start them go back to queued at once, the
        attempt not counted (they never ran). Those already sent to it are asked back first:
        it may be starting one right now."""
        unsent = [child.prefetched.pop() for _ in range(len(child.prefetched) - child.sent)]
        self.return_jobs([running for running, _, _ in reversed(unsent)], reason)
        if child.sent:
            self.release_queued(child, reason)
        self.claim_wanted = True

    def release_queued(self, child: Child, reason: str) -> None:
        if child.releasing is None and not child.eof:
            child.releasing = reason
            self.pool.send(child, protocol.encode({"op": protocol.RELEASE}))

    def return_jobs(self, jobs: list[Running], reason: str) -> None:
        for running in jobs:
            self.log.info("job_returned", job_id=running.id, job_type=running.job_type, queue=running.queue,
                          attempt=running.attempts, reason=f"not started: {reason}")
        if jobs:
            ids = [running.id for running in jobs]
            what = f"return job {ids[0]}" if len(ids) == 1 else f"return {len(ids)} jobs ({ids[0]}…{ids[-1]})"
            self.record(self.q.jobs_return_many, fenced(jobs), what)
            self.claim_wanted = True

    # ======================================================================================
    # Status
    # ======================================================================================
    def status_line(self) -> str:
        busy = len(self.pool.busy())
        state = "draining" if self.draining else "serving"
        return (f"{state}: {busy}/{len(self.pool)} children busy, {self.stats['succeeded']} succeeded, "
                f"{self.stats['failed']} failed, {self.stats['retry']} retried")

    def report_status(self) -> None:
        if not self.notifier.enabled:
            return
        line = self.status_line()
        if line != self.last_status:
            self.last_status = line
            self.notifier.status(line)


def fenced(jobs: Iterable[Running]) -> dict[str, str]:
    """The ``ids`` and ``locks`` parameters of a statement that changes these jobs' rows only
    where each is still locked by its attempt."""
    jobs = list(jobs)
    return {"ids": int_array(job.id for job in jobs), "locks": text_array(job.lock for job in jobs)}


def successes(batch: list[tuple[Running, int, Any]]) -> dict[str, str]:
    """fenced() of waiting successes, with ``ages``: microseconds since each job ended, so that
    its finished_at is when it ended, not when the batch it waited in was recorded (up to
    COMPLETION_DELAY_AHEAD later). Integers: a few hundred a statement, formatted cheaply."""
    now = time.monotonic()
    jobs = [job for job, _, _ in batch]
    return fenced(jobs) | {"ages": int_array(int((now - job.finished) * 1e6) if now > job.finished > 0.0 else 0
                                             for job in jobs)}


def reported_at(at: Any) -> float | None:
    """A child's time.monotonic() in a report (the machine's clock, not the process'), if it is
    plausible: in the past, by at most REPORT_BATCH_MAX_LATE (anything further off is a message
    from before a pause, or nonsense)."""
    if type(at) is float:
        now = time.monotonic()
        if now - REPORT_BATCH_MAX_LATE <= at <= now:
            return at
    return None


def fill_order(rooms: list[tuple[Child, int]], depth: int) -> list[Child]:
    """The slots of a claim ahead, in the order rows fill them: always the child with the
    shortest queue next. When fewer rows come back than asked (the backlog ran out), the
    children's queues end even, not the first child's full and the last one's empty (that
    child would idle while the other works through its queue alone: ~80 ms at the end of a
    burst of 5 ms jobs)."""
    out: list[Child] = []
    for level in range(min(depth - room for _, room in rooms), depth):
        out.extend(child for child, room in rooms if depth - room <= level)
    return out


def fit_into_room(due: list[tuple], room: Any, global_limits: dict[str, int], headroom: int | None) -> int:
    """How many of the waiting jobs ``due`` (job_type, queue, count, running fleet-wide) could
    start now, given the room each type and queue has left here, the fleet-wide limits and a
    gate's headroom (None: no cap)."""
    type_left = dict(zip(room.types, room.type_room))
    queue_left = dict(zip(room.queues, room.queue_room)) if room.queues is not None else {}
    for job_type, _, _, running_everywhere in due:
        if job_type in global_limits and running_everywhere is not None:
            left = global_limits[job_type] - running_everywhere
            mine = type_left.get(job_type)
            type_left[job_type] = left if mine is None else min(mine, left)
    total = 0
    for job_type, queue, count, _ in due:
        take = count
        for left in (type_left.get(job_type), queue_left.get(queue)):
            if left is not None:
                take = min(take, max(left, 0))
        if type_left.get(job_type) is not None:
            type_left[job_type] -= take
        if queue_left.get(queue) is not None:
            queue_left[queue] -= take
        total += take
    return total if headroom is None else min(total, headroom)


def run_supervisor(config: Config, dsn: str) -> int:
    return Supervisor(config, dsn).run()


