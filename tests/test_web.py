"""The dashboard over HTTP (Flask's test client, and the real ``jobsupervisor web`` process):
every route, basic auth, CSRF, read-only mode, escaping of hostile data, keyset pagination and
its query plans on a table of 1,000,000 jobs, /metrics, the JSON API, mounting as WSGI."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import JOBSUPERVISOR, cli_env, job_row, run_cli, wait_for
from supervisor.config import load_config
from supervisor.queries import queries_for

pytest.importorskip("flask")
from supervisor.web import create_app, wsgi_app  # noqa: E402

HOSTILE = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'
RAW_MARKERS = ("<script>alert", "<img src=x", "onerror=alert(1)>")


# --- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def web_config(make_config):
    """A config for this test's database, with extra keys merged in; returns the loaded Config."""

    def make(extra: dict | None = None, env: dict[str, str] | None = None):
        data = {"imports": ["jobhandlers", "webhandlers"]}
        if extra:
            data.update(extra)
        path = make_config(data)
        return load_config(str(path), env=env) if env is not None else load_config(str(path))

    return make


@pytest.fixture
def app(web_config, dsn):
    return create_app(web_config(), dsn)


@pytest.fixture
def client(app):
    return app.test_client()


def add(db: psycopg.Connection, job_type: str = "noop", status: str = "queued", *, queue: str = "default",
        payload: Any = None, last_error: str | None = None, locked_by: str | None = None, attempts: int = 0,
        finished_ago: float | None = None, ran_for: float = 0.5, unique_key: str | None = None,
        run_in: float = 0.0, max_attempts: int | None = None) -> int:
    """Insert one job in any state, as the runtime would have left it."""
    finished = status in ("succeeded", "failed", "cancelled")
    if finished and finished_ago is None:
        finished_ago = 1.0
    if status in ("running", "succeeded", "failed") and locked_by is None:
        locked_by = "host-a:100:tok/101"  # kept on finished rows as who ran it last
    return db.execute(
        """INSERT INTO jobs (job_type, status, queue, payload, last_error, locked_by, locked_at, attempts,
                             finished_at, unique_key, run_at, max_attempts)
           VALUES (%(t)s, %(s)s, %(q)s, %(p)s, %(e)s, %(l)s,
                   CASE WHEN %(l)s::text IS NOT NULL THEN now() - make_interval(secs => %(ago)s + %(ran)s) END,
                   %(a)s, CASE WHEN %(fin)s THEN now() - make_interval(secs => %(ago)s) END, %(u)s,
                   now() + make_interval(secs => %(run_in)s), %(m)s)
           RETURNING id""",
        {"t": job_type, "s": status, "q": queue, "p": json.dumps(payload if payload is not None else {}),
         "e": last_error, "l": locked_by, "ago": finished_ago or 0.0, "ran": ran_for, "a": attempts,
         "fin": finished, "u": unique_key, "run_in": run_in, "m": max_attempts}).fetchone()[0]


def add_runner(db: psycopg.Connection, runner_id: str = "host-a:100:tok", host: str = "host-a", *,
               pid: int = 100, children: int = 4, busy: int = 1, info: dict | None = None,
               heartbeat_ago: float = 1.0, job_types: list[str] | None = None) -> None:
    db.execute(
        """INSERT INTO jobs_runners (id, host, pid, started_at, heartbeat_at, children, busy, queues, job_types,
                                     version, info)
           VALUES (%s, %s, %s, now() - interval '1 hour', now() - make_interval(secs => %s), %s, %s, NULL, %s,
                   '0.1.0', %s)""",
        (runner_id, host, pid, heartbeat_ago, children, busy, job_types or ["noop", "greet"],
         json.dumps(info or {})))


def token(client, url: str = "/jobs") -> str:
    page = client.get(url).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def post(client, url: str, data: dict | None = None, csrf: str | None = None, **kwargs):
    form = dict(data or {})
    form["csrf_token"] = csrf if csrf is not None else token(client)
    return client.post(url, data=form, **kwargs)


def flashes(html: str) -> list[str]:
    return [re.sub(r"\s+", " ", m).strip() for m in re.findall(r'<div class="flash flash-\w+">(.*?)</div>', html, re.S)]


def text(response) -> str:
    return response.get_data(as_text=True)


# --- every route ---------------------------------------------------------------------------------
def test_every_page_and_api_route_answers(client, db):
    failed = add(db, "fail", "failed", last_error="Traceback (most recent call last):\n  File x\nValueError: boom",
                 attempts=3, locked_by="host-a:100:tok/101")
    add(db, "noop", "succeeded", locked_by="host-a:100:tok/101")
    add(db, "greet", "queued", payload={"name": "Ada"})
    add_runner(db, info={"gate": {"kind": "load", "open": False, "reason": "cpu 93% > 85%"}})
    routes = {
        "/": "Throughput", "/?window=day": "Last 24 hours", "/jobs": f"#{failed}", "/jobs?status=failed": "boom",
        f"/jobs/{failed}": "ValueError: boom", "/runners": "host-a", "/enqueue": "Payload (JSON)",
        "/metrics": "jobsupervisor_jobs", "/api/status": '"by_status"', "/api/jobs": '"jobs"',
        f"/api/jobs/{failed}": '"last_error"', "/api/runners": '"runners"', "/api/throughput": '"buckets"',
        "/static/dashboard.css": "--accent", "/static/dashboard.js": "X-Live", "/static/favicon.svg": "<svg",
    }
    for url, needle in routes.items():
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code, text(response)[:500])
        assert needle in text(response), (url, needle)
        if not url.startswith(("/static", "/api", "/metrics")):
            assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert "no-store" in response.headers["Cache-Control"]
    assert client.get("/jobs/999999").status_code == 404
    assert client.get("/api/jobs/999999").status_code == 404
    assert client.get("/api/jobs/999999").json["status"] == 404
    assert client.get("/no/such/page").status_code == 404


