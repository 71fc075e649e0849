"""The YAML configuration: declared once, validated strictly, frozen after loading.

Every setting is declared exactly once in :data:`SETTINGS` (key path, parser, default, help).
Validation, the dataclass defaults and :func:`defaults_yaml` (``jobsupervisor config
--defaults``) are all generated from that table.

Rules that apply to every key:

* ``${VAR}`` and ``${VAR:-default}`` expand environment variables in every string value
  (``${VAR-default}`` uses the default only when VAR is unset; ``$${`` is a literal ``${``).
  An unset variable without a default is an error. Numbers and booleans may come from
  variables (``max: ${CHILDREN:-4}``).
* A key set to ``null`` (or left empty, or expanding to an empty string) takes its default.
* Every mistake raises :class:`~supervisor.errors.ConfigError` with one line:
  ``<file>: <key.path>: expected <what>, got <value>``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import textwrap
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import yaml

from .errors import ConfigError
from .units import format_duration, mask_dsn, parse_duration, parse_size

__all__ = [
    "BasicAuth",
    "ChildrenConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "GateConfig",
    "JOB_TYPE_DEFAULTS",
    "JobTypeConfig",
    "LoggingConfig",
    "QueueConfig",
    "RetentionConfig",
    "ScheduleConfig",
    "SETTINGS",
    "WebConfig",
    "config_from_dict",
    "declared_keys",
    "defaults_yaml",
    "load_config",
]

ENV_CONFIG = "JOBSUPERVISOR_CONFIG"
ENV_DSN = "JOBSUPERVISOR_DSN"

# =============================================================================================
# Value parsers. Each is a callable (value, ctx) -> parsed value that raises _Invalid; its
# `.expected` text is used in error messages and in the help of defaults_yaml().


_WHOLE = object()


class _Invalid(Exception):
    """Raised by a parser; the loader turns it into a ConfigError naming file and key.

    Parsers of compound values (queues, web.auth, imports) point inside the value with
    *subpath* (``".emails.concurrency"``, ``"[1]"``) and pass the offending part as *value*.
    """

    def __init__(self, expected: str | None, problem: str | None = None,
                 show_value: bool = True, subpath: str = "", value: Any = _WHOLE):
        super().__init__(expected or problem)
        self.expected = expected
        self.problem = problem
        self.show_value = show_value
        self.subpath = subpath
        self.value = value


class _Expanded(str):
    """A string that came (at least partly) from an environment variable.

    Such strings may stand for numbers and booleans (``${MAX:-4}``); literal YAML strings may not.
    """


@dataclass(frozen=True)
class _Ctx:
    base_dir: str
    env: Mapping[str, str]


class _Kind:
    def __init__(self, expected: str, parse: Callable[[Any, _Ctx], Any], needs_ctx: bool = False):
        self.expected = expected
        self._parse = parse
        self.needs_ctx = needs_ctx  # the result depends on the base dir or the environment

    def __call__(self, value: Any, ctx: _Ctx) -> Any:
        return self._parse(value, ctx)


def _fail(expected: str, problem: str | None = None) -> None:
    raise _Invalid(expected, problem)


_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


def _bound_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" between {_num_text(low)} and {_num_text(high)}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num_text(low)}"
    if high is not None:
        return f" <= {_num_text(high)}"
    return ""


def _num_text(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _int_kind(low: int | None = None, high: int | None = None) -> _Kind:
    expected = "an integer" + _bound_text(low, high)

    def parse(value: Any, ctx: _Ctx) -> int:
        if isinstance(value, _Expanded) and _INT_TEXT.fullmatch(value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(expected)
        if (low is not None and value < low) or (high is not None and value > high):
            _fail(expected)
        return value

    return _Kind(expected, parse)


def _float_kind(low: float | None = None, high: float | None = None, low_open: bool = False) -> _Kind:
    expected = "a number" + _bound_text(low, high, low_open)

    def parse(value: Any, ctx: _Ctx) -> float:
        if isinstance(value, _Expanded) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(expected)
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            _fail(expected)
        if low is not None and (number <= low if low_open else number < low):
            _fail(expected)
        if high is not None and number > high:
            _fail(expected)
        return number

    return _Kind(expected, parse)


def _bool_kind() -> _Kind:
    expected = "true or false"

    def parse(value: Any, ctx: _Ctx) -> bool:
        if isinstance(value, _Expanded):
            word = value.strip().lower()
            if word in _TRUE_WORDS:
                return True
            if word in _FALSE_WORDS:
                return False
        if not isinstance(value, bool):
            _fail(expected)
        return value

    return _Kind(expected, parse)


def _duration_kind(positive: bool = False, none_word: str | None = None) -> _Kind:
    expected = "a duration like 30s, 5m, 1h or a number of seconds"
    if positive:
        expected = "a duration > 0 like 30s, 5m, 1h or a number of seconds"
    if none_word:
        expected += f", or '{none_word}'"

    def parse(value: Any, ctx: _Ctx) -> float | None:
        if none_word and isinstance(value, str) and value.strip().lower() == none_word:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError:
            _fail(expected)
        if positive and seconds <= 0:
            _fail(expected)
        return seconds

    return _Kind(expected, parse)


def _size_kind(optional: bool = False) -> _Kind:
    expected = "a size like 512MB, 1GB (1024-based) or a number of bytes"
    if optional:
        expected += ", or 'none'"

    def parse(value: Any, ctx: _Ctx) -> int | None:
        if optional and isinstance(value, str) and value.strip().lower() == "none":
            return None
        try:
            size = parse_size(value)
        except ValueError:
            _fail(expected)
        if size <= 0:
            _fail(expected, "must be > 0")
        return size

    return _Kind(expected, parse)


def _choice_kind(*options: str, aliases: Mapping[str, str] | None = None) -> _Kind:
    expected = "one of " + ", ".join(options)

    def parse(value: Any, ctx: _Ctx) -> str:
        if not isinstance(value, str):
            _fail(expected)
        word = value.strip().lower()
        word = (aliases or {}).get(word, word)
        if word not in options:
            _fail(expected)
        return word

    return _Kind(expected, parse)


def _string_kind(
    expected: str = "a non-empty string",
    pattern: str | None = None,
    optional: bool = False,
) -> _Kind:
    if optional:
        expected += ", or 'none'"
    regex = re.compile(pattern) if pattern else None

    def parse(value: Any, ctx: _Ctx) -> str | None:
        if optional and isinstance(value, str) and value.strip().lower() == "none":
            return None
        if not isinstance(value, str) or not value.strip():
            _fail(expected)
        if regex and not regex.fullmatch(value.strip()):
            _fail(expected)
        return value.strip()

    return _Kind(expected, parse)


def _path_kind(optional: bool = False) -> _Kind:
    expected = "a file system path (relative paths are relative to the config file)"
    if optional:
        expected += ", or 'none'"

    def parse(value: Any, ctx: _Ctx) -> str | None:
        if optional and isinstance(value, str) and value.strip().lower() == "none":
            return None
        if not isinstance(value, str) or not value.strip():
            _fail(expected)
        path = os.path.expanduser(value.strip())
        return os.path.normpath(os.path.join(ctx.base_dir, path))

    return _Kind(expected, parse, needs_ctx=True)


def _dsn_kind() -> _Kind:
    expected = (
        "a postgresql:// URI, a key=value connection string, or 'embedded' "
        f"(default: ${ENV_DSN}, else the embedded server)"
    )

    def parse(value: Any, ctx: _Ctx) -> str | None:
        if not isinstance(value, str):
            _fail(expected)
        text = value.strip()
        if text.lower() == "embedded":
            return None
        if "://" in text:
            scheme = text.split("://", 1)[0].lower()
            if scheme not in ("postgres", "postgresql"):
                _fail(expected, f"unsupported scheme '{scheme}'")
            return text
        if "=" not in text:  # not shown: it may be a password pasted in the wrong place
            raise _Invalid(expected, "not a connection string", show_value=False)
        return text

    return _Kind(expected, parse)


def _dsn_default(ctx: _Ctx) -> str | None:
    return ctx.env.get(ENV_DSN) or None


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = rf"{_IDENT}(?:\.{_IDENT})*"


def _imports_kind() -> _Kind:
    expected = "a list of module names like myapp.jobs"

    def parse(value: Any, ctx: _Ctx) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            _fail(expected)
        names = []
        for index, item in enumerate(items):
            if not isinstance(item, str) or not re.fullmatch(_MODULE, item.strip()):
                where = f"[{index}]" if isinstance(value, list) else ""
                raise _Invalid("a module name like myapp.jobs", subpath=where, value=item)
            if item.strip() not in names:
                names.append(item.strip())
        return tuple(names)

    return _Kind(expected, parse)


def _queues_kind() -> _Kind:
    expected = "'all', a list of queue names, or a mapping {name: {concurrency: N}}"
    concurrency = _int_kind(low=1)

    def name_of(key: Any, where: str = "") -> str:
        if not isinstance(key, str) or not key.strip():
            raise _Invalid("queue names (non-empty strings)", subpath=where, value=key)
        return key.strip()

    def parse(value: Any, ctx: _Ctx) -> dict[str, QueueConfig] | None:
        if isinstance(value, str):
            if value.strip().lower() == "all":
                return None
            value = [value]
        if isinstance(value, list):
            if not value:
                _fail(expected, "the list is empty")
            queues: dict[str, QueueConfig] = {}
            for index, item in enumerate(value):
                name = name_of(item, f"[{index}]")
                if name in queues:
                    raise _Invalid("each queue once", f"queue '{name}' is listed twice",
                                   subpath=f"[{index}]", show_value=False)
                queues[name] = QueueConfig()
            return queues
        if isinstance(value, dict):
            if not value:
                _fail(expected, "the mapping is empty")
            queues = {}
            for key, options in value.items():
                name = name_of(key)
                if options is None:
                    queues[name] = QueueConfig()
                    continue
                if not isinstance(options, dict):
                    raise _Invalid("{concurrency: N} or null", subpath=f".{key}", value=options)
                for option in options:
                    if option != "concurrency":
                        raise _Invalid("concurrency", f"unknown key '{option}'",
                                       subpath=f".{key}", show_value=False)
                limit = options.get("concurrency")
                if limit is not None and not (isinstance(limit, _Expanded) and not limit):
                    try:
                        limit = concurrency(limit, ctx)
                    except _Invalid as exc:
                        raise _Invalid(exc.expected, subpath=f".{key}.concurrency",
                                       value=limit) from None
                else:
                    limit = None
                queues[name] = QueueConfig(concurrency=limit)
            return queues
        _fail(expected)

    return _Kind(expected, parse)


_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(?P<port>\d{1,5})")


def _listen_kind() -> _Kind:
    expected = "host:port like 127.0.0.1:8080 or :8080, or 'off'"

    def parse(value: Any, ctx: _Ctx) -> str | None:
        if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
            return None
        if not isinstance(value, str):
            _fail(expected)
        match = _LISTEN.fullmatch(value.strip())
        if not match or int(match.group("port")) > 65535:
            _fail(expected)
        return value.strip()

    return _Kind(expected, parse)


def _auth_kind() -> _Kind:
    expected = "'none' or {basic: {user: NAME, password: SECRET}}"

    def parse(value: Any, ctx: _Ctx) -> BasicAuth | None:
        if value is False or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        if not isinstance(value, dict) or list(value) != ["basic"]:
            raise _Invalid(expected, show_value=False)
        basic = value["basic"]
        if not isinstance(basic, dict):
            raise _Invalid("{user: NAME, password: SECRET}", subpath=".basic", show_value=False)
        unknown = [key for key in basic if key not in ("user", "password")]
        if unknown:
            raise _Invalid("user, password", f"unknown key '{unknown[0]}'", subpath=".basic",
                           show_value=False)
        user, password = basic.get("user"), basic.get("password")
        if not isinstance(user, str) or not user.strip() or ":" in user:
            raise _Invalid("a non-empty string without ':'", subpath=".basic.user",
                           show_value=False)
        if isinstance(password, (int, float)) and not isinstance(password, bool):
            password = str(password)
        if not isinstance(password, str) or not password:
            raise _Invalid("a non-empty string", subpath=".basic.password", show_value=False)
        return BasicAuth(user=str(user.strip()), password=str(password))

    return _Kind(expected, parse)


def _cron_kind() -> _Kind:
    expected = "a cron expression with 5 or 6 fields like '*/5 * * * *'"

    def parse(value: Any, ctx: _Ctx) -> str:
        if not isinstance(value, str) or len(value.split()) not in (5, 6):
            _fail(expected)
        expr = " ".join(value.split())
        from .scheduler import cron_error

        problem = cron_error(expr)
        if problem:
            _fail(expected, problem)
        return expr

    return _Kind(expected, parse)


def _timezone_kind() -> _Kind:
    expected = "an IANA time zone like UTC or Europe/Paris"

    def parse(value: Any, ctx: _Ctx) -> str:
        if not isinstance(value, str) or not value.strip():
            _fail(expected)
        name = value.strip()
        try:
            zoneinfo.ZoneInfo(name)
        except Exception:  # ZoneInfoNotFoundError, ValueError for odd keys, OSError
            _fail(expected, f"unknown time zone '{name}'")
        return name

    return _Kind(expected, parse)


def _payload_kind() -> _Kind:
    expected = "a mapping that can be stored as JSON"

    def parse(value: Any, ctx: _Ctx) -> dict:
        if not isinstance(value, dict):
            _fail(expected)
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            _fail(expected, "it holds a value JSON cannot represent")
        return json.loads(text)  # plain dict/str copies, no _Expanded left

    return _Kind(expected, parse)


# =============================================================================================
# The settings table: the single declaration of every key.


@dataclass(frozen=True)
class Setting:
    """One configuration key.

    ``key`` is the dotted path; ``*`` stands for any name in a mapping (``jobs.*.timeout``) and
    ``[]`` for the entries of a list (``schedules[].cron``). ``default`` is written as a user
    would write it in YAML and goes through ``kind`` like any other value.
    """

    key: str
    kind: _Kind
    default: Any
    help: str
    required: bool = False
    secret: bool = False
    default_from: Callable[[_Ctx], Any] | None = None  # a default computed from env/base dir
    shown: str | None = None  # how defaults_yaml() writes the default, when not plain YAML

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]


# Effective per-job-type defaults (SPEC §3). `jobs.<type>.*` settings default to None, meaning
# "not set in the config": the handler's @job option applies, else these values.
JOB_TYPE_DEFAULTS: dict[str, Any] = {
    "max_attempts": 10,
    "timeout": None,
    "max_concurrency": None,
    "global_concurrency": None,
    "priority": 0,
    "queue": "default",
    "backoff": "linear",
    "backoff_delay": 30.0,
    "backoff_max": 3600.0,
    "backoff_jitter": False,
}



def _job(name: str, text: str) -> str:
    """Help of a jobs.<type> key, naming its effective default from JOB_TYPE_DEFAULTS."""
    default = JOB_TYPE_DEFAULTS[name]
    if default is None:
        shown = "no timeout" if name == "timeout" else "no limit"
    elif isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, float):
        shown = format_duration(default)
    else:
        shown = str(default)
    return f"{text} Not set: the @job option, else {shown}."


SETTINGS: tuple[Setting, ...] = (
    # database ----------------------------------------------------------------------------
    Setting("database.dsn", _dsn_kind(), None,
            f"Postgres connection string (postgresql://user:pass@host/db or key=value). "
            f"null: ${ENV_DSN} if set, else the embedded server; 'embedded' forces it.",
            secret=True, default_from=_dsn_default),
    Setting("database.table", _string_kind(
                "a lower-case SQL identifier of at most 41 characters: [a-z_][a-z0-9_]*",
                pattern=r"[a-z_][a-z0-9_]{0,40}"), "jobs",
            "Jobs table name; other objects are named after it (<table>_runners)."),
    Setting("database.embedded_dir", _path_kind(), ".jobsupervisor/pgdata",
            "Data directory of the embedded Postgres (used when there is no dsn)."),
    Setting("database.auto_migrate", _bool_kind(), True,
            "Create or upgrade the schema when the supervisor starts."),
    # handlers and queues -------------------------------------------------------------------
    Setting("imports", _imports_kind(), [],
            "Modules to import; they register handlers with @job."),
    Setting("queues", _queues_kind(), "all",
            "Queues this supervisor serves: all, a list of names, or "
            "{name: {concurrency: N}} to also cap each queue's running jobs on this machine."),
    # children ------------------------------------------------------------------------------
    Setting("children.min", _int_kind(low=0), 1, "Child processes kept running, even idle."),
    Setting("children.max", _int_kind(low=1), 16, "Most child processes (jobs at once)."),
    Setting("children.max_jobs", _int_kind(low=0), 0,
            "Recycle a child after this many jobs; 0: never."),
    Setting("children.idle_timeout", _duration_kind(), "60s",
            "Retire children above min that were idle this long."),
    Setting("children.max_memory", _size_kind(optional=True), "none",
            "Recycle a child whose RSS exceeds this after a job; none: no limit."),
    Setting("children.kill_grace", _duration_kind(), "5s",
            "Between SIGTERM and SIGKILL when a child must stop."),
    # gate --------------------------------------------------------------------------------
    Setting("gate.kind", _choice_kind("static", "load"), "static",
            "static: claim whenever a child is free; load: also require the thresholds below."),
    Setting("gate.python", _string_kind(
                "a function reference like mypackage.gates:may_claim",
                pattern=rf"{_MODULE}:{_IDENT}(?:\.{_IDENT})*", optional=True), "none",
            "module:function consulted before each claim; none: no Python gate."),
    Setting("gate.cpu_percent_max", _float_kind(low=0, high=100, low_open=True), 85,
            "load gate: do not claim above this CPU usage (percent)."),
    Setting("gate.memory_available_min", _size_kind(), "256MB",
            "load gate: do not claim with less available memory than this."),
    Setting("gate.loadavg_per_core_max", _float_kind(low=0, low_open=True), 2.0,
            "load gate: do not claim above this 1-minute load average per CPU core."),
    # per job type --------------------------------------------------------------------------
    Setting("jobs.*.max_attempts", _int_kind(low=1), None,
            _job("max_attempts", "Attempts before the job fails.")),
    Setting("jobs.*.timeout", _duration_kind(positive=True), None,
            _job("timeout", "Kill the attempt after this long.")),
    Setting("jobs.*.max_concurrency", _int_kind(low=1), None,
            _job("max_concurrency", "Most running at once on this supervisor.")),
    Setting("jobs.*.global_concurrency", _int_kind(low=1), None,
            _job("global_concurrency", "Most running at once across all supervisors.")),
    Setting("jobs.*.priority", _int_kind(), None,
            _job("priority", "Priority of jobs enqueued without one; higher runs first.")),
    Setting("jobs.*.queue", _string_kind(), None,
            _job("queue", "Queue of jobs enqueued without one.")),
    Setting("jobs.*.backoff", _choice_kind("linear", "exponential"), None,
            _job("backoff", "Retry delay growth.")),
    Setting("jobs.*.backoff_delay", _duration_kind(), None,
            _job("backoff_delay", "Base retry delay.")),
    Setting("jobs.*.backoff_max", _duration_kind(), None,
            _job("backoff_max", "Cap of the exponential retry delay.")),
    Setting("jobs.*.backoff_jitter", _bool_kind(), None,
            _job("backoff_jitter", "Randomize retry delays.")),
    # timing ------------------------------------------------------------------------------
    Setting("poll_interval", _duration_kind(positive=True), "5s",
            "Safety poll for due jobs; NOTIFY and run_at timers start jobs sooner."),
    Setting("lock_timeout", _duration_kind(positive=True), "10m",
            "A running job whose lock is this old is recovered (retried or failed)."),
    Setting("heartbeat_interval", _duration_kind(positive=True), "5s",
            "How often this supervisor records that it is alive."),
    Setting("shutdown_timeout", _duration_kind(), "60s",
            "Graceful drain limit; jobs still running then are killed and re-queued."),
    # retention -----------------------------------------------------------------------------
    Setting("retention.succeeded", _duration_kind(positive=True, none_word="keep"), "7d",
            "Delete succeeded jobs finished this long ago; keep: never."),
    Setting("retention.failed", _duration_kind(positive=True, none_word="keep"), "30d",
            "Delete failed and cancelled jobs finished this long ago; keep: never."),
    # schedules -----------------------------------------------------------------------------
    Setting("schedules[].name", _string_kind(), None, "Unique name of the schedule.",
            required=True),
    Setting("schedules[].cron", _cron_kind(), None,
            "Cron expression: minute hour day month weekday, optional 6th field.",
            required=True),
    Setting("schedules[].job", _string_kind(), None, "Job type to enqueue.", required=True),
    Setting("schedules[].payload", _payload_kind(), {}, "Payload of the enqueued jobs."),
    Setting("schedules[].queue", _string_kind(), None, "Queue; null: the job type's."),
    Setting("schedules[].priority", _int_kind(), None, "Priority; null: the job type's."),
    Setting("schedules[].timezone", _timezone_kind(), "UTC",
            "Time zone the cron expression is read in."),
    Setting("schedules[].catch_up", _choice_kind("latest", "none"), "latest",
            "After downtime: latest enqueues the most recent missed run once; none skips."),
    # logging -------------------------------------------------------------------------------
    Setting("logging.format", _choice_kind("json", "console", "syslog"), "json",
            "json: one object per line on stderr; console: for humans; syslog: @cee: JSON."),
    Setting("logging.level", _choice_kind("debug", "info", "warning", "error",
                                          aliases={"warn": "warning"}), "info",
            "Lowest level logged."),
    Setting("logging.syslog_address",
            _string_kind("a socket path, host:port (UDP), udp://host:port or tcp://host:port",
                         pattern=r"(?i:(?:tcp|udp)://)?(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]*):\d{1,5}"
                                 r"|(?i:unix:(?://)?)?[/.]\S*",
                         optional=True), "none",
            "syslog format: socket path, host:port (UDP), udp://host:port or tcp://host:port "
            "(octet-counted); none: the local syslog (/dev/log)."),
    # web ---------------------------------------------------------------------------------
    Setting("web.listen", _listen_kind(), "off",
            "Dashboard address served by the supervisor, like 127.0.0.1:8080; off: none.",
            shown="off"),
    Setting("web.auth", _auth_kind(), "none",
            "none, or {basic: {user: NAME, password: ${DASHBOARD_PASSWORD}}}.",
            secret=True),
    Setting("web.read_only", _bool_kind(), False, "Hide the dashboard's actions."),
    # process -------------------------------------------------------------------------------
    Setting("pidfile", _path_kind(optional=True), "none",
            "File holding the supervisor's pid, for jobsupervisor stop; none: no file."),
)

_SECTION_HELP = {
    "database": "Where the jobs live.",
    "children": "The pool of child processes that run jobs.",
    "gate": "Whether to claim more jobs right now (checked before each claim).",
    "jobs": "Per-job-type overrides of the @job options; the config wins over the decorator.",
    "retention": "Pruning of finished jobs: a duration, or keep. 'retention: keep' keeps all.",
    "schedules": "Built-in cron: each entry enqueues a job when its expression matches.",
    "logging": "Logs go to stderr (or syslog).",
    "web": "The dashboard.",
}


def declared_keys() -> tuple[str, ...]:
    """All declared key paths, e.g. ``children.max``, ``jobs.*.timeout``, ``schedules[].cron``."""
    return tuple(setting.key for setting in SETTINGS)


# --- the tree the loader walks, built from the flat table -------------------------------------


@dataclass
class _Section:
    path: str  # "" for the top level; "jobs.*" and "schedules[]" for item sections
    children: dict[str, Any] = field(default_factory=dict)  # name -> Setting | _Section | _Many
    shorthand: Callable[[Any], Any] | None = None


@dataclass
class _Many:
    """A mapping of names to sections (``jobs``) or a list of sections (``schedules``)."""

    path: str
    item: _Section
    is_list: bool


def _build_tree() -> _Section:
    root = _Section("")
    for setting in SETTINGS:
        node = root
        segments = setting.key.split(".")
        path = ""
        for index, segment in enumerate(segments[:-1]):
            is_list = segment.endswith("[]")
            name = segment[:-2] if is_list else segment
            path = f"{path}.{name}" if path else name
            if name == "*":
                continue  # handled by the _Many of the previous segment
            following = segments[index + 1] if index + 1 < len(segments) - 1 else None
            child = node.children.get(name)
            if child is None:
                if is_list:
                    child = _Many(path, _Section(path + "[]"), is_list=True)
                elif following == "*":
                    child = _Many(path, _Section(path + ".*"), is_list=False)
                else:
                    child = _Section(path)
                node.children[name] = child
            node = child.item if isinstance(child, _Many) else child
        node.children[segments[-1]] = setting
    root.children["retention"].shorthand = _retention_shorthand
    return root


def _retention_shorthand(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == "keep":
        return {"succeeded": "keep", "failed": "keep"}
    return value


_TREE = _build_tree()
_BY_KEY = {setting.key: setting for setting in SETTINGS}


def _static_default(key: str) -> Any:
    """Default of *key* for the dataclasses (context-free settings only)."""
    setting = _BY_KEY[key]
    return None if setting.default is None else setting.kind(setting.default, _Ctx("/", {}))


def _default_field(key: str) -> Any:
    """A dataclass field whose default comes from the settings table."""
    setting = _BY_KEY[key]
    if setting.default_from is not None or setting.kind.needs_ctx:
        return field(default_factory=lambda: _default_value(setting, _cwd_ctx()))
    value = _static_default(key)
    if isinstance(value, (dict, list)):
        return field(default_factory=lambda: _static_default(key))
    return field(default=value)


def _cwd_ctx() -> _Ctx:
    return _Ctx(os.getcwd(), os.environ)


def _default_value(setting: Setting, ctx: _Ctx) -> Any:
    if setting.default_from is not None:
        return setting.default_from(ctx)
    if setting.default is None:
        return None
    return setting.kind(setting.default, ctx)


# =============================================================================================
# The frozen result. Defaults come from SETTINGS; durations are float seconds, sizes int bytes.


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str | None = _default_field("database.dsn")  # None: the embedded server
    table: str = _default_field("database.table")
    embedded_dir: str = _default_field("database.embedded_dir")
    auto_migrate: bool = _default_field("database.auto_migrate")

    @property
    def uses_embedded(self) -> bool:
        return self.dsn is None

    @property
    def dsn_masked(self) -> str | None:
        return mask_dsn(self.dsn)


@dataclass(frozen=True)
class QueueConfig:
    concurrency: int | None = None  # None: no per-queue limit


@dataclass(frozen=True)
class ChildrenConfig:
    min: int = _default_field("children.min")
    max: int = _default_field("children.max")
    max_jobs: int = _default_field("children.max_jobs")
    idle_timeout: float = _default_field("children.idle_timeout")
    max_memory: int | None = _default_field("children.max_memory")
    kill_grace: float = _default_field("children.kill_grace")


@dataclass(frozen=True)
class GateConfig:
    kind: str = _default_field("gate.kind")
    python: str | None = _default_field("gate.python")
    cpu_percent_max: float = _default_field("gate.cpu_percent_max")
    memory_available_min: int = _default_field("gate.memory_available_min")
    loadavg_per_core_max: float = _default_field("gate.loadavg_per_core_max")


@dataclass(frozen=True)
class JobTypeConfig:
    """Overrides for one job type; None means "not set here" (see JOB_TYPE_DEFAULTS)."""

    max_attempts: int | None = None
    timeout: float | None = None
    max_concurrency: int | None = None
    global_concurrency: int | None = None
    priority: int | None = None
    queue: str | None = None
    backoff: str | None = None
    backoff_delay: float | None = None
    backoff_max: float | None = None
    backoff_jitter: bool | None = None

    def overrides(self) -> dict[str, Any]:
        """Only the options set in the config, as keyword arguments."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RetentionConfig:
    succeeded: float | None = _default_field("retention.succeeded")  # None: keep forever
    failed: float | None = _default_field("retention.failed")


