"""Gate functions (``gate.python``) for tests/test_pool_and_gates.py.

``flag`` reads the file named by ``$TESTGATE_FLAG`` before each claim: missing or ``open``
allows, ``closed`` denies, ``raise`` raises, a number caps. Every call appends a line to
``$TESTGATE_FLAG.calls``, so a test can see that the gate was asked (and how often).
"""

from __future__ import annotations

import os


def flag(state):
    path = os.environ["TESTGATE_FLAG"]
    with open(path + ".calls", "a") as calls:
        calls.write(f"busy={state.busy}\n")
    try:
        with open(path) as f:
            word = f.read().strip()
    except FileNotFoundError:
        return True
    if word == "closed":
        return False
    if word == "raise":
        raise RuntimeError("the test gate was asked to raise")
    if word.isdigit():
        return int(word)
    return True
