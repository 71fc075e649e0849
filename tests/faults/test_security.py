"""Security: nobody in.

* The table's contents never choose code: a job type resolves only to a handler registered
  with ``@job``, never to an import, an attribute lookup or an eval (proved at run time with a
  canary module, and by reading the source for every dynamic-code call there is).
* The dashboard: basic auth on every route and method, CSRF on every state-changing request,
  escaping of what it echoes, SQL only with bound parameters (hostile filters return nothing
  and break nothing), and a Host check against DNS rebinding when it has no auth.
* Secrets (the DSN's password, the dashboard's password) appear in no log line, no error, no
  page and no last_error, even when a handler or libpq quotes them.
* Files: the embedded Postgres listens on a socket only and keeps its files private, and the
  files the runtime creates stay private or at least not writable by others, even under umask 000.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psutil
import pytest
import yaml

from conftest import JOBSUPERVISOR, REPO, cli_env, job_row, run_cli, wait_for
from faults.scenario import config_for, serve_one, wait_status

from supervisor import enqueue

pytestmark = pytest.mark.timeout(90)

CANARY_TYPES = [
    "faults.canary", "faults.canary:run", "faults.canary.run", "faults/canary.py", "os:system",
    "os.system", "builtins.eval", "eval", "__import__('faults.canary')", "subprocess:call",
    "supervisor.cli:main", "importlib.import_module", "faults.handlers:record_outside", "record_outside",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- job types are names, never code ----------------------------------------------------------------
def test_job_types_resolve_only_to_registered_handlers_never_to_imports_or_eval(db, make_config,
                                                                             start_supervisor, tmp_path):
    """Jobs whose type names a module, a function or an expression sit in the table (inserted
    by plain SQL, as anyone with INSERT rights can): the supervisor never claims them, no child
    imports or calls anything for them, and they stay queued and visible as unhandled."""
    marker = tmp_path / "canary"
    ids = [db.execute("INSERT INTO jobs (job_type, payload) VALUES (%s, %s) RETURNING id",
                      (job_type, json.dumps({"path": str(marker)}))).fetchone()[0] for job_type in CANARY_TYPES]
    config = config_for(make_config, {"poll_interval": "0.2s"})
    sup = start_supervisor(config, env=cli_env(FAULTS_CANARY=str(marker)))
    serve_one(db, sup)
    time.sleep(1.5)  # several polls and claims
    rows = {r[0]: r[1:] for r in db.execute("SELECT id, status, attempts FROM jobs WHERE id = ANY(%s::bigint[])", (ids,))}
    assert set(rows.values()) == {("queued", 0)}, rows
    assert not marker.exists(), marker.read_text()
    status = json.loads(run_cli("-c", str(config), "status", "--json").stdout)
    assert sorted(status["unhandled_types"]) == sorted(CANARY_TYPES)
    # The command line and the dashboard's enqueue take the name as data too.
    out = run_cli("-c", str(config), "enqueue", "faults.canary:run", "{}", env=cli_env(FAULTS_CANARY=str(marker)))
    assert out.returncode == 0 and not marker.exists()
    assert not [e for e in sup.events() if e.get("event") == "job_started" and e.get("job_id") in ids]


def _calls(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(dotted name of the called function, enclosing function, line) for dynamic-code calls."""
    dangerous = {"eval", "exec", "compile", "__import__", "importlib.import_module", "import_module",
                 "pickle.loads", "pickle.load", "marshal.loads", "yaml.load", "yaml.unsafe_load",
                 "yaml.full_load", "os.system", "os.popen", "getattr", "runpy.run_module", "runpy.run_path"}
    found = []

    def name_of(node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{name_of(node.value)}.{node.attr}"
        return "?"

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call):
                name = name_of(child.func)
                if name in dangerous:
                    if name == "getattr" and (len(child.args) < 2 or isinstance(child.args[1], ast.Constant)):
                        pass  # getattr(obj, "literal"): not a lookup driven by data
                    else:
                        found.append((name, where, child.lineno))
                for kw in child.keywords:
                    if kw.arg == "shell" and isinstance(kw.value, ast.Constant) and kw.value.value:
                        found.append((f"{name}(shell=True)", where, child.lineno))
            visit(child, where)

    visit(tree, "<module>")
    return found


