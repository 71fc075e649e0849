"""A user's gate (``gate.python: "module:function"``), consulted before each claim.

The function receives a :class:`~supervisor.gates.PoolState` and returns ``True`` or
``None`` (allow), ``False`` (deny) or an int (at most that many new jobs). An exception
denies and is logged; it never stops the supervisor.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from typing import Any, Callable

from . import Allowance, PoolState


def load_function(spec: str, base_dir: str | None = None) -> Callable[[PoolState], Any]:
    module_name, _, func_name = spec.partition(":")
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise AttributeError(f"{module_name} has no callable {func_name!r}")
    return func


class PythonGate:
    name = "python"

    def __init__(self, spec: str, func: Callable[[PoolState], Any]):
        self.spec = spec
        self.func = func
        self.errors: list[str] = []  # for the loop to log (rate-limited there)
        self.last_error_at = 0.0

    def allowance(self, state: PoolState) -> Allowance:
        try:
            answer = self.func(state)
        except Exception as error:  # noqa: BLE001 - a user's gate must never crash the supervisor
            now = time.monotonic()
            if now - self.last_error_at > 10.0:  # one log line per 10 s, not one per tick
                self.last_error_at = now
                self.errors.append("".join(traceback.format_exception_only(type(error), error)).strip())
            return Allowance(0, f"gate {self.spec} raised {type(error).__name__}")
        if answer is None or answer is True:
            return Allowance(None)
        if answer is False:
            return Allowance(0, f"gate {self.spec} denied")
        if isinstance(answer, int) and not isinstance(answer, bool):
            return Allowance(max(answer, 0), f"gate {self.spec} capped at {answer}" if answer <= 0 else None)
        self.errors.append(f"returned {answer!r}; expected True, False, None or an int")
        return Allowance(0, f"gate {self.spec} returned an invalid value")
