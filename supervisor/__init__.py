"""jobsupervisor: Postgres-backed background jobs run by a multiprocessing supervisor."""

__version__ = "0.1.0"

from .enqueue import JobId, enqueue, enqueue_many  # noqa: E402
from .registry import Job, job  # noqa: E402

__all__ = ["Job", "JobId", "__version__", "enqueue", "enqueue_many", "job"]