@dataclass(frozen=True)
class ScheduleConfig:
    name: str
    cron: str
    job: str
    payload: dict = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    timezone: str = _default_field("schedules[].timezone")
    catch_up: str = _default_field("schedules[].catch_up")


@dataclass(frozen=True)
class LoggingConfig:
    format: str = _default_field("logging.format")
    level: str = _default_field("logging.level")
    syslog_address: str | None = _default_field("logging.syslog_address")


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class WebConfig:
    listen: str | None = _default_field("web.listen")  # None: no dashboard from the supervisor
    auth: BasicAuth | None = _default_field("web.auth")
    read_only: bool = _default_field("web.read_only")

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of :attr:`listen`; ``:8080`` gives ``("0.0.0.0", 8080)``."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        return host, int(port)


@dataclass(frozen=True)
class Config:
    path: str | None = None  # absolute path of the file; None when there is no file
    base_dir: str = field(default_factory=os.getcwd)  # relative paths resolve against this
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    imports: tuple[str, ...] = _default_field("imports")
    queues: dict[str, QueueConfig] | None = _default_field("queues")  # None: all queues
    children: ChildrenConfig = field(default_factory=ChildrenConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    jobs: dict[str, JobTypeConfig] = field(default_factory=dict)
    poll_interval: float = _default_field("poll_interval")
    lock_timeout: float = _default_field("lock_timeout")
    heartbeat_interval: float = _default_field("heartbeat_interval")
    shutdown_timeout: float = _default_field("shutdown_timeout")
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    schedules: tuple[ScheduleConfig, ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    web: WebConfig = field(default_factory=WebConfig)
    pidfile: str | None = _default_field("pidfile")

    def job(self, job_type: str) -> JobTypeConfig:
        """The overrides for *job_type*; an all-None JobTypeConfig when it has none."""
        return self.jobs.get(job_type) or JobTypeConfig()

    def serves_queue(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def as_dict(self) -> dict[str, Any]:
        """Plain data for display or logs, with the DSN and dashboard password masked."""
        data = dataclasses.asdict(self)
        data["database"]["dsn"] = mask_dsn(self.database.dsn)
        if data["web"]["auth"] is not None:
            data["web"]["auth"]["password"] = "***"
        return data


_SECTION_CLASSES = {
    "database": DatabaseConfig,
    "children": ChildrenConfig,
    "gate": GateConfig,
    "retention": RetentionConfig,
    "logging": LoggingConfig,
    "web": WebConfig,
}


# =============================================================================================
# Loading


def load_config(path: str | None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate a config file.

    *path* None: ``$JOBSUPERVISOR_CONFIG`` if set and non-empty, else pure defaults (no file).
    *env* (default ``os.environ``) is used for ``${VAR}`` expansion and ``$JOBSUPERVISOR_DSN``.
    Raises :class:`ConfigError` (one line, exit status 2) for every mistake.
    """
    env = os.environ if env is None else env
    if path is None:
        path = env.get(ENV_CONFIG) or None
    if path is None:
        return config_from_dict({}, source="<defaults>", env=env)
    shown = str(path)
    absolute = os.path.abspath(os.path.expanduser(shown))
    if not os.path.exists(absolute):
        raise ConfigError(f"config file not found: {absolute}")
    if os.path.isdir(absolute):
        raise ConfigError(f"config file is a directory: {absolute}")
    try:
        with open(absolute, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {absolute}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = _parse_yaml(text, shown)
        config = config_from_dict(data, source=shown, env=env, base_dir=os.path.dirname(absolute))
    except RecursionError:
        # A YAML anchor that contains its own alias (&a {max: *a}) nests without end.
        raise ConfigError(f"{shown}: the file refers to itself (a YAML alias inside its own anchor), "
                          "expected plain nested values") from None
    return dataclasses.replace(config, path=absolute)


def config_from_dict(
    data: dict | None,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: str | None = None,
) -> Config:
    """Validate already-parsed YAML data (a mapping) and build a :class:`Config`.

    *source* names the origin in error messages. Relative paths resolve against *base_dir*
    (default: the current directory). The result has ``path=None``.
    """
    env = os.environ if env is None else env
    base_dir = os.path.abspath(base_dir) if base_dir is not None else os.getcwd()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of keys (like 'children: ...') at the top level, "
            f"got {_render(data)}")
    loader = _Loader(source, _Ctx(base_dir, env))
    values = loader.section(_TREE, loader.expand(data, ""), "")
    loader.check_cross_fields(values)
    return _build_config(values, base_dir)


def _build_config(values: dict[str, Any], base_dir: str) -> Config:
    kwargs: dict[str, Any] = {"path": None, "base_dir": base_dir}
    for name, value in values.items():
        if name in _SECTION_CLASSES:
            kwargs[name] = _SECTION_CLASSES[name](**value)
        elif name == "jobs":
            kwargs[name] = {job_type: JobTypeConfig(**item) for job_type, item in value.items()}
        elif name == "schedules":
            kwargs[name] = tuple(ScheduleConfig(**item) for item in value)
        else:
            kwargs[name] = value
    return Config(**kwargs)


class _Loader:
    def __init__(self, source: str, ctx: _Ctx):
        self.source = source
        self.ctx = ctx

    def error(self, path: str, message: str) -> ConfigError:
        where = f"{self.source}: {path}: " if path else f"{self.source}: "
        return ConfigError(where + message)

    # --- ${VAR} expansion -------------------------------------------------------------------
    _VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")

    def expand(self, value: Any, path: str) -> Any:
        if isinstance(value, dict):
            return {key: self.expand(item, _join(path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [self.expand(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return _Expanded(self._VAR.sub(lambda m: self._substitute(m, path), value))
        return value

    def _substitute(self, match: re.Match, path: str) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        if body is None:
            raise self.error(path, "unterminated '${', expected ${VAR} or ${VAR:-default}")
        name, op, default = re.match(r"([^:-]*)(:-|-)?(.*)", body, re.S).groups()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise self.error(path, f"invalid variable reference '${{{body}}}', "
                                   "expected ${VAR} or ${VAR:-default}")
        current = self.ctx.env.get(name)
        if op == ":-" and not current:
            return default
        if op == "-" and current is None:
            return default
        if current is None:
            raise self.error(path, f"environment variable '{name}' is not set, "
                                   f"expected it to be set or a default like ${{{name}:-value}}")
        return current

    # --- walking the tree -------------------------------------------------------------------
    def section(self, node: _Section, raw: Any, path: str) -> dict[str, Any]:
        if _is_unset(raw):
            raw = {}
        if node.shorthand is not None:
            raw = node.shorthand(raw)
        if not isinstance(raw, dict):
            raise self.error(path, f"expected a mapping with keys {', '.join(node.children)}, "
                                   f"got {_render(raw)}")
        for key in raw:
            if key not in node.children:
                raise self.error("", _unknown_key_message(node, key, path))
        values: dict[str, Any] = {}
        for name, child in node.children.items():
            child_path = _join(path, name)
            item = raw.get(name)
            if isinstance(child, Setting):
                values[name] = self.leaf(child, item, child_path)
            elif isinstance(child, _Many):
                values[name] = self.many(child, item, child_path)
            else:
                values[name] = self.section(child, item, child_path)
        return values

    def many(self, node: _Many, raw: Any, path: str) -> Any:
        if _is_unset(raw):
            return [] if node.is_list else {}
        if node.is_list:
            if not isinstance(raw, list):
                raise self.error(path, f"expected a list of mappings with keys "
                                       f"{', '.join(node.item.children)}, got {_render(raw)}")
            return [self.section(node.item, item, f"{path}[{i}]") for i, item in enumerate(raw)]
        if not isinstance(raw, dict):
            raise self.error(path, f"expected a mapping of names to mappings with keys "
                                   f"{', '.join(node.item.children)}, got {_render(raw)}")
        result = {}
        for key, item in raw.items():
            if not isinstance(key, str) or not key.strip():
                raise self.error(path, f"expected names (strings) as keys, got {_render(key)}")
            result[key] = self.section(node.item, item, _join(path, key))
        return result

    def leaf(self, setting: Setting, raw: Any, path: str) -> Any:
        if _is_unset(raw):
            if setting.required:
                raise self.error(path, f"required key is missing, expected {setting.kind.expected}")
            return _default_value(setting, self.ctx)
        try:
            value = setting.kind(raw, self.ctx)
            return str(value) if isinstance(value, str) else value
        except _Invalid as exc:
            parts = [exc.problem] if exc.problem else []
            if exc.expected:
                parts.append(f"expected {exc.expected}")
            message = ", ".join(parts)
            bad = raw if exc.value is _WHOLE else exc.value
            if exc.show_value and not setting.secret:
                message += f", got {_render(bad)}"
            elif exc.show_value and setting.key == "database.dsn" and isinstance(bad, str):
                message += f", got {_render(mask_dsn(bad))}"
            raise self.error(path + exc.subpath, message) from None

    def check_cross_fields(self, values: dict[str, Any]) -> None:
        children = values["children"]
        if children["min"] > children["max"]:
            raise self.error("children.min", f"expected at most children.max "
                                             f"({children['max']}), got {children['min']}")
        seen: dict[str, int] = {}
        for index, schedule in enumerate(values["schedules"]):
            name = schedule["name"]
            if name in seen:
                raise self.error(f"schedules[{index}].name",
                                 f"duplicate schedule name '{name}' (also schedules[{seen[name]}]), "
                                 "expected unique names")
            seen[name] = index


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, _Expanded) and not value.strip())


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _unknown_key_message(node: _Section, key: Any, path: str) -> str:
    full = _join(path, key)
    names = list(node.children)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{full}' (did you mean '{_join(path, close[0])}'?)"
    # a key that belongs to another section, e.g. a top-level 'max' or 'dsn'
    elsewhere = [s.key for s in SETTINGS if s.name == str(key) and "*" not in s.key
                 and "[]" not in s.key]
    if elsewhere:
        return f"unknown key '{full}' (did you mean '{elsewhere[0]}'?)"
    return f"unknown key '{full}', expected one of: {', '.join(names)}"


def _render(value: Any) -> str:
    """A short, one-line rendering of a user value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = str(value)
        if len(text) > 60:
            text = text[:57] + "..."
        return repr(text)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


# --- YAML -------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: PyYAML reports it below
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key '{key}' (first on line "
                                    f"{seen[key].line + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        if mark is not None:
            raise ConfigError(f"{source}: line {mark.line + 1}, column {mark.column + 1}: "
                              f"invalid YAML: {problem}") from None
        raise ConfigError(f"{source}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from None


# =============================================================================================
# defaults_yaml()

_HEADER = """\
# jobsupervisor configuration: every key with its default (jobsupervisor config --defaults).
# Durations: 30s, 5m, 1h, 1d, 250ms or seconds. Sizes: 512MB, 1GB (1024-based) or bytes.
# ${VAR} and ${VAR:-default} expand environment variables. A key set to null takes its default.
"""


def defaults_yaml() -> str:
    """A commented YAML document listing every key with its default and help.

    Loading it yields the default configuration. Per-type ``jobs`` and ``schedules`` entries
    have no defaults of their own; they are shown as commented-out examples.
    """
    lines = [_HEADER.rstrip("\n")]
    for name, child in _TREE.children.items():
        lines.append("")
        if isinstance(child, Setting):
            lines += _setting_lines(child, "")
        elif isinstance(child, _Many):
            lines += _comment(_SECTION_HELP.get(name, ""), "")
            lines.append(f"{name}: {'[]' if child.is_list else '{}'}")
            lines += _example_lines(name, child)
        else:
            lines += _comment(_SECTION_HELP.get(name, ""), "")
            lines.append(f"{name}:")
            for setting in child.children.values():
                lines += _setting_lines(setting, "  ")
    return "\n".join(lines).rstrip() + "\n"


def _setting_lines(setting: Setting, indent: str) -> list[str]:
    return _comment(setting.help, indent) + [f"{indent}{setting.name}: {_yaml_default(setting)}"]


def _yaml_default(setting: Setting) -> str:
    if setting.shown is not None:
        return setting.shown
    text = yaml.safe_dump(setting.default, default_flow_style=True, width=10_000)
    return text.replace("\n...\n", "").strip()


def _comment(text: str, indent: str) -> list[str]:
    if not text:
        return []
    return [f"{indent}# {line}" for line in textwrap.wrap(text, width=98 - len(indent))]


def _example_lines(name: str, node: _Many) -> list[str]:
    lines = ["# For example:", f"# {name}:"]
    indent = "#     "
    if node.is_list:
        lines.append("#   -")
    else:
        lines.append("#   send_email:")
    for setting in node.item.children.values():
        example = _EXAMPLES.get(setting.key, _yaml_default(setting))
        lines += _comment(setting.help, indent)
        lines.append(f"{indent}{setting.name}: {example}")
    return lines


_EXAMPLES = {
    "jobs.*.max_attempts": "3",
    "jobs.*.timeout": "60s",
    "jobs.*.max_concurrency": "4",
    "jobs.*.global_concurrency": "10",
    "jobs.*.priority": "0",
    "jobs.*.queue": "emails",
    "jobs.*.backoff": "exponential",
    "jobs.*.backoff_delay": "5s",
    "jobs.*.backoff_max": "1h",
    "jobs.*.backoff_jitter": "true",
    "schedules[].name": "nightly-report",
    "schedules[].cron": "'0 3 * * *'",
    "schedules[].job": "send_report",
    "schedules[].payload": "{kind: daily}",
    "schedules[].queue": "null",
    "schedules[].priority": "null",
    "schedules[].timezone": "Europe/Paris",
}
