"""The ``@job`` decorator and the options each job type runs with.

A job type's effective options are: built-in defaults, overridden by the decorator,
overridden by ``jobs.<type>`` in the config (the operator has the last word).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

from .units import parse_duration

DEFAULT_MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class JobOptions:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    backoff: str = "linear"
    backoff_delay: float = 30.0
    backoff_max: float = 3600.0
    backoff_jitter: bool = False
    max_concurrency: int | None = None
    global_concurrency: int | None = None
    priority: int = 0
    queue: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_OPTION_NAMES = {f.name for f in fields(JobOptions)}
_DURATIONS = {"timeout", "backoff_delay", "backoff_max"}


@dataclass(frozen=True)
class Handler:
    name: str
    func: Callable[..., Any]
    options: JobOptions
    describe: Callable[[Any], str] | None = None
    is_async: bool = False


_handlers: dict[str, Handler] = {}


def _coerce(name: str, **raw: Any) -> dict[str, Any]:
    out = {}
    for key, value in raw.items():
        if key not in _OPTION_NAMES:
            raise TypeError(f"@job({name!r}): unknown option {key!r}; expected one of {sorted(_OPTION_NAMES)}")
        if key in _DURATIONS and value is not None:
            value = parse_duration(value)
        out[key] = value
    if out.get("max_attempts") is not None and out["max_attempts"] < 1:
        raise ValueError(f"@job({name!r}): max_attempts must be >= 1")
    if out.get("backoff") not in (None, "linear", "exponential"):
        raise ValueError(f"@job({name!r}): backoff must be 'linear' or 'exponential'")
    return out


def job(name: str, *, describe: Callable[[Any], str] | None = None, **options: Any):
    """Register the decorated function as the handler of job type ``name``.

    ``@job("send_email", max_attempts=3, timeout="60s", backoff="exponential", queue="emails")``
    """
    if not isinstance(name, str) or not name:
        raise TypeError("@job needs the job type name as its first argument")
    opts = JobOptions(**_coerce(name, **options))

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        existing = _handlers.get(name)
        if existing is not None and existing.func is not func and _qualname(existing.func) != _qualname(func):
            raise ValueError(f"job type {name!r} is registered twice: {_qualname(existing.func)} and {_qualname(func)}")
        _handlers[name] = Handler(name, func, opts, describe, inspect.iscoroutinefunction(func))
        return func

    return register


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def handlers() -> dict[str, Handler]:
    return dict(_handlers)


def get_handler(name: str) -> Handler | None:
    return _handlers.get(name)


def options_for(name: str, config=None) -> JobOptions:
    """Effective options of a job type: defaults < decorator < config ``jobs.<name>``."""
    handler = _handlers.get(name)
    opts = handler.options if handler else JobOptions()
    if config is not None:
        override = config.jobs.get(name)
        if override is not None:
            changes = {f.name: getattr(override, f.name) for f in fields(override)
                       if f.name in _OPTION_NAMES and getattr(override, f.name) is not None}
            if changes:
                opts = replace(opts, **changes)
    return opts


def import_handlers(modules, base_dir: str | None = None) -> None:
    """Import the modules that register handlers (config ``imports``), looking in the config
    file's directory too, so a project's own modules are found without installing them."""
    import importlib
    import sys

    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    for module in modules:
        importlib.import_module(module)


class Job:
    """What a handler receives: the job's row and the child's connection.

    ``conn`` is inside a transaction that also records the job's success: whatever the
    handler writes through it commits together with ``succeeded`` (exactly once) and is
    rolled back when the handler raises.
    """

    __slots__ = ("id", "job_type", "payload", "attempts", "max_attempts", "queue", "priority", "run_at", "conn", "lock")

    def __init__(self, id: int, job_type: str, payload: Any, attempts: int, max_attempts: int,
                 queue: str, priority: int, run_at: Any, conn: Any, lock: str):
        self.id = id
        self.job_type = job_type
        self.payload = payload
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.queue = queue
        self.priority = priority
        self.run_at = run_at
        self.conn = conn
        self.lock = lock

    def __repr__(self) -> str:
        return f"<Job {self.job_type}#{self.id} attempt {self.attempts}/{self.max_attempts}>"
