"""The supervisor runs jobs end to end: the first test any change must keep green."""

import signal

from conftest import job_row, statuses, wait_for

from supervisor import enqueue


def test_runs_a_job_enqueued_from_python_and_drains_on_sigint(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "effect", {"x": 1})
    wait_for(lambda: job_row(db, job_id)["status"] == "succeeded", message="job succeeded")
    assert db.execute("SELECT count(*) FROM effects WHERE job_id = %s", (job_id,)).fetchone()[0] == 1
    sup.wait_event("job_succeeded", job_id=job_id)
    sup.signal(signal.SIGINT)
    assert sup.wait_exit(20) == 0
    assert sup.find("supervisor_stopped")
    assert statuses(db) == {"succeeded": 1}
    assert db.execute("SELECT count(*) FROM jobs_runners").fetchone()[0] == 0
