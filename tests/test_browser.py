"""The dashboard in a real browser: Debian's chromium driven by Playwright, against the real
``jobsupervisor web`` process and a real supervisor running tests/webhandlers.py.

The story: basic auth refuses a stranger; an operator logs in, sees the overview, enqueues a
report import (after being told what is wrong with the JSON), watches it fail, filters the
job list down to it, opens it, reads the traceback, and once the fix is deployed presses
Retry and watches it succeed without reloading the page.

Screenshots go to tests/artifacts/. With JOBSUPERVISOR_DOCS_SCREENSHOT=1 the overview is also
written to docs/dashboard.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import JOBSUPERVISOR, REPO, cli_env, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "tests" / "artifacts"
USER, PASSWORD = "operator", "correct horse battery staple"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"browser tests need Debian's chromium at {CHROMIUM} "
                                       "(apt-get install -y chromium)")

# A day of history for the charts: six job types with their own rates, run times and failure
# rates, a daily rhythm, and a short incident 20-28 minutes ago when sync_crm failed half the time.
HISTORY_SQL = """
SELECT setseed(0.42);
WITH types(job_type, queue, per_min, fail_rate, seconds) AS (
    VALUES ('send_email', 'emails', 9, 0.004, 0.4), ('resize_image', 'media', 5, 0.002, 1.6),
           ('sync_crm', 'default', 3, 0.01, 2.5), ('webhook', 'default', 4, 0.008, 0.2),
           ('charge_card', 'payments', 2, 0.001, 0.9), ('generate_report', 'reports', 0.4, 0.02, 14.0)
), minutes AS (
    SELECT m FROM generate_series(0, 1439) AS m
), planned AS (
    SELECT t.*, m,
           greatest(0, round(t.per_min * (1 + 0.5 * sin(m / 140.0) + 0.15 * sin(m / 9.0)) * (0.7 + random() * 0.6)))::int AS n
    FROM types t CROSS JOIN minutes
), runs AS (
    SELECT p.*, now() - make_interval(secs => p.m * 60 + random() * 60) AS finished,
           random() < CASE WHEN p.job_type = 'sync_crm' AND p.m BETWEEN 20 AND 28 THEN 0.5 ELSE p.fail_rate END AS bad
    FROM planned p CROSS JOIN LATERAL generate_series(1, p.n) AS i
)
INSERT INTO jobs (job_type, queue, payload, status, attempts, last_error, locked_by, locked_at, created_at, run_at,
                  updated_at, finished_at)
SELECT job_type, queue, jsonb_build_object('minute', m), CASE WHEN bad THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN bad THEN 3 ELSE 1 END,
       CASE WHEN bad THEN 'Traceback (most recent call last):' || E'\\n' || '  ...' || E'\\n'
                          || 'TimeoutError: upstream did not answer in 30s' END,
       'worker-2:3112:7f3a/3120', finished - make_interval(secs => seconds * (0.5 + random())),
       finished - make_interval(secs => 1 + random() * 5), finished - make_interval(secs => seconds + 1),
       finished, finished
