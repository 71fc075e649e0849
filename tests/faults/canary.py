"""Never to be imported by the runtime: a job type that names this module must not load it.

When imported it creates the file named by ``$FAULTS_CANARY`` (if set), which the security
tests look for."""

import os

_marker = os.environ.get("FAULTS_CANARY")
if _marker:
    with open(_marker, "a") as f:
        f.write(f"imported by pid {os.getpid()}\n")


def run(*args, **kwargs):  # what a naive "module:function" resolver would call
    if _marker:
        with open(_marker, "a") as f:
            f.write("run() called\n")