def test_live_refresh_returns_the_regions_as_json(client, db):
    job_id = add(db, "greet", "queued", payload={"name": "Ada"})
    for url, region in (("/", "overview"), ("/jobs", "rows"), (f"/jobs/{job_id}", "job"), ("/runners", "runners")):
        response = client.get(url, headers={"X-Live": "1"})
        assert response.status_code == 200 and response.is_json, url
        assert set(response.json["regions"]) == {region}, url
        assert "<html" not in response.json["regions"][region]
    rows = client.get("/jobs", headers={"X-Live": "1"}).json["regions"]["rows"]
    assert f"#{job_id}" in rows and "Greets Ada in en" in rows


def test_overview_counts_charts_gate_oldest_and_runners(client, db):
    for i in range(6):
        add(db, "greet", "succeeded", finished_ago=60 * i + 5, payload={"name": str(i)})
    add(db, "fail", "failed", finished_ago=30, last_error="ValueError: boom")
    oldest = add(db, "noop", "queued", run_in=-120)
    add(db, "noop", "queued")
    add(db, "orphan_type", "queued")
    add_runner(db, info={"gate": {"kind": "load", "open": False, "reason": "cpu 93% > 85%"}}, busy=3, children=4)
    add_runner(db, "host-b:7:tok", "host-b", pid=7, heartbeat_ago=120)
    html = text(client.get("/"))
    assert re.search(r'data-count="succeeded">6<', html) and re.search(r'data-count="queued">3<', html)
    assert re.search(r'data-count="failed">1<', html)
    assert f'href="/jobs/{oldest}"' in html and "noop #" in html  # the oldest waiting job
    assert "load: closed" in html and "cpu 93% &gt; 85%" in html  # the gate, escaped
    assert "stale" in html and "1 live" in html
    assert "orphan_type" in html and "no live runner handles" in html
    assert "14.3%" in html  # 1 failed of 7 finished in the last hour
    throughput = html.split('class="chart chart-throughput"')[1].split("</figure>")[0]
    failures = html.split('class="chart chart-failures"')[1].split("</figure>")[0]
    assert throughput.count("<rect") == 7 and failures.count("<rect") == 1
    assert "greet: 1 finished" in throughput and "fail: 1 failed" in failures
    day = text(client.get("/?window=day"))
    assert "Last 24 hours" in day and "averaged over 15 minutes" in day
    # counts by type × queue link to the filtered list
    assert 'href="/jobs?type=greet&amp;queue=default&amp;status=succeeded"' in html


# --- job lists: filters, search, keyset pagination -------------------------------------------------
def ids_on(client, url: str) -> list[int]:
    html = text(client.get(url))
    return [int(i) for i in re.findall(r'name="ids" value="(\d+)"', html)]


def test_job_list_filters(client, db):
    a = add(db, "greet", "failed", queue="emails", last_error="SMTPError: 550 mailbox <unavailable>",
            payload={"name": "Ada"}, locked_by="host-a:1:x/2")
    b = add(db, "greet", "succeeded", queue="default", payload={"name": "Bob", "note": "100% done"},
            locked_by="host-b:1:y/3")
    c = add(db, "noop", "queued", queue="emails", payload={"note": "100 percent_done"})
    d = add(db, "fail", "retry", last_error="ValueError: boom", payload={"tag": "a_b"})
    db.execute("UPDATE jobs SET created_at = now() - interval '3 days' WHERE id = %s", (d,))
    assert ids_on(client, "/jobs") == [d, c, b, a]
    assert ids_on(client, "/jobs?status=failed") == [a]
    assert ids_on(client, "/jobs?type=greet") == [b, a]
    assert ids_on(client, "/jobs?queue=emails") == [c, a]
    assert ids_on(client, "/jobs?type=greet&queue=emails") == [a]
    assert ids_on(client, "/jobs?runner=host-b") == [b]
    assert ids_on(client, "/jobs?runner=host-a:1:x") == [a]
    # search: payload text and last_error, case-insensitive, wildcards taken literally
    assert ids_on(client, "/jobs?q=mailbox") == [a]
    assert ids_on(client, "/jobs?q=ADA") == [a]
    assert ids_on(client, "/jobs?q=100%25") == [b]
    assert ids_on(client, "/jobs?q=a_b") == [d]
    assert ids_on(client, "/jobs?q=boom&status=retry") == [d]
    # time range on created_at
    assert ids_on(client, "/jobs?since=1d") == [c, b, a]
    assert ids_on(client, "/jobs?since=7d") == [d, c, b, a]
    now = time.time()
    frm = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 4 * 86400))
    to = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 86400))
    assert ids_on(client, f"/jobs?from={frm}&to={to}") == [d]
    assert ids_on(client, "/jobs?order=oldest") == [a, b, c, d]
    # bad values are named, not fatal
    html = text(client.get("/jobs?status=bogus&from=yesterday&since=soon&before=x"))
    assert "status: expected one of" in html and "from: expected a time" in html
    assert "since: expected a duration" in html and "before: expected a job id" in html
    assert client.get("/api/jobs?status=bogus").status_code == 400