# Every place the runtime turns data into code, and where that data comes from. A new one must
# be reviewed and added here with its reason.
ALLOWED_DYNAMIC_CODE = {
    ("supervisor/registry.py", "importlib.import_module", "import_handlers"): "config 'imports' (the operator's file)",
    ("supervisor/gates/python.py", "importlib.import_module", "*"): "config 'gate.python' (the operator's file)",
    ("supervisor/gates/python.py", "getattr", "*"): "the function named in 'gate.python'",
    ("supervisor/children/worker.py", "pickle.loads", "boot"): "the config, sent by the parent over a private socketpair",
    ("supervisor/config.py", "yaml.load", "_parse_yaml"): "the config file, with a SafeLoader subclass (checked below)",
    ("supervisor/admin.py", "getattr", "act"): "a query name from the module's own table, keyed by a checked action",
    ("supervisor/registry.py", "getattr", "to_dict"): "dataclass field names",
    ("supervisor/registry.py", "getattr", "options_for"): "dataclass field names",
    ("supervisor/logs.py", "getattr", "emit_many"): "a log level the supervisor's own code passes, checked against the level names first",
}


def test_no_code_is_chosen_by_the_tables_contents():
    """Read the source: every eval/exec/import/unpickle/shell call in the runtime is one of
    the reviewed ones, all fed by the operator's config or the parent process, never by a row."""
    found = {}
    for path in sorted((REPO / "supervisor").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for name, where, line in _calls(ast.parse(path.read_text(), rel)):
            key = (rel, name, where)
            allowed = key in ALLOWED_DYNAMIC_CODE or (rel, name, "*") in ALLOWED_DYNAMIC_CODE
            if not allowed:
                found[f"{rel}:{line} {name}() in {where}()"] = "not reviewed"
    assert not found, "dynamic code the table's contents might reach; review and allow it:\n" + "\n".join(found)
    # The worker looks handlers up in the registry by name, and only there.
    worker = (REPO / "supervisor/children/worker.py").read_text()
    assert "get_handler(job_type)" in worker
    # The config's YAML loader builds plain data only (no !!python/object tags).
    import yaml as pyyaml

    from supervisor import config as config_module
    assert issubclass(config_module._YamlLoader, pyyaml.SafeLoader)


# --- the dashboard ----------------------------------------------------------------------------------
def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def concrete_urls(app, job_id: int) -> list[tuple[str, set[str]]]:
    """Every route of the app with its parameters filled in, and its methods."""
    out = []
    for rule in app.url_map.iter_rules():
        url = rule.rule.replace("<int:job_id>", str(job_id)).replace("<action>", "retry")
        url = re.sub(r"<(?:path:)?filename>", "dashboard.css", url)
        url = re.sub(r"<[^>]+>", "x", url)
        out.append((url, set(rule.methods) - {"HEAD", "OPTIONS"}))
    return out


@pytest.fixture
def dashboard(make_config, dsn):
    from supervisor.config import load_config
    from supervisor.web import create_app

    def make(extra: dict | None = None, env: dict | None = None):
        path = config_for(make_config, extra or {})
        config = load_config(str(path), env=env) if env is not None else load_config(str(path))
        return create_app(config, dsn)
    return make


def test_dashboard_auth_guards_every_route_and_every_method(dashboard, db):
    job_id = db.execute("INSERT INTO jobs (job_type, status, finished_at, last_error) VALUES"
                        " ('quick', 'failed', now(), 'x') RETURNING id").fetchone()[0]
    app = dashboard({"web": {"auth": {"basic": {"user": "ops", "password": "${DASH_PW}"}}}},
                    env={**os.environ, "DASH_PW": "pässwörd-Ω"})
    client = app.test_client()
    wrong = [{}, basic("ops", "pässwörd-X"), basic("ops", ""), basic("", "pässwörd-Ω"), basic("OPS", "pässwörd-Ω"),
             basic("ops", "pässwörd-Ω\x00"), {"Authorization": "Basic !!!not-base64"},
             {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
             {"Authorization": "Digest username=ops"}, {"Authorization": "Basic"}]
    checked = 0
    for url, methods in concrete_urls(app, job_id):
        for method in sorted(methods | {"GET", "POST", "PUT", "DELETE", "PATCH"}):
            for headers in wrong:
                response = client.open(url, method=method, headers=headers, data={"action": "delete", "ids": job_id})
                assert response.status_code == 401, (method, url, headers, response.status_code)
                assert "pässwörd" not in response.get_data(as_text=True)
                checked += 1
    assert checked > 300
    assert job_row(db, job_id)["status"] == "failed" and db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    good = basic("ops", "pässwörd-Ω")
    assert client.get("/jobs", headers=good).status_code == 200


def test_dashboard_csrf_guards_every_state_changing_request(dashboard, db):
    job_id = db.execute("INSERT INTO jobs (job_type, status, finished_at, last_error) VALUES"
                        " ('quick', 'failed', now(), 'x') RETURNING id").fetchone()[0]
    app = dashboard()
    client = app.test_client()
    page = client.get("/jobs").get_data(as_text=True)  # the session now has a token
    real = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    cookie = client.get_cookie("jobsupervisor_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    for url, _ in concrete_urls(app, job_id):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for form in ({}, {"csrf_token": ""}, {"csrf_token": real[:-1]}, {"csrf_token": real + "x"},
                         {"csrf_token": real.upper() if real.upper() != real else real.lower()}):
                response = client.open(url, method=method, data=dict(form, action="delete", scope="matching",
                                                                     ids=job_id, job_type="quick"))
                assert response.status_code in (403, 405), (method, url, form, response.status_code)
    assert job_row(db, job_id)["status"] == "failed" and db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    # A request forged from another site carries the cookie but cannot read the token.
    forged = client.post(f"/jobs/{job_id}/delete", headers={"Origin": "https://evil.example",
                                                            "Referer": "https://evil.example/"})
    assert forged.status_code == 403
    assert client.post(f"/jobs/{job_id}/retry", data={"csrf_token": real}).status_code == 303
    assert job_row(db, job_id)["status"] == "queued"


def test_dashboard_without_auth_refuses_foreign_host_names(dashboard, db):
    """DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and is then
    same-origin with a dashboard that has no auth (the README's advice is to keep such a one on
    127.0.0.1): it can read a form's CSRF token and act. Only a Host check stops that. A
    dashboard without auth must answer only to IP addresses and localhost names."""
    app = dashboard()
    client = app.test_client()
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    refused = {host: client.get("/jobs", headers={"Host": host}).status_code
               for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example")}
    assert all(code in (400, 403, 421) for code in refused.values()), \
        f"a dashboard without auth answered foreign Host names: {refused}"


HOSTILE_FILTERS = ["' OR '1'='1", "1; DROP TABLE jobs; --", "quick' --", "\\", "%", "_", "%' OR 1=1 --",
                   "$$; DROP TABLE jobs; $$", "\u202e", "a" * 5000, "é\u0301", "); SELECT pg_sleep(5); --"]


def test_dashboard_filters_are_bound_parameters_and_match_nothing_they_should_not(dashboard, db):
    ids = [enqueue(db, "quick", {"text": text}) for text in ("plain", "100% sure", "under_score", "back\\slash")]
    app = dashboard()
    client = app.test_client()
    for value in HOSTILE_FILTERS:
        for param in ("type", "queue", "runner", "status", "q", "since", "from", "to", "order", "limit", "before",
                      "after", "window"):
            for url in ("/jobs", "/api/jobs", "/"):
                started = time.monotonic()
                response = client.get(f"{url}?{param}={quote(value)}")
                assert response.status_code in (200, 400), (url, param, value, response.status_code)
                assert time.monotonic() - started < 3, (url, param, value)
                if url == "/api/jobs" and response.status_code == 200 and param in ("type", "queue", "runner"):
                    assert response.json["jobs"] == [], (param, value)
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == len(ids)
    # Search takes % and _ literally.
    found = {q: sorted(j["id"] for j in client.get(f"/api/jobs?q={quote(q)}").json["jobs"])
             for q in ("%", "_", "\\")}
    assert found == {"%": [ids[1]], "_": [ids[2]], "\\": [ids[3]]}, found


def test_dashboard_filters_with_a_nul_byte_are_refused_not_a_server_error(dashboard, db):
    enqueue(db, "quick")
    client = dashboard().test_client()
    codes = {param: client.get(f"/api/jobs?{param}=a%00b").status_code for param in ("type", "queue", "q", "runner")}
    assert set(codes.values()) <= {200, 400}, codes


def test_dashboard_escapes_what_it_echoes_on_error_pages(dashboard):
    client = dashboard().test_client()
    marker = "<script>alert(1)</script>"
    for url in (f"/{quote(marker)}", f"/jobs/{quote(marker)}", f"/jobs?limit={quote(marker)}",
                f"/jobs?since={quote(marker)}", f"/static/{quote(marker)}"):
        response = client.get(url)
        assert marker not in response.get_data(as_text=True), url
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# --- secrets ------------------------------------------------------------------------------------------
def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "root"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}:{quote(password, safe='')}@{host}", parts.path, parts.query, ""))


DB_PASSWORD = "Sw0rdfish-4ever"  # the test server trusts local connections: any password works
WEB_PASSWORD = "W3b-Pa55-Xyzzy"


def test_secrets_never_reach_logs_errors_pages_or_rows(db, dsn, make_config, start_supervisor, tmp_path):
    secret_dsn = with_password(dsn, DB_PASSWORD)
    port = free_port()
    config = config_for(make_config, {"database": {"dsn": "${SECRET_DSN}"},
                                      "web": {"listen": f"127.0.0.1:{port}",
                                              "auth": {"basic": {"user": "ops", "password": "${WEB_PW}"}}}})
    env = cli_env(SECRET_DSN=secret_dsn, WEB_PW=WEB_PASSWORD, FAULTS_SECRET_DSN=secret_dsn)
    sup = start_supervisor(config, env=env)
    serve_one(db, sup)
    leaked = enqueue(db, "leak")
    wait_status(db, leaked, "failed")
    sup.wait_event("job_failed", job_id=leaked)
    # The connections are cut once: reconnect messages quote errors too.
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
               " AND pid <> pg_backend_pid()")
    sup.wait_event("db_reconnected", connection="main", timeout=15)
    # The dashboard, asked with the right and the wrong password.
    wait_for(lambda: sup.find("web_started") or sup.find("web_child_started"), 15, message="dashboard up")
    pages = []
    import urllib.request
    for auth in ((f"ops:{WEB_PASSWORD}"), "ops:wrong"):
        for path in ("/", "/runners", "/api/status", "/api/runners", f"/jobs/{leaked}", f"/api/jobs/{leaked}"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={
                "Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    pages.append(response.read().decode("utf-8", "replace"))
            except urllib.error.HTTPError as error:
                pages.append(error.read().decode("utf-8", "replace"))
            except OSError:
                pass
    assert pages
    outputs = {
        "config": run_cli("-c", str(config), "config", env=env),
        "status": run_cli("-c", str(config), "status", env=env),
        "show": run_cli("-c", str(config), "show", str(leaked), env=env),
    }
    sup.signal(15)
    sup.wait_exit(30)
    texts = {"supervisor log": sup.log_path.read_text(errors="replace"),
             "last_error": job_row(db, leaked)["last_error"],
             "dashboard pages": "\n".join(pages),
             **{f"{k} output": v.stdout + v.stderr for k, v in outputs.items()}}
    assert "could not connect to" in texts["supervisor log"] and "connecting to" in texts["supervisor log"]
    leaks = {where: [s for s in (DB_PASSWORD, WEB_PASSWORD) if s in text] for where, text in texts.items()}
    assert not any(leaks.values()), {k: v for k, v in leaks.items() if v}


@pytest.mark.parametrize("dsn_text", [
    f"postgresql://root:{DB_PASSWORD}@127.0.0.1:1/nowhere",
    f"postgresql://root:{DB_PASSWORD}@127.0.0.1:notaport/db",
    f"postgresql://root:{DB_PASSWORD}@[bad/db",
    f"postgresql://root:{DB_PASSWORD}%zz@127.0.0.1/db",
    f"postgresql://root@127.0.0.1:1/db?password={DB_PASSWORD}&sslmode=bogus",
    f"host=127.0.0.1 port=1 password={DB_PASSWORD} dbname=db",
    f"host=127.0.0.1 password='{DB_PASSWORD} x' port=1",
    f"host=127.0.0.1 password={DB_PASSWORD} bogus_option=1",
    f"host=127.0.0.1 password={DB_PASSWORD} port",
])
def test_connection_errors_never_show_the_password(tmp_path, dsn_text):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"dsn": dsn_text}, "imports": ["jobhandlers"]}))
    for args in (["status"], ["migrate"], ["enqueue", "quick", "{}"], ["config"]):
        out = run_cli("-c", str(path), *args, timeout=30)
        text = out.stdout + out.stderr
        assert DB_PASSWORD not in text and quote(DB_PASSWORD) not in text, (args, text)
        if args != ["config"]:
            assert out.returncode in (1, 2) and "Traceback" not in text, (args, text)