FROM runs;
"""


def start_web(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    handle = open(log, "wb")
    proc = subprocess.Popen([*JOBSUPERVISOR, "-c", str(config), "web", "--listen", "127.0.0.1:0"], stdout=handle,
                            stderr=subprocess.STDOUT, env=cli_env(), start_new_session=True)
    handle.close()

    def started():
        for line in log.read_text().splitlines():
            if '"web_started"' in line:
                return json.loads(line)["url"]
        assert proc.poll() is None, f"jobsupervisor web exited: {log.read_text()}"
        return None

    return proc, wait_for(started, 20, message="jobsupervisor web to listen")


@pytest.fixture
def dashboard(make_config, start_supervisor, db, tmp_path):
    """A supervisor with the test handlers, the dashboard in front of it, and a day of history."""
    config = make_config({"imports": ["jobhandlers", "webhandlers"],
                          "web": {"auth": {"basic": {"user": USER, "password": PASSWORD}}}})
    db.execute(HISTORY_SQL)
    for name, lang in (("Ada", "en"), ("Grace", "fr"), ("Linus", "fi"), ("Barbara", "en"), ("Edsger", "nl")):
        db.execute("INSERT INTO jobs (job_type, payload, queue, run_at) VALUES ('greet', %s, 'emails', "
                   "now() + interval '20 minutes')", (json.dumps({"name": name, "lang": lang}),))
    db.execute("INSERT INTO jobs (job_type, payload, status, attempts, run_at, last_error) VALUES "
               "('greet', '{\"name\": \"Alan\"}', 'retry', 1, now() + interval '4 minutes', "
               "'ConnectionResetError: peer closed the connection')")
    db.execute("ANALYZE jobs")
    supervisor = start_supervisor(config)
    supervisor.wait_ready()
    db.execute("INSERT INTO jobs (job_type, payload) VALUES ('sleep', '{\"seconds\": 120}')")  # one busy child
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0], 20,
             message="a running job")
    web, url = start_web(config, tmp_path / "web.log")
    try:
        yield url
    finally:
        web.send_signal(signal.SIGTERM)
        try:
            web.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(5)


def test_log_in_filter_open_a_failed_job_retry_and_see_it_succeed(dashboard, db, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url = dashboard
    fix = tmp_path / "fix-deployed"
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            # A stranger is refused (chromium itself would only show an auth prompt).
            stranger = pw.request.new_context()
            refused = stranger.get(url)
            assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Basic")
            stranger.dispose()

            context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                                          viewport={"width": 1440, "height": 900})
            page = context.new_page()
            def on_console(message) -> None:
                expected = "status of 400" in message.text and message.location.get("url", "").endswith("/enqueue")
                if message.type == "error" and not expected:  # the invalid JSON below answers 400, on purpose
                    problems.append(f"console {message.type}: {message.text} at {message.location}")

            page.on("console", on_console)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

            # Log in: the overview.
            assert page.goto(url).status == 200
            expect(page.locator(".tile-succeeded .tile-value")).not_to_have_text("0")
            expect(page.locator(".chart-throughput rect").first).to_be_visible()
            expect(page.locator(".runner-mini")).to_have_count(1)
            expect(page.locator("#live-toggle")).to_be_visible()
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
            if os.environ.get("JOBSUPERVISOR_DOCS_SCREENSHOT"):
                (REPO / "docs").mkdir(exist_ok=True)
                page.screenshot(path=str(REPO / "docs" / "dashboard.png"), full_page=True)

            # Enqueue the import; a JSON mistake is explained, and the text is kept.
            page.click("nav >> text=Enqueue")
            page.fill("input[name=job_type]", "import_report")
            page.fill("textarea[name=payload]", '{"report": "2024-Q3", "customer": ACME}')
            page.click("button:has-text('Enqueue')")
            expect(page.locator("#enqueue-error")).to_contain_text("The payload is not valid JSON: Expecting value "
                                                                   "at line 1, column 35")
            payload = json.dumps({"report": "2024-Q3", "customer": "ACME", "fix": str(fix)})
            page.fill("textarea[name=payload]", payload)
            page.click("button:has-text('Enqueue')")
            expect(page.locator(".flash-success")).to_contain_text("Enqueued import_report as job #")
            job_id = int(re.search(r"/jobs/(\d+)$", page.url).group(1))
            # It runs and fails (max_attempts=1); the live refresh shows it without a reload.
            expect(page.locator(".page-head .pill")).to_have_text("failed", timeout=20_000)

            # Filter the job list down to it.
            page.click("nav >> text=Jobs")
            page.select_option("select[name=status]", "failed")
            page.fill("input[name=type]", "import_report")
            page.click("button:has-text('Apply')")
            expect(page).to_have_url(re.compile(r"status=failed.*type=import_report"))
            rows = page.locator("table.jobs tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("Import report 2024-Q3 for ACME")
            expect(rows.first.locator(".error-text")).to_contain_text("RuntimeError: report parser cannot read")
            page.screenshot(path=str(ARTIFACTS / "jobs-filtered.png"), full_page=True)

            # Open it: the traceback, the attempts, the handler's own summary.
            rows.first.locator("a.job-type").click()
            expect(page).to_have_url(re.compile(rf"/jobs/{job_id}$"))
            expect(page.locator(".error-pre")).to_contain_text("Traceback (most recent call last)")
            expect(page.locator(".error-pre")).to_contain_text("fix not deployed: fix-deployed")
            expect(page.locator(".summary-box")).to_contain_text("Import report 2024-Q3 for ACME")
            expect(page.locator(".facts")).to_contain_text("1 of 1")
            page.screenshot(path=str(ARTIFACTS / "job-failed.png"), full_page=True)

            # Deploy the fix, press Retry, see it succeed (live, no reload).
            fix.write_text("deployed")
            page.click("button[data-action=retry]")
            expect(page.locator(".flash-success")).to_contain_text(f"#{job_id}")
            expect(page.locator(".page-head .pill")).to_have_text("succeeded", timeout=20_000)
            expect(page.locator("button[data-action=retry]")).to_have_count(0)
            page.screenshot(path=str(ARTIFACTS / "job-succeeded.png"), full_page=True)
            assert db.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()[0] == "succeeded"

            # The runners page shows the live supervisor.
            page.click("nav >> text=Runners")
            expect(page.locator("table.runners tbody tr")).to_have_count(1)
            expect(page.locator("table.runners")).to_contain_text(re.compile(r"1/[12] busy"))
            page.screenshot(path=str(ARTIFACTS / "runners.png"), full_page=True)
            context.close()
        finally:
            browser.close()
    assert not problems, problems
