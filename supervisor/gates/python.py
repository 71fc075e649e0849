"""A user's gate (``gate.python: "module:function"``), consulted before each claim.

The function receives a :class:`~supervisor.gates.PoolState` and returns ``True`` or
``None`` (allow), ``False`` (deny) or an int N: at most N jobs running at once on this
supervisor (0 denies). N counts running jobs, not new ones, because the function is asked
before every claim: a constant answer must mean a stable cap, and a gate that thinks in new
jobs can return ``state.busy + k``. An exception denies and is logged; it never stops the
supervisor.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import traceback
from typing import Any, Callable

from . import Allowance, PoolState

ERROR_EVERY = 10.0  # seconds between two gate_error lines of one gate


def load_function(spec: str, base_dir: str | None = None, fresh: bool = False) -> Callable[[PoolState], Any]:
    """The gate function; ``fresh`` (SIGHUP) runs the module's file as it is now, into a new
    module object: the gate in use keeps its own module intact until the new one has loaded
    whole (a file that fails to load changes nothing). Modules it imports are not re-read."""
    module_name, _, func_name = spec.partition(":")
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    found = importlib.util.find_spec(module_name) if fresh and module_name in sys.modules else None
    if found is not None and found.loader is not None:
        module = importlib.util.module_from_spec(found)
        found.loader.exec_module(module)
    else:
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
        self.errors: list[str] = []  # for the loop to log
        self.last_error_at = -ERROR_EVERY

    def allowance(self, state: PoolState) -> Allowance:
        try:
            answer = self.func(state)
        except BaseException as error:  # noqa: BLE001 - a user's gate must never stop the supervisor (sys.exit too)
            self.report("".join(traceback.format_exception_only(type(error), error)).strip())
            return Allowance(0, f"gate {self.spec} raised {type(error).__name__}")
        if answer is None or answer is True:
            return Allowance(None)
        if answer is False:
            return Allowance(0, f"gate {self.spec} denied")
        if isinstance(answer, int) and not isinstance(answer, bool):
            if answer <= 0:
                return Allowance(0, f"gate {self.spec} returned {answer}")
            return Allowance(max(answer - state.busy, 0), f"gate {self.spec} caps running jobs at {answer}",
                             at_cap=state.busy >= answer)
        self.report(f"returned {answer!r}; expected True, False, None or an int")
        return Allowance(0, f"gate {self.spec} returned an invalid value")

    def report(self, error: str) -> None:
        """One log line per ERROR_EVERY seconds, not one per check (it is asked every second
        while it keeps work back)."""
        now = time.monotonic()
        if now - self.last_error_at >= ERROR_EVERY:
            self.last_error_at = now
            self.errors.append(error)