# --- files --------------------------------------------------------------------------------------------
def private(path: Path) -> bool:
    return stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0


@pytest.fixture
def open_dir():
    """A directory the embedded server's own account can reach (as root it runs as another
    user, and pytest's tmp_path sits in a 0700 directory)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="jsfaults-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_embedded_postgres_under_umask_000_listens_on_a_socket_only_and_keeps_its_files_private(open_dir):
    base = open_dir / "app"
    base.mkdir()
    os.chmod(base, 0o711)
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"embedded_dir": "state/pgdata"}, "imports": ["jobhandlers"],
                                      "children": {"min": 1, "max": 1}, "poll_interval": "1s"}))
    env = cli_env()
    env.pop("JOBSUPERVISOR_DSN", None)
    log = open_dir / "supervisor.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", "-c", "umask 000 && exec \"$@\"", "sh", *JOBSUPERVISOR, "-c", str(config)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        data = base / "state" / "pgdata"
        wait_for(lambda: b"supervisor_started" in log.read_bytes(), 60,
                 message=f"the supervisor started on the embedded server: {log.read_text(errors='replace')[-2000:]}")
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        # Socket only: no TCP listener anywhere in the server's process tree.
        server = psutil.Process(postmaster)
        for p in [server, *server.children(recursive=True)]:
            try:
                assert p.net_connections(kind="inet") == [], p
            except (psutil.NoSuchProcess, FileNotFoundError):
                pass  # a backend that just ended
        sockets = list(data.glob(".s.PGSQL.*")) or list(Path("/tmp").glob("jobsupervisor-*/.s.PGSQL.*"))
        assert sockets and all(private(s.parent) for s in sockets), sockets
        # Private files: the data directory and everything in it, the lock files.
        not_private = [str(p) for p in [data, *data.rglob("*")] if not private(p) and not p.is_socket()]
        assert not not_private, not_private
        locks = [p for p in base.rglob("*.lock")]
        assert locks and all(private(p) for p in locks), [(str(p), oct(p.stat().st_mode)) for p in locks]
        # Nothing the runtime created may be written by others, whatever the umask.
        writable = [str(p) for p in base.rglob("*") if not p.is_socket() and p.lstat().st_mode & 0o022]
        assert not writable, f"group/other-writable under umask 000: {writable}"
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)


def test_pidfile_and_the_directories_made_for_it_are_not_writable_by_others_under_umask_000(
        make_config, start_supervisor, open_dir):
    """A pidfile others can write lets them aim ``jobsupervisor stop`` (often run as root) at
    another process; a directory others can write lets them swap the files in it."""
    pidfile = open_dir / "run" / "sub" / "jobsupervisor.pid"
    old = os.umask(0)
    try:
        sup = start_supervisor(config_for(make_config, {"pidfile": str(pidfile)}))
    finally:
        os.umask(old)
    wait_for(pidfile.exists, 20, message="the pidfile")
    assert int(pidfile.read_text()) == sup.pid
    made = [pidfile, pidfile.parent, pidfile.parent.parent, Path(str(pidfile) + ".lock")]
    writable = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in made if p.stat().st_mode & 0o022}
    assert not writable, f"writable by group/others: {writable}"