def test_keyset_pagination_walks_both_ways_in_both_orders(client, db):
    ids = [add(db, "noop", "queued") for _ in range(12)]
    newest = list(reversed(ids))
    page1 = ids_on(client, "/jobs?limit=5")
    assert page1 == newest[:5]
    html = text(client.get("/jobs?limit=5"))
    older = re.search(r'rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert f"before={newest[4]}" in older and 'rel="prev"' not in html
    assert ids_on(client, older) == newest[5:10]
    html2 = text(client.get(older))
    older2 = re.search(r'rel="next" href="([^"]+)"', html2).group(1).replace("&amp;", "&")
    assert ids_on(client, older2) == newest[10:]
    assert 'rel="next"' not in text(client.get(older2))
    newer = re.search(r'rel="prev" href="([^"]+)"', text(client.get(older2))).group(1).replace("&amp;", "&")
    assert f"after={newest[10]}" in newer
    assert ids_on(client, newer) == newest[5:10]
    back = re.search(r'rel="prev" href="([^"]+)"', text(client.get(newer))).group(1).replace("&amp;", "&")
    assert ids_on(client, back) == newest[:5]
    assert 'rel="prev"' not in text(client.get(back))
    # oldest first
    assert ids_on(client, "/jobs?order=oldest&limit=5") == ids[:5]
    assert ids_on(client, f"/jobs?order=oldest&limit=5&after={ids[4]}") == ids[5:10]
    assert ids_on(client, f"/jobs?order=oldest&limit=5&before={ids[5]}") == ids[:5]
    # filters carry over to the next page
    assert ids_on(client, f"/jobs?status=queued&limit=5&before={newest[4]}") == newest[5:10]
    # and the JSON API follows the same cursors
    api = client.get("/api/jobs?limit=5").json
    assert [j["id"] for j in api["jobs"]] == newest[:5] and api["newer"] is None
    assert [j["id"] for j in client.get(api["older"]).json["jobs"]] == newest[5:10]


def test_a_type_filter_merges_its_running_jobs_in_id_order(client, db, dsn):
    """The (job_type, id) index leaves running jobs out (0006): lists, pages and bulk actions by
    type still see every job of the type, running or not, in id order."""
    from supervisor.admin import JobFilter, act_on_matching, page_jobs

    statuses = ["running", "queued", "running", "succeeded", "failed", "running", "retry", "cancelled",
                "running", "queued"]
    ids = [add(db, "greet", status) for status in statuses]
    add(db, "noop", "running")
    add(db, "noop", "queued")
    newest = list(reversed(ids))
    assert ids_on(client, "/jobs?type=greet") == newest
    assert ids_on(client, "/jobs?type=greet&order=oldest") == ids
    assert ids_on(client, f"/jobs?type=greet&limit=3&before={newest[2]}") == newest[3:6]
    assert ids_on(client, f"/jobs?type=greet&limit=3&order=oldest&after={ids[2]}") == ids[3:6]
    assert ids_on(client, "/jobs?type=greet&status=running") == [i for i, s in zip(newest, reversed(statuses))
                                                                   if s == "running"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        walked, before = [], None
        while page := page_jobs(conn, "jobs", JobFilter(job_type="greet"), limit=4, before_id=before):
            walked += [row["id"] for row in page]
            before = page[-1]["id"]
        assert walked == newest
        result, more = act_on_matching(conn, "jobs", "cancel", JobFilter(job_type="greet"), batch=3)
    assert not more
    assert result.changed == sorted(i for i, s in zip(ids, statuses) if s in ("queued", "retry"))
    assert sorted(result.refused) == sorted(i for i, s in zip(ids, statuses) if s not in ("queued", "retry"))


# --- job detail ---------------------------------------------------------------------------------
def test_job_detail_shows_everything_and_the_handlers_summary(client, db):
    tb = 'Traceback (most recent call last):\n  File "h.py", line 3, in greet\n    raise KeyError(k)\nKeyError: \'lang\''
    job_id = add(db, "greet", "failed", payload={"name": "Ada", "lang": "fr", "nested": {"a": [1, 2]}},
                 last_error=tb, attempts=3, locked_by="host-a:100:tok/101", unique_key="greet:ada",
                 max_attempts=3)
    html = text(client.get(f"/jobs/{job_id}"))
    assert "Greets Ada in fr" in html  # the handler's describe=
    assert "KeyError: &#39;lang&#39;" in html and "File &#34;h.py&#34;, line 3" in html  # the traceback
    assert '&#34;nested&#34;: {\n    &#34;a&#34;: [\n      1,' in html  # pretty JSON, escaped
    assert "3 of 3" in html and "host-a:100:tok/101" in html and "greet:ada" in html
    assert re.search(r'href="/jobs\?runner=host-a(:|%3A)100(:|%3A)tok"', html)
    assert 'data-action="retry"' in html and 'data-action="delete"' in html and 'data-action="kill"' not in html
    running = add(db, "noop", "running")
    html = text(client.get(f"/jobs/{running}"))
    assert 'data-action="kill"' in html and 'data-action="retry"' not in html and "Running for" in html
    assert "(job type&#39;s setting)" in html or "job type's setting" in html
    broken = add(db, "broken_describe", "queued", payload={})
    assert "describe() failed: KeyError" in text(client.get(f"/jobs/{broken}"))
    api = client.get(f"/api/jobs/{job_id}").json
    assert api["summary"] == "Greets Ada in fr" and api["payload"]["lang"] == "fr"
    assert api["max_attempts_effective"] == 3 and api["created_at"].endswith("+00:00")


# --- actions ------------------------------------------------------------------------------------
def test_single_actions_change_the_job_and_say_so(client, db):
    failed = add(db, "fail", "failed", last_error="ValueError: boom", attempts=3)
    queued = add(db, "noop", "queued", run_in=3600)
    waiting = add(db, "noop", "queued", run_in=3600)
    running = add(db, "noop", "running")
    done = add(db, "noop", "succeeded")
    csrf = token(client)

    r = post(client, f"/jobs/{failed}/retry", csrf=csrf)
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/jobs/{failed}")
    assert job_row(db, failed)["status"] == "queued" and job_row(db, failed)["attempts"] == 0
    assert any("queued again" in f for f in flashes(text(client.get(r.headers["Location"]))))

    post(client, f"/jobs/{queued}/run-now", csrf=csrf)
    assert job_row(db, queued)["run_at"] <= db.execute("SELECT now()").fetchone()[0]
    post(client, f"/jobs/{waiting}/cancel", csrf=csrf)
    assert job_row(db, waiting)["status"] == "cancelled"
    post(client, f"/jobs/{running}/kill", csrf=csrf)
    assert job_row(db, running)["status"] == "failed" and job_row(db, running)["last_error"] == "killed by operator"
    r = post(client, f"/jobs/{done}/delete", csrf=csrf)
    assert job_row(db, done) is None and r.headers["Location"].endswith("/jobs")

    r = post(client, f"/jobs/{queued}/retry", csrf=csrf)  # refused: it is queued
    refusal = flashes(text(client.get(r.headers["Location"])))
    assert any(f"job {queued} is queued: only failed or cancelled jobs can be retried" in f for f in refusal)
    assert post(client, f"/jobs/{queued}/explode", csrf=csrf).status_code == 404
    r = post(client, "/jobs/424242/cancel", csrf=csrf)
    assert any("job 424242 does not exist" in f for f in flashes(text(client.get(r.headers["Location"]))))


def test_bulk_actions_on_selected_jobs_and_on_a_filter(client, db):
    failed = [add(db, "fail", "failed", last_error="ValueError: boom") for _ in range(4)]
    other = add(db, "noop", "failed", last_error="other")
    queued = add(db, "noop", "queued", run_in=3600)
    csrf = token(client)
    r = post(client, "/jobs/bulk", {"action": "retry", "scope": "selected", "ids": [failed[0], failed[1], queued],
                                    "next": "/jobs?status=failed"}, csrf=csrf)
    assert r.status_code == 303 and r.headers["Location"] == "/jobs?status=failed"
    assert [job_row(db, i)["status"] for i in failed] == ["queued", "queued", "failed", "failed"]
    messages = flashes(text(client.get("/jobs")))
    assert any("2 jobs queued again" in m for m in messages) and any("1 refused" in m for m in messages)
    # every job matching the filter: type fail, status failed (not the other type)
    r = post(client, "/jobs/bulk", {"action": "delete", "scope": "matching", "type": "fail", "status": "failed"},
             csrf=csrf)
    assert job_row(db, failed[2]) is None and job_row(db, failed[3]) is None
    assert job_row(db, other)["status"] == "failed" and job_row(db, failed[0])["status"] == "queued"
    # an open redirect is not followed
    r = post(client, "/jobs/bulk", {"action": "retry", "ids": [other], "next": "//evil.example/x"}, csrf=csrf)
    assert r.headers["Location"] == "/jobs"
    assert any("Select jobs first" in m for m in
               flashes(text(client.get(post(client, "/jobs/bulk", {"action": "retry"}, csrf=csrf).headers["Location"]))))


def test_bulk_on_a_filter_works_in_batches(client, db, monkeypatch):
    import supervisor.web.app as web_app

    db.execute("INSERT INTO jobs (job_type, status, finished_at) SELECT 'fail', 'failed', now() "
               "FROM generate_series(1, 1234)")
    original = web_app.admin.act_on_matching
    monkeypatch.setattr(web_app.admin, "act_on_matching",
                        lambda *a, **k: original(*a, **dict(k, batch=100)))
    post(client, "/jobs/bulk", {"action": "retry", "scope": "matching", "status": "failed"})
    assert db.execute("SELECT count(*) FROM jobs WHERE status = 'queued'").fetchone()[0] == 1234


def test_enqueue_validates_and_creates_the_job(client, db):
    csrf = token(client, "/enqueue")
    r = post(client, "/enqueue", {"job_type": "greet", "payload": '{"name": "Ada"}', "priority": "5",
                                  "delay": "5m", "max_attempts": "2", "unique_key": "k1"}, csrf=csrf)
    assert r.status_code == 303
    job_id = int(r.headers["Location"].rsplit("/", 1)[1])
    row = job_row(db, job_id)
    assert (row["job_type"], row["payload"], row["priority"], row["max_attempts"], row["unique_key"]) == \
        ("greet", {"name": "Ada"}, 5, 2, "k1")
    assert 290 < (row["run_at"] - row["created_at"]).total_seconds() < 310
    page = text(client.get(r.headers["Location"]))
    assert f"Enqueued greet as job #{job_id}" in page and "Greets Ada" in page

    bad = post(client, "/enqueue", {"job_type": "greet", "payload": '{"name": "Ada",\n "lang": fr}'}, csrf=csrf)
    assert bad.status_code == 400
    assert "The payload is not valid JSON: Expecting value at line 2, column 10" in text(bad)
    assert "&#34;lang&#34;: fr" in text(bad)  # the user's text is kept in the form, escaped
    for form, message in (({"job_type": "", "payload": "{}"}, "Give a job type."),
                          ({"job_type": "greet", "priority": "high"}, "Priority must be a whole number"),
                          ({"job_type": "greet", "max_attempts": "0"}, "Max_attempts must be an integer from 1"),
                          ({"job_type": "greet", "delay": "soon"}, "Delay:"),
                          ({"job_type": "greet", "run_at": "tomorrow"}, "Run_at must be an ISO 8601 time")):
        response = post(client, "/enqueue", form, csrf=csrf)
        assert response.status_code == 400 and message in text(response), (form, text(response)[:300])
    dup = post(client, "/enqueue", {"job_type": "greet", "payload": "{}", "unique_key": "k1"}, csrf=csrf)
    assert dup.headers["Location"].endswith(f"/jobs/{job_id}")
    assert any("already waiting or running" in m for m in flashes(text(client.get(dup.headers["Location"]))))
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


def test_runner_stop_request(client, db):
    add_runner(db)
    html = text(client.get("/runners"))
    assert 'name="runner" value="host-a:100:tok"' in html
    r = post(client, "/runners/stop", {"runner": "host-a:100:tok"}, csrf=token(client, "/runners"))
    assert r.status_code == 303
    info = db.execute("SELECT info FROM jobs_runners WHERE id = 'host-a:100:tok'").fetchone()[0]
    assert info.get("stop") is True
    html = text(client.get("/runners"))
    assert "Asked runner host-a:100:tok to stop" in html and "stop requested" in html
    r = post(client, "/runners/stop", {"runner": "nobody:1:x"}, csrf=token(client, "/jobs"))
    assert any("No runner nobody:1:x" in m for m in flashes(text(client.get(r.headers["Location"]))))


# --- auth, CSRF, read-only -------------------------------------------------------------------------
def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_guards_every_route(web_config, dsn, db):
    job_id = add(db, "fail", "failed")
    config = web_config({"web": {"auth": {"basic": {"user": "ops", "password": "${DASH_PW}"}}}},
                        env={**os.environ, "DASH_PW": "s3cret-é"})
    client = create_app(config, dsn).test_client()
    urls = ["/", "/jobs", f"/jobs/{job_id}", "/runners", "/enqueue", "/metrics", "/api/status", "/api/jobs",
            "/static/dashboard.css"]
    for url in urls:
        for headers in ({}, basic("ops", "wrong"), basic("someone", "s3cret-é"), {"Authorization": "Bearer x"}):
            response = client.get(url, headers=headers)
            assert response.status_code == 401, (url, headers)
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="jobsupervisor"')
            assert "s3cret" not in text(response)
    assert client.post(f"/jobs/{job_id}/retry").status_code == 401
    assert job_row(db, job_id)["status"] == "failed"
    good = basic("ops", "s3cret-é")
    for url in urls:
        assert client.get(url, headers=good).status_code == 200, url
    page = text(client.get("/jobs", headers=good))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post(f"/jobs/{job_id}/retry", data={"csrf_token": csrf}, headers=good)
    assert r.status_code == 303 and job_row(db, job_id)["status"] == "queued"


def test_csrf_token_is_required_on_every_post(client, db, app):
    job_id = add(db, "fail", "failed")
    add_runner(db)
    posts = [(f"/jobs/{job_id}/retry", {}), (f"/jobs/{job_id}/delete", {}), ("/jobs/bulk", {"action": "delete",
             "scope": "matching"}), ("/enqueue", {"job_type": "noop"}), ("/runners/stop", {"runner": "host-a:100:tok"})]
    other = app.test_client()
    stolen = token(other)  # a valid token, but of another session
    for url, form in posts:
        for csrf in (None, "", "forged", stolen):
            data = dict(form)
            if csrf is not None:
                data["csrf_token"] = csrf
            response = client.post(url, data=data)
            assert response.status_code == 403, (url, csrf)
            assert "CSRF" in text(response)
    assert job_row(db, job_id)["status"] == "failed"
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    assert db.execute("SELECT info FROM jobs_runners").fetchone()[0] == {}
    # the token also works as a header (for scripts holding the session cookie)
    csrf = token(client)
    assert client.post(f"/jobs/{job_id}/retry", headers={"X-CSRF-Token": csrf}).status_code == 303


def test_read_only_hides_and_refuses_actions(web_config, dsn, db):
    failed = add(db, "fail", "failed")
    running = add(db, "noop", "running")
    add_runner(db)
    client = create_app(web_config({"web": {"read_only": True}}), dsn).test_client()
    for url in ("/", "/jobs", f"/jobs/{failed}", f"/jobs/{running}", "/runners"):
        html = text(client.get(url))
        assert "read-only" in html
        assert 'method="post"' not in html and "data-action=" not in html and 'name="ids"' not in html, url
        assert 'href="/enqueue"' not in html
    assert client.get("/enqueue").status_code == 403
    # even with a valid session token, every POST is refused
    with client.session_transaction() as session:
        session["csrf"] = "known"
    for url, form in ((f"/jobs/{failed}/retry", {}), (f"/jobs/{running}/kill", {}), ("/jobs/bulk", {"action": "delete",
                      "scope": "matching"}), ("/enqueue", {"job_type": "noop"}), ("/runners/stop", {"runner": "host-a:100:tok"})):
        response = client.post(url, data=dict(form, csrf_token="known"))
        assert response.status_code == 403 and "read-only" in text(response), url
    assert job_row(db, failed)["status"] == "failed" and job_row(db, running)["status"] == "running"
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2


# --- escaping ------------------------------------------------------------------------------------
def test_hostile_payloads_errors_and_names_are_escaped_everywhere(client, db):
    job_id = add(db, HOSTILE, "failed", queue=HOSTILE, payload={HOSTILE: HOSTILE, "n": "</pre>" + HOSTILE},
                 last_error="Traceback (most recent call last):\n" + HOSTILE + "\nValueError: " + HOSTILE,
                 locked_by=HOSTILE + "/1", unique_key=HOSTILE)
    described = add(db, "hostile_describe", "queued", payload={"x": 1})
    add_runner(db, HOSTILE, HOSTILE, info={"gate": {"kind": HOSTILE, "open": False, "reason": HOSTILE}},
               job_types=[HOSTILE])
    pages = ["/", "/?window=day", "/jobs", f"/jobs?q={HOSTILE}", f"/jobs?type={HOSTILE}&runner={HOSTILE}",
             f"/jobs/{job_id}", f"/jobs/{described}", "/runners", "/enqueue", f"/enqueue?type={HOSTILE}",
             f"/jobs?status={HOSTILE}&from={HOSTILE}"]
    for url in pages:
        for headers in ({}, {"X-Live": "1"}) if not url.startswith("/enqueue") else ({},):
            response = client.get(url, headers=headers)
            assert response.status_code == 200, url
            body = text(response) if not headers else "".join(response.json["regions"].values())
            for marker in RAW_MARKERS:
                assert marker not in body, (url, headers, marker)
    detail = text(client.get(f"/jobs/{job_id}"))
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "&lt;script&gt;alert(&#34;describe&#34;)&lt;/script&gt; &amp; &#34;quotes&#34;" in \
        text(client.get(f"/jobs/{described}"))
    # the enqueue form keeps a hostile payload as text
    bad = post(client, "/enqueue", {"job_type": HOSTILE, "payload": "</textarea>" + HOSTILE})
    assert bad.status_code == 400 and "</textarea><script" not in text(bad) and "<img src=x" not in text(bad)
    # flash messages carry user text too
    ok = post(client, "/enqueue", {"job_type": HOSTILE, "payload": "{}"})
    for marker in RAW_MARKERS:
        assert marker not in text(client.get(ok.headers["Location"]))
    # JSON and metrics are not HTML, and say so
    assert client.get(f"/api/jobs/{job_id}").json["job_type"] == HOSTILE
    assert client.get(f"/api/jobs/{job_id}").headers["Content-Type"] == "application/json"
    metrics = client.get("/metrics")
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert 'job_type="<script>alert(\\"x\\")</script>\\"><img src=x onerror=alert(1)>"' in text(metrics)


def test_metric_labels_escape_backslash_quote_and_newline(client, db):
    add(db, 'a"b\\c\nd', "queued")
    assert 'job_type="a\\"b\\\\c\\nd"' in text(client.get("/metrics"))


# --- /metrics and the JSON API ------------------------------------------------------------------
def parse_metrics(body: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert match, f"not exposition format: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return out


def test_metrics_exposition(client, db):
    for seconds in (0.02, 0.3, 0.3, 4.0):
        add(db, "greet", "succeeded", ran_for=seconds, finished_ago=10)
    add(db, "fail", "failed", ran_for=2.0, finished_ago=10)
    add(db, "noop", "queued", run_in=-30)
    add_runner(db, busy=2, children=3, info={"gate": {"kind": "load", "open": True, "reason": None}})
    add_runner(db, "host-b:1:x", "host-b", heartbeat_ago=300)
    response = client.get("/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    body = text(response)
    assert "# TYPE jobsupervisor_jobs gauge" in body and "# TYPE jobsupervisor_job_duration_seconds histogram" in body
    m = parse_metrics(body)
    jobs = {(lb["status"], lb["job_type"]): v for lb, v in m["jobsupervisor_jobs"]}
    assert jobs[("succeeded", "greet")] == 4 and jobs[("failed", "fail")] == 1 and jobs[("queued", "noop")] == 1
    assert jobs[("running", "greet")] == 0  # every status is present, so series go to 0 instead of vanishing
    buckets = [(lb["le"], v) for lb, v in m["jobsupervisor_job_duration_seconds_bucket"] if lb["job_type"] == "greet"]
    values = [v for _, v in buckets]
    assert values == sorted(values) and buckets[-1] == ("+Inf", 4)
    assert dict(buckets)["0.05"] == 1 and dict(buckets)["0.5"] == 3 and dict(buckets)["5"] == 4
    count = dict((lb["job_type"], v) for lb, v in m["jobsupervisor_job_duration_seconds_count"])
    total = dict((lb["job_type"], v) for lb, v in m["jobsupervisor_job_duration_seconds_sum"])
    assert count == {"greet": 4, "fail": 1} and abs(total["greet"] - 4.62) < 0.05
    assert m["jobsupervisor_oldest_waiting_seconds"][0][1] >= 29
    runners = {lb["state"]: v for lb, v in m["jobsupervisor_runners"]}
    assert runners == {"live": 1, "stale": 1}
    busy = {lb["runner"]: v for lb, v in m["jobsupervisor_runner_busy"]}
    assert busy["host-a:100:tok"] == 2
    assert m["jobsupervisor_runner_gate_open"] == [({"runner": "host-a:100:tok", "host": "host-a", "kind": "load"}, 1)]


def test_json_api(client, db):
    failed = add(db, "fail", "failed", last_error="ValueError: boom", finished_ago=30)
    add(db, "greet", "succeeded", payload={"name": "Ada"}, finished_ago=30)
    add_runner(db)
    status = client.get("/api/status").json
    assert status["by_status"]["failed"] == 1 and status["read_only"] is False
    assert status["runners"][0]["id"] == "host-a:100:tok"
    jobs = client.get("/api/jobs?status=failed").json["jobs"]
    assert [j["id"] for j in jobs] == [failed] and jobs[0]["error_summary"] == "ValueError: boom"
    greet = client.get("/api/jobs?type=greet").json["jobs"][0]
    assert greet["summary"] == "Greets Ada in en"
    runners = client.get("/api/runners").json["runners"]
    assert runners[0]["host"] == "host-a" and runners[0]["stale"] is False
    throughput = client.get("/api/throughput?window=hour").json
    assert throughput["bucket_seconds"] == 60
    assert sum(b["failed"] for b in throughput["buckets"]) == 1 and sum(b["succeeded"] for b in throughput["buckets"]) == 1
    assert client.get("/api/throughput?window=year").status_code == 400


# --- the large table ------------------------------------------------------------------------------
def plan_of(conn: psycopg.Connection, query: str, params: dict, analyze: bool = False) -> dict:
    options = "ANALYZE, FORMAT JSON" if analyze else "FORMAT JSON"
    return conn.execute(f"EXPLAIN ({options}) " + query, params, prepare=False).fetchone()[0][0]["Plan"]


SCANS = ("Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan")


def rows_examined(plan: dict) -> int:
    """Table rows the plan's scans actually read (kept or filtered out), over all loops/workers."""
    total = 0
    for n in nodes(plan):
        if n["Node Type"] in SCANS:
            loops = n.get("Actual Loops", 1)
            total += (n["Actual Rows"] + n.get("Rows Removed by Filter", 0)
                      + n.get("Rows Removed by Index Recheck", 0)) * loops
    return total


def nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def test_pagination_stays_on_indexes_on_a_million_jobs(client, dsn, db):
    """1,000,000 jobs (generated server-side): the first page and a page near the very end are
    index range scans, for every filter, and never a sequential scan of the table."""
    db.execute("""
        INSERT INTO jobs (job_type, queue, payload, status, attempts, last_error, locked_by, created_at, finished_at)
        SELECT CASE WHEN g % 20000 = 5 THEN 'rare_type' ELSE 'type_' || (g % 20) END, CASE WHEN g % 3 = 0 THEN 'emails' ELSE 'default' END,
               jsonb_build_object('n', g, 'user', 'user' || (g % 5000)),
               CASE WHEN g % 1000 = 0 THEN 'failed' WHEN g % 97 = 0 THEN 'queued'
                    WHEN g % 40000 = 20005 OR g % 9973 = 7 THEN 'running' ELSE 'succeeded' END,
               1, CASE WHEN g % 1000 = 0 THEN 'ValueError: row ' || g END, 'host-' || (g % 4) || ':1:t/2',
               now() - make_interval(secs => (1000000 - g) * 0.5),
               CASE WHEN g % 97 <> 0 THEN now() - make_interval(secs => (1000000 - g) * 0.5) END
        FROM generate_series(1, 1000000) AS g""")
    db.execute("ANALYZE jobs")
    first = ids_on(client, "/jobs?limit=50")
    assert first == list(range(1000000, 999950, -1))
    deep = ids_on(client, "/jobs?limit=50&before=120")
    assert deep == list(range(119, 69, -1))
    assert ids_on(client, "/jobs?status=failed&before=5000") == [4000, 3000, 2000, 1000]
    assert ids_on(client, "/jobs?type=type_7&limit=3&before=200") == [187, 167, 147]
    # 20005, 60005, ... are running: the type's two parts (not running, running) merge by id.
    assert ids_on(client, "/jobs?type=rare_type&limit=3&before=100000") == [80005, 60005, 40005]
    assert ids_on(client, "/jobs?type=rare_type&limit=3&after=10000&order=oldest") == [20005, 40005, 60005]
    started = time.monotonic()
    ids_on(client, "/jobs?status=failed&type=type_0&before=10000")
    elapsed = time.monotonic() - started
    print(f"filtered deep page on 1,000,000 jobs: {elapsed * 1000:.0f} ms")

    q = queries_for("jobs")
    base = {"status": None, "job_type": None, "queue": None, "runner": None, "created_from": None,
            "created_to": None, "pattern": None, "limit": 51}
    cases = [
        ("first page", q.jobs_page_newest, {"before_id": None}, "jobs_pkey"),
        ("deep page", q.jobs_page_newest, {"before_id": 120}, "jobs_pkey"),
        ("oldest first, deep", q.jobs_page_oldest, {"after_id": 999000}, "jobs_pkey"),
        ("status, deep", q.jobs_page_newest, {"status": "failed", "before_id": 5000}, "jobs_status_partial_idx"),
        ("succeeded, deep", q.jobs_page_newest, {"status": "succeeded", "before_id": 5000}, "jobs_pkey"),
        ("common type, deep", q.jobs_page_newest, {"job_type": "type_7", "before_id": 200}, None),
        ("rare type", q.jobs_page_newest, {"job_type": "rare_type", "before_id": None}, "jobs_type_partial_idx"),
        ("rare type, deep", q.jobs_page_newest, {"job_type": "rare_type", "before_id": 100000}, "jobs_type_partial_idx"),
        ("rare type, running part", q.jobs_page_newest, {"job_type": "rare_type", "before_id": 100000},
         "jobs_status_partial_idx"),
        ("rare type, oldest first", q.jobs_page_oldest, {"job_type": "rare_type", "after_id": 10000},
         "jobs_type_partial_idx"),
        ("bulk ids by type", q.jobs_ids_matching, {"job_type": "rare_type", "before_id": 1000000},
         "jobs_type_partial_idx"),
        ("status and type", q.jobs_page_newest, {"status": "queued", "job_type": "type_3", "before_id": 900000},
         None),
        ("queue", q.jobs_page_newest, {"queue": "emails", "before_id": 500000}, "jobs_pkey"),
        ("runner", q.jobs_page_newest, {"runner": "host-1", "before_id": 500000}, "jobs_pkey"),
        ("search", q.jobs_page_newest, {"pattern": "%user42%", "before_id": 500000}, "jobs_pkey"),
        ("bulk ids", q.jobs_ids_matching, {"status": "failed", "before_id": 1000000}, "jobs_status_partial_idx"),
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, query, params, index in cases:
            plan = plan_of(conn, query, dict(base, **params), analyze=True)
            kinds = [(n["Node Type"], n.get("Index Name")) for n in nodes(plan)]
            assert not any(kind == "Seq Scan" for kind, _ in kinds), (name, kinds)
            scans = [ix for kind, ix in kinds if kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")]
            assert scans, (name, kinds)
            if index:
                assert index in scans, (name, kinds)
            # Deep or not, a page reads a bounded slice of an index, not the table (5% at most;
            # the actual numbers are a few hundred rows, more when parallel workers join a search).
            print(f"{name}: {rows_examined(plan)} rows read, {kinds}")
            assert rows_examined(plan) <= 50_000, (name, rows_examined(plan), kinds)
        chart = plan_of(conn, q.jobs_finished_per_bucket, {"window": 3600.0, "bucket": 60.0})
        assert "jobs_finished_idx" in [n.get("Index Name") for n in nodes(chart)]
        assert not any(n["Node Type"] == "Seq Scan" for n in nodes(chart))


# --- mounting and serving -------------------------------------------------------------------------
def test_mounts_inside_an_existing_flask_app(make_config, db):
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    failed = add(db, "fail", "failed")
    host = Flask("host_app")
    host.add_url_rule("/", "home", lambda: "the host application")
    host.wsgi_app = DispatcherMiddleware(host.wsgi_app, {"/admin/jobs": wsgi_app(str(make_config()))})
    client = host.test_client()
    assert text(client.get("/")) == "the host application"
    html = text(client.get("/admin/jobs/jobs"))
    assert f'href="/admin/jobs/jobs/{failed}"' in html and 'href="/admin/jobs/static/dashboard.css?v=' in html
    assert client.get("/admin/jobs/static/dashboard.js").status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    r = client.post(f"/admin/jobs/jobs/{failed}/retry", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["Location"] == f"/admin/jobs/jobs/{failed}"
    assert job_row(db, failed)["status"] == "queued"
    r = client.post("/admin/jobs/jobs/bulk", data={"csrf_token": csrf, "action": "cancel", "ids": [failed],
                                                   "next": "/admin/jobs/jobs?status=queued"})
    assert r.headers["Location"] == "/admin/jobs/jobs?status=queued"


def test_database_down_is_a_clear_503(web_config):
    client = create_app(web_config(), "postgresql://nobody@127.0.0.1:1/nothing").test_client()
    response = client.get("/")
    assert response.status_code == 503 and "The database is unavailable" in text(response)
    assert client.get("/api/status").json["status"] == 503


def start_web(args: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    handle = open(log, "wb")
    proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env or cli_env(), start_new_session=True)
    handle.close()

    def started():
        for line in log.read_text().splitlines():
            if '"web_started"' in line:
                return json.loads(line)["url"]
        if proc.poll() is not None:
            raise AssertionError(f"web exited {proc.returncode}: {log.read_text()}")
        return None

    return proc, wait_for(started, 20, message="web_started")


def test_jobsupervisor_web_serves_until_sigterm(make_config, db, tmp_path):
    add(db, "fail", "failed")
    config = make_config({"web": {"auth": {"basic": {"user": "ops", "password": "pw"}}}})
    proc, url = start_web([*JOBSUPERVISOR, "-c", str(config), "web", "--listen", "127.0.0.1:0"], tmp_path / "web.log")
    try:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
        request = urllib.request.Request(url + "jobs?status=failed", headers=basic("ops", "pw"))
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200 and b"fail" in response.read()
        request = urllib.request.Request(url + "metrics", headers=basic("ops", "pw"))
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b'jobsupervisor_jobs{status="failed",job_type="fail",queue="default"} 1' in response.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        events = [json.loads(line)["event"] for line in (tmp_path / "web.log").read_text().splitlines()]
        assert events[0] == "web_started" and events[-1] == "web_stopped"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def test_web_child_dies_with_its_parent(make_config, tmp_path):
    config = str(make_config())
    launcher = (
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ, JOBSUPERVISOR_WEB_PARENT_PID=str(os.getpid()))\n"
        f"log = open({str(tmp_path / 'child.log')!r}, 'wb')\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'supervisor.web.serve', '-c', {config!r}, "
        "'--listen', '127.0.0.1:0'] + sys.argv[1:], env=env, stderr=log)\n"
        "print(p.pid, flush=True)\n"
        "if len(sys.argv) > 1:\n"
        "    print(p.wait(), flush=True)\n"
        "time.sleep(120)\n")
    import psutil

    for extra in ([], ["--parent-pid", "0"]):  # via the environment, and via argv (which wins)
        log = tmp_path / "child.log"
        log.write_text("")
        parent = subprocess.Popen([sys.executable, "-c", launcher, *extra], stdout=subprocess.PIPE, text=True,
                                  env=cli_env(), start_new_session=True)
        child_pid = int(parent.stdout.readline())
        if extra:  # --parent-pid 0 is never our parent: it must refuse to start at all
            assert parent.stdout.readline().strip() == "1"
            parent.kill()
            parent.wait(5)
            continue
        child = psutil.Process(child_pid)
        wait_for(lambda: '"web_started"' in log.read_text(), 20, message="web child started")
        child.send_signal(signal.SIGINT)  # the terminal's Ctrl-C is for the supervisor, not for it
        time.sleep(0.3)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        parent.kill()
        parent.wait(5)

        def gone():
            try:
                return child.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_for(gone, 10, message="web child exits after its parent died")
        assert '"web_stopped"' in log.read_text()


def test_web_command_rejects_a_bad_address(make_config):
    result = run_cli("-c", str(make_config()), "web", "--listen", "not an address")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--listen: expected HOST:PORT" in result.stderr and "Traceback" not in result.stderr


def test_dashboard_indexes_come_from_a_migration(db):
    indexes = dict(db.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs'").fetchall())
    assert indexes["jobs_status_partial_idx"].endswith("USING btree (status, id) WHERE (status <> 'succeeded'::text)")
    assert indexes["jobs_type_partial_idx"].endswith("USING btree (job_type, id) WHERE (status <> 'running'::text)")
    assert "jobs_status_id_idx" not in indexes and "jobs_running_idx" not in indexes  # replaced by 0005
    assert "jobs_type_id_idx" not in indexes  # replaced by 0006


def test_supervisor_serves_the_dashboard_as_a_managed_child(make_config, start_supervisor, db):
    """web.listen: the supervisor starts the dashboard, forwards its log, and stops it on exit."""
    import psutil

    from conftest import wait_for

    add(db, "fail", "failed")
    sup = start_supervisor(make_config({"web": {"listen": "127.0.0.1:0"}}))
    started = sup.wait_event("web_started")
    child = sup.wait_event("web_child_started")
    url = started.get("url") or started.get("address")
    assert url, started
    url = url if url.startswith("http") else f"http://{url}"
    with urllib.request.urlopen(url.rstrip("/") + "/jobs?status=failed", timeout=10) as response:
        assert response.status == 200 and b"fail" in response.read()
    sup.signal(signal.SIGINT)
    assert sup.wait_exit(30) == 0
    wait_for(lambda: not psutil.pid_exists(child["web_pid"])
             or psutil.Process(child["web_pid"]).status() == psutil.STATUS_ZOMBIE, 10,
             message="dashboard process gone")
