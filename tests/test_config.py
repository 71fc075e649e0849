"""Configuration loading and validation (pure: no database, no os.environ mutation)."""

import dataclasses
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from supervisor.config import (
    JOB_TYPE_DEFAULTS,
    SETTINGS,
    BasicAuth,
    ChildrenConfig,
    Config,
    DatabaseConfig,
    GateConfig,
    JobTypeConfig,
    LoggingConfig,
    QueueConfig,
    RetentionConfig,
    ScheduleConfig,
    WebConfig,
    config_from_dict,
    declared_keys,
    defaults_yaml,
    load_config,
)
from supervisor.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.example.yaml"
MiB = 1024**2


def load(data, env=None, **kwargs):
    return config_from_dict(data, source="config.yaml", env={} if env is None else env, **kwargs)


def error_of(data, env=None, **kwargs) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load(data, env=env, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message
    assert excinfo.value.exit_code == 2
    return message


def write(tmp_path, text, name="config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- errors module ---------------------------------------------------------------------------


def test_user_error_is_one_line_with_exit_code():
    err = UserError("first\nsecond")
    assert str(err) == "first second"
    assert err.exit_code == 2
    assert UserError("x", exit_code=1).exit_code == 1
    assert isinstance(ConfigError("x"), UserError)
    assert ConfigError("x").exit_code == 2


# --- defaults --------------------------------------------------------------------------------


def test_defaults(tmp_path):
    config = load({}, base_dir=str(tmp_path))
    assert config.path is None
    assert config.base_dir == str(tmp_path)
    assert config.database == DatabaseConfig(
        dsn=None, table="jobs", embedded_dir=str(tmp_path / ".jobsupervisor" / "pgdata"),
        auto_migrate=True)
    assert config.imports == ()
    assert config.queues is None
    assert config.children == ChildrenConfig(min=1, max=16, max_jobs=0, idle_timeout=60.0,
                                             max_memory=None, kill_grace=5.0)
    assert config.gate == GateConfig(kind="static", python=None, cpu_percent_max=85.0,
                                     memory_available_min=256 * MiB, loadavg_per_core_max=2.0)
    assert config.jobs == {}
    assert (config.poll_interval, config.lock_timeout) == (5.0, 600.0)
    assert (config.heartbeat_interval, config.shutdown_timeout) == (5.0, 60.0)
    assert config.retention == RetentionConfig(succeeded=7 * 86400.0, failed=30 * 86400.0)
    assert config.schedules == ()
    assert config.logging == LoggingConfig(format="json", level="info", syslog_address=None)
    assert config.web == WebConfig(listen=None, auth=None, read_only=False)
    assert config.pidfile is None


def test_dataclass_defaults_match_loaded_defaults():
    loaded = load({})
    built = Config()
    assert dataclasses.replace(built, database=loaded.database, base_dir=loaded.base_dir) == loaded
    assert ChildrenConfig() == loaded.children
    assert GateConfig() == loaded.gate
    assert RetentionConfig() == loaded.retention


def test_every_dataclass_field_is_declared_once():
    keys = set(declared_keys())
    assert len(keys) == len(SETTINGS)
    sections = {"database": DatabaseConfig, "children": ChildrenConfig, "gate": GateConfig,
                "retention": RetentionConfig, "logging": LoggingConfig, "web": WebConfig,
                "jobs.*": JobTypeConfig, "schedules[]": ScheduleConfig}
    for prefix, cls in sections.items():
        for f in dataclasses.fields(cls):
            assert f"{prefix}.{f.name}" in keys
    assert set(JOB_TYPE_DEFAULTS) == {f.name for f in dataclasses.fields(JobTypeConfig)}
    for f in dataclasses.fields(Config):
        if f.name in ("path", "base_dir") or f.name in sections:
            continue
        if f.name in ("jobs", "schedules"):
            continue
        assert f.name in keys


def test_config_is_frozen():
    config = load({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.poll_interval = 1  # type: ignore[misc]


def test_null_and_empty_sections_take_defaults():
    config = load({"database": None, "children": None, "jobs": None, "schedules": None,
                   "poll_interval": None})
    assert config == load({})


# --- a full valid config ---------------------------------------------------------------------


def test_full_config(tmp_path):
    path = write(tmp_path, """\
        database:
          dsn: postgresql://app:pw@db.example.com/app
          table: my_jobs
          embedded_dir: data/pg
          auto_migrate: false
        imports: [myapp.jobs, myapp.more_jobs]
        queues:
          default: {concurrency: 4}
          emails: null
        children: {min: 0, max: 8, max_jobs: 100, idle_timeout: 2m, max_memory: 512MB,
                   kill_grace: 1.5s}
        gate: {kind: load, python: "myapp.gates:may_claim", cpu_percent_max: 90,
               memory_available_min: 1GiB, loadavg_per_core_max: 1.5}
        jobs:
          send_email:
            max_attempts: 3
            timeout: 60s
            max_concurrency: 4
            global_concurrency: 10
            priority: -1
            queue: emails
            backoff: exponential
            backoff_delay: 5s
            backoff_max: 1h
            backoff_jitter: true
          cleanup:
        poll_interval: 1
        lock_timeout: 15m
        heartbeat_interval: 2s
        shutdown_timeout: 0
        retention: {succeeded: 1d, failed: keep}
        schedules:
          - name: nightly
            cron: "0 3 * * *"
            job: send_report
            payload: {kind: daily, n: [1, 2]}
            queue: reports
            priority: 5
            timezone: Europe/Paris
            catch_up: none
          - {name: every-minute, cron: "*/1 * * * * *", job: tick}
        logging: {format: console, level: WARN, syslog_address: "localhost:514"}
        web:
          listen: 127.0.0.1:8080
          auth: {basic: {user: admin, password: hunter2}}
          read_only: yes
        pidfile: run/js.pid
        """)
    config = load_config(str(path), env={})
    assert config.path == str(path)
    assert config.base_dir == str(tmp_path)
    assert config.database == DatabaseConfig("postgresql://app:pw@db.example.com/app", "my_jobs",
                                             str(tmp_path / "data" / "pg"), False)
    assert config.imports == ("myapp.jobs", "myapp.more_jobs")
    assert config.queues == {"default": QueueConfig(4), "emails": QueueConfig(None)}
    assert config.children == ChildrenConfig(0, 8, 100, 120.0, 512 * MiB, 1.5)
    assert config.gate == GateConfig("load", "myapp.gates:may_claim", 90.0, 1024 * MiB, 1.5)
    assert config.jobs["send_email"] == JobTypeConfig(3, 60.0, 4, 10, -1, "emails",
                                                      "exponential", 5.0, 3600.0, True)
    assert config.jobs["cleanup"] == JobTypeConfig()
    assert config.job("cleanup").overrides() == {}
    assert config.job("unknown") == JobTypeConfig()
    assert config.job("send_email").overrides()["timeout"] == 60.0
    assert (config.poll_interval, config.lock_timeout) == (1.0, 900.0)
    assert (config.heartbeat_interval, config.shutdown_timeout) == (2.0, 0.0)
    assert config.retention == RetentionConfig(86400.0, None)
    assert config.schedules == (
        ScheduleConfig("nightly", "0 3 * * *", "send_report", {"kind": "daily", "n": [1, 2]},
                       "reports", 5, "Europe/Paris", "none"),
        ScheduleConfig("every-minute", "*/1 * * * * *", "tick"),
    )
    assert config.schedules[1].timezone == "UTC" and config.schedules[1].catch_up == "latest"
    assert config.logging == LoggingConfig("console", "warning", "localhost:514")
    assert config.web == WebConfig("127.0.0.1:8080", BasicAuth("admin", "hunter2"), True)
    assert config.web.address == ("127.0.0.1", 8080)
    assert config.pidfile == str(tmp_path / "run" / "js.pid")
    assert config.serves_queue("emails") and not config.serves_queue("other")


def test_repr_and_as_dict_hide_secrets():
    config = load({"database": {"dsn": "postgresql://app:s3cret@h/db"},
                   "web": {"auth": {"basic": {"user": "a", "password": "s3cret"}}}})
    assert "s3cret" not in repr(config.web)
    data = config.as_dict()
    assert "s3cret" not in repr(data)
    assert data["database"]["dsn"] == "postgresql://app:***@h/db"
    assert config.database.dsn_masked == "postgresql://app:***@h/db"


# --- unknown keys ----------------------------------------------------------------------------


def test_unknown_top_level_key_suggests():
    assert error_of({"poll_intervall": "5s"}) == (
        "config.yaml: unknown key 'poll_intervall' (did you mean 'poll_interval'?)")


def test_unknown_nested_key_suggests():
    assert error_of({"children": {"mx": 3}}) == (
        "config.yaml: unknown key 'children.mx' (did you mean 'children.max'?)")
    assert "did you mean 'jobs.hello.timeout'?" in error_of({"jobs": {"hello": {"timout": 1}}})
    assert "did you mean 'schedules[0].cron'?" in error_of(
        {"schedules": [{"name": "a", "crom": "* * * * *", "job": "x"}]})


def test_unknown_key_from_another_section_suggests_its_place():
    assert "did you mean 'database.dsn'?" in error_of({"dsn": "dbname=x"})


def test_unknown_key_without_suggestion_lists_keys():
    message = error_of({"web": {"zzz": 1}})
    assert message == "config.yaml: unknown key 'web.zzz', expected one of: listen, auth, read_only"


# --- wrong types and bad values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"children": {"max": "ten"}},
         "config.yaml: children.max: expected an integer >= 1, got 'ten'"),
        ({"children": {"max": True}},
         "config.yaml: children.max: expected an integer >= 1, got true"),
        ({"children": {"max": 0}}, "config.yaml: children.max: expected an integer >= 1, got 0"),
        ({"children": {"max": 2.5}}, "children.max: expected an integer >= 1, got 2.5"),
        ({"children": {"min": -1}}, "children.min: expected an integer >= 0, got -1"),
        ({"children": {"max_jobs": "10"}}, "children.max_jobs: expected an integer >= 0, got '10'"),
        ({"children": {"idle_timeout": "soon"}}, "children.idle_timeout: expected a duration"),
        ({"children": {"idle_timeout": True}}, "children.idle_timeout: expected a duration"),
        ({"children": {"max_memory": "lots"}},
         "children.max_memory: expected a size like 512MB"),
        ({"children": {"max_memory": 0}}, "children.max_memory: must be > 0"),
        ({"children": [1, 2]}, "config.yaml: children: expected a mapping with keys min, max"),
        ({"poll_interval": "5 minutes"}, "config.yaml: poll_interval: expected a duration > 0"),
        ({"poll_interval": 0}, "poll_interval: expected a duration > 0"),
        ({"lock_timeout": "-5m"}, "lock_timeout: expected a duration > 0"),
        ({"database": {"auto_migrate": "yes"}},
         "database.auto_migrate: expected true or false, got 'yes'"),
        ({"database": {"auto_migrate": 1}}, "database.auto_migrate: expected true or false, got 1"),
        ({"database": "postgresql://x"}, "config.yaml: database: expected a mapping"),
        ({"imports": "not a module"},
         "config.yaml: imports: expected a module name like myapp.jobs, got 'not a module'"),
        ({"imports": ["a", 1]}, "config.yaml: imports[1]: expected a module name like myapp.jobs, got 1"),
        ({"imports": {"a": 1}}, "imports: expected a list of module names"),
        ({"gate": {"kind": "dynamic"}}, "gate.kind: expected one of static, load, got 'dynamic'"),
        ({"gate": {"python": "mod.func"}},
         "gate.python: expected a function reference like mypackage.gates:may_claim"),
        ({"gate": {"python": "mod:"}}, "gate.python: expected a function reference"),
        ({"gate": {"cpu_percent_max": 0}}, "gate.cpu_percent_max: expected a number between"),
        ({"gate": {"cpu_percent_max": 101}}, "gate.cpu_percent_max: expected a number between"),
        ({"gate": {"loadavg_per_core_max": "high"}},
         "gate.loadavg_per_core_max: expected a number > 0, got 'high'"),
        ({"gate": {"memory_available_min": "1XB"}}, "gate.memory_available_min: expected a size"),
        ({"jobs": {"a": {"backoff": "quadratic"}}},
         "jobs.a.backoff: expected one of linear, exponential, got 'quadratic'"),
        ({"jobs": {"a": {"max_attempts": 0}}}, "jobs.a.max_attempts: expected an integer >= 1"),
        ({"jobs": {"a": {"max_concurrency": 0}}}, "jobs.a.max_concurrency: expected an integer >= 1"),
        ({"jobs": {"a": {"global_concurrency": False}}},
         "jobs.a.global_concurrency: expected an integer >= 1, got false"),
        ({"jobs": {"a": {"timeout": 0}}}, "jobs.a.timeout: expected a duration > 0"),
        ({"jobs": {"a": {"backoff_jitter": "maybe"}}}, "jobs.a.backoff_jitter: expected true or false"),
        ({"jobs": {"a": 5}}, "config.yaml: jobs.a: expected a mapping with keys max_attempts"),
        ({"jobs": ["a"]}, "config.yaml: jobs: expected a mapping of names"),
        ({"jobs": {1: {}}}, "config.yaml: jobs: expected names (strings) as keys, got 1"),
        ({"retention": {"succeeded": "forever"}},
         "retention.succeeded: expected a duration > 0 like 30s, 5m, 1h or a number of seconds, "
         "or 'keep', got 'forever'"),
        ({"retention": "never"}, "config.yaml: retention: expected a mapping"),
        ({"logging": {"format": "xml"}},
         "logging.format: expected one of json, console, syslog, got 'xml'"),
        ({"logging": {"level": "trace"}},
         "logging.level: expected one of debug, info, warning, error, got 'trace'"),
        ({"web": {"listen": "8080"}}, "web.listen: expected host:port like 127.0.0.1:8080"),
        ({"web": {"listen": 8080}}, "web.listen: expected host:port"),
        ({"web": {"listen": "localhost:99999"}}, "web.listen: expected host:port"),
        ({"web": {"auth": "basic"}}, "web.auth: expected 'none' or {basic:"),
        ({"web": {"auth": {"basic": {"user": "a"}}}},
         "config.yaml: web.auth.basic.password: expected a non-empty string"),
        ({"web": {"auth": {"basic": {"user": "a", "password": "p", "x": 1}}}},
         "config.yaml: web.auth.basic: unknown key 'x', expected user, password"),
        ({"web": {"read_only": "no"}}, "web.read_only: expected true or false"),
        ({"queues": []}, "queues: the list is empty"),
        ({"queues": ["a", "a"]},
         "config.yaml: queues[1]: queue 'a' is listed twice, expected each queue once"),
        ({"queues": ["a", 3]}, "config.yaml: queues[1]: expected queue names (non-empty strings)"),
        ({"queues": {"a": {"concurrency": 0}}},
         "config.yaml: queues.a.concurrency: expected an integer >= 1, got 0"),
        ({"queues": {"a": {"limit": 2}}},
         "config.yaml: queues.a: unknown key 'limit', expected concurrency"),
        ({"queues": {"a": 3}}, "config.yaml: queues.a: expected {concurrency: N} or null, got 3"),
        ({"queues": 5}, "queues: expected 'all', a list of queue names"),
        ({"database": {"dsn": 5}}, "database.dsn: expected a postgresql:// URI"),
        ({"database": {"dsn": "mysql://u:pw@h/db"}},
         "database.dsn: unsupported scheme 'mysql', expected a postgresql:// URI"),
        ({"pidfile": 3}, "pidfile: expected a file system path"),
    ],
)
def test_bad_values(data, expected):
    message = error_of(data)
    assert expected in message
    assert message.startswith("config.yaml: ")


def test_error_about_dsn_never_shows_password():
    message = error_of({"database": {"dsn": "mysql://user:topsecret@h/db"}})
    assert "topsecret" not in message
    assert "mysql://user:***@h/db" in message
    message = error_of({"database": {"dsn": "topsecret"}})
    assert message.startswith("config.yaml: database.dsn: not a connection string, expected")
    assert "topsecret" not in message


def test_error_about_auth_never_shows_password():
    message = error_of({"web": {"auth": {"basic": {"user": "", "password": "topsecret"}}}})
    assert "topsecret" not in message
    message = error_of({"web": {"auth": {"basic": {"password": "topsecret", "user": "a:b"}}}})
    assert "topsecret" not in message


def test_numeric_password_is_accepted_as_text():
    config = load({"web": {"auth": {"basic": {"user": "a", "password": 1234}}}})
    assert config.web.auth == BasicAuth("a", "1234")


# --- cross-field checks ----------------------------------------------------------------------


def test_children_min_above_max():
    assert error_of({"children": {"min": 8, "max": 4}}) == (
        "config.yaml: children.min: expected at most children.max (4), got 8")


def test_min_equal_max_is_fine():
    assert load({"children": {"min": 4, "max": 4}}).children.min == 4


# --- database ---------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["jobs", "my_jobs", "_j2", "a" * 41])
def test_valid_table_names(table):
    assert load({"database": {"table": table}}).database.table == table


@pytest.mark.parametrize("table", ["Jobs", "2jobs", "my-jobs", "jobs; drop", "", "a" * 42, 5,
                                   "public.jobs"])
def test_invalid_table_names(table):
    assert "database.table: expected a lower-case SQL identifier" in error_of(
        {"database": {"table": table}})


def test_dsn_from_environment_when_not_in_file():
    env = {"JOBSUPERVISOR_DSN": "postgresql://u@h/db"}
    assert load({}, env=env).database.dsn == "postgresql://u@h/db"
    assert load({"database": {"dsn": None}}, env=env).database.dsn == "postgresql://u@h/db"


def test_dsn_in_file_wins_over_environment():
    env = {"JOBSUPERVISOR_DSN": "postgresql://u@h/db"}
    assert load({"database": {"dsn": "dbname=other"}}, env=env).database.dsn == "dbname=other"


def test_empty_dsn_env_means_embedded():
    config = load({}, env={"JOBSUPERVISOR_DSN": ""})
    assert config.database.dsn is None
    assert config.database.uses_embedded


def test_dsn_embedded_keyword_forces_embedded():
    env = {"JOBSUPERVISOR_DSN": "postgresql://u@h/db"}
    assert load({"database": {"dsn": "embedded"}}, env=env).database.dsn is None


def test_dsn_key_value_form():
    dsn = "host=localhost dbname=app user=app password=x"
    assert load({"database": {"dsn": dsn}}).database.dsn == dsn


# --- environment variable expansion ------------------------------------------------------------


def test_env_expansion():
    env = {"PGPASS": "s3cret", "HOST": "db", "CHILDREN": "6", "MIGRATE": "false"}
    config = load({
        "database": {"dsn": "postgresql://app:${PGPASS}@${HOST}/app", "auto_migrate": "${MIGRATE}"},
        "children": {"max": "${CHILDREN}", "min": "${MIN_CHILDREN:-2}"},
        "poll_interval": "${POLL:-10s}",
        "web": {"auth": {"basic": {"user": "admin", "password": "${PGPASS}"}}},
        "imports": ["${APP:-myapp}.jobs"],
    }, env=env)
    assert config.database.dsn == "postgresql://app:s3cret@db/app"
    assert type(config.database.dsn) is str
    assert config.database.auto_migrate is False
    assert config.children.max == 6 and config.children.min == 2
    assert config.poll_interval == 10.0
    assert config.web.auth.password == "s3cret"
    assert config.imports == ("myapp.jobs",)


def test_env_expansion_default_forms():
    env = {"EMPTY": ""}
    assert load({"logging": {"level": "${EMPTY:-debug}"}}, env=env).logging.level == "debug"
    # ${VAR-default} only replaces an unset variable; an empty value then means "not set"
    assert load({"logging": {"level": "${EMPTY-debug}"}}, env=env).logging.level == "info"
    assert load({"logging": {"level": "${UNSET-debug}"}}, env=env).logging.level == "debug"


def test_env_expansion_empty_value_takes_default():
    config = load({"jobs": {"a": {"timeout": "${JOB_TIMEOUT:-}"}}})
    assert config.jobs["a"].timeout is None


def test_env_expansion_literal_dollar():
    config = load({"web": {"auth": {"basic": {"user": "a", "password": "pa$${x}$y"}}}})
    assert config.web.auth.password == "pa${x}$y"


def test_env_expansion_in_schedule_payload():
    config = load({"schedules": [{"name": "n", "cron": "* * * * *", "job": "j",
                                  "payload": {"to": "${MAILTO}", "list": ["${MAILTO}"]}}]},
                  env={"MAILTO": "ops@example.com"})
    assert config.schedules[0].payload == {"to": "ops@example.com", "list": ["ops@example.com"]}


def test_missing_env_var_names_key_and_variable():
    message = error_of({"database": {"dsn": "postgresql://app:${PGPASS}@h/app"}})
    assert message.startswith("config.yaml: database.dsn: environment variable 'PGPASS' is not set")
    assert "${PGPASS:-value}" in message


def test_missing_env_var_in_list_names_index():
    assert error_of({"imports": ["ok", "${MOD}"]}).startswith(
        "config.yaml: imports[1]: environment variable 'MOD' is not set")


@pytest.mark.parametrize("text", ["${", "${1A}", "a${B C}"])
def test_bad_variable_reference(text):
    assert "expected ${VAR} or ${VAR:-default}" in error_of({"logging": {"level": text}})


def test_literal_strings_are_not_numbers():
    # only values coming from ${VAR} may spell numbers and booleans as text
    assert "expected an integer" in error_of({"children": {"max": "4"}})
    assert load({"children": {"max": "${N}"}}, env={"N": "4"}).children.max == 4
    assert "got 'four'" in error_of({"children": {"max": "${N}"}}, env={"N": "four"})


# --- queues ------------------------------------------------------------------------------------


def test_queues_forms():
    assert load({"queues": "all"}).queues is None
    assert load({"queues": ["a", "b"]}).queues == {"a": QueueConfig(), "b": QueueConfig()}
    assert load({"queues": "emails"}).queues == {"emails": QueueConfig()}
    assert load({"queues": {"a": {"concurrency": 2}, "b": None, "c": {}}}).queues == {
        "a": QueueConfig(2), "b": QueueConfig(None), "c": QueueConfig(None)}


# --- retention ---------------------------------------------------------------------------------


def test_retention_keep():
    assert load({"retention": "keep"}).retention == RetentionConfig(None, None)
    assert load({"retention": {"failed": "keep"}}).retention == RetentionConfig(7 * 86400.0, None)
    assert load({"retention": {"succeeded": "1h"}}).retention.succeeded == 3600.0


# --- schedules ---------------------------------------------------------------------------------


def schedule(**overrides):
    entry = {"name": "s", "cron": "*/5 * * * *", "job": "hello"}
    entry.update(overrides)
    return entry


@pytest.mark.parametrize("missing", ["name", "cron", "job"])
def test_schedule_required_keys(missing):
    entry = schedule()
    del entry[missing]
    message = error_of({"schedules": [entry]})
    assert message.startswith(f"config.yaml: schedules[0].{missing}: required key is missing")


def test_schedule_names_unique():
    message = error_of({"schedules": [schedule(), schedule(cron="0 * * * *")]})
    assert message == ("config.yaml: schedules[1].name: duplicate schedule name 's' "
                       "(also schedules[0]), expected unique names")


@pytest.mark.parametrize("cron", ["* * * *", "* * * * * * *", "", 5])
def test_schedule_cron_field_count(cron):
    assert "schedules[0].cron: expected a cron expression with 5 or 6 fields" in error_of(
        {"schedules": [schedule(cron=cron)]})


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "", 3])
def test_schedule_bad_timezone(zone):
    assert "schedules[0].timezone:" in error_of({"schedules": [schedule(timezone=zone)]})


def test_schedule_other_errors():
    assert "schedules[0].catch_up: expected one of latest, none" in error_of(
        {"schedules": [schedule(catch_up="all")]})
    assert "schedules[0].payload: expected a mapping" in error_of(
        {"schedules": [schedule(payload=[1])]})
    assert "config.yaml: schedules: expected a list of mappings" in error_of(
        {"schedules": {"name": "x"}})
    assert "config.yaml: schedules[0]: expected a mapping" in error_of({"schedules": ["x"]})


# --- web ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("listen", "address"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    (":8080", ("0.0.0.0", 8080)),
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_web_listen(listen, address):
    web = load({"web": {"listen": listen}}).web
    assert web.listen == listen
    assert web.address == address


@pytest.mark.parametrize("off", ["off", False, None, "none"])
def test_web_listen_off(off):
    assert load({"web": {"listen": off}}).web.listen is None


def test_web_auth_none():
    assert load({"web": {"auth": "none"}}).web.auth is None


# --- files -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as excinfo:
        load_config(str(missing), env={})
    assert str(excinfo.value) == f"config file not found: {missing}"


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path), env={})


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, """\
        children:
          min: 1
          max: [4
        poll_interval: 5s
        """)
    with pytest.raises(ConfigError) as excinfo:
        load_config(str(path), env={})
    message = str(excinfo.value)
    assert message.startswith(f"{path}: line ")
    assert "invalid YAML" in message
    assert "\n" not in message
    line = int(re.search(r"line (\d+)", message).group(1))
    assert line in (3, 4)


def test_invalid_yaml_indentation_line(tmp_path):
    path = write(tmp_path, "children:\n  min: 1\n   max: 4\n")
    with pytest.raises(ConfigError, match=r"line 3, column \d+: invalid YAML"):
        load_config(str(path), env={})


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "children:\n  max: 4\npoll_interval: 1s\nchildren:\n  max: 8\n")
    with pytest.raises(ConfigError, match=r"line 4, column 1: invalid YAML: duplicate key "
                                          r"'children' \(first on line 1\)"):
        load_config(str(path), env={})


def test_yaml_anchors_and_merge_keys_work(tmp_path):
    path = write(tmp_path, """\
        jobs:
          a: &common {max_attempts: 3, timeout: 10s}
          b:
            <<: *common
            timeout: 20s
        """)
    config = load_config(str(path), env={})
    assert config.jobs["b"] == JobTypeConfig(max_attempts=3, timeout=20.0)


def test_top_level_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(str(path), env={})
    assert str(excinfo.value).startswith(f"{path}: expected a mapping of keys")
    assert str(excinfo.value).endswith("got a list")


def test_empty_file_is_defaults(tmp_path):
    path = write(tmp_path, "# nothing here\n")
    config = load_config(str(path), env={})
    assert config.children == ChildrenConfig()
    assert config.path == str(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"poll_interval: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path), env={})


def test_error_names_the_file_as_given(tmp_path, monkeypatch):
    write(tmp_path, "children:\n  max: ten\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        load_config("config.yaml", env={})
    assert str(excinfo.value) == "config.yaml: children.max: expected an integer >= 1, got 'ten'"


def test_relative_paths_resolve_against_config_dir(tmp_path, monkeypatch):
    confdir = tmp_path / "etc"
    confdir.mkdir()
    write(confdir, "database:\n  embedded_dir: pg\npidfile: ../run/js.pid\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/config.yaml", env={})
    assert config.path == str(confdir / "config.yaml")
    assert config.base_dir == str(confdir)
    assert config.database.embedded_dir == str(confdir / "pg")
    assert config.pidfile == str(tmp_path / "run" / "js.pid")


def test_absolute_and_home_paths(tmp_path):
    config = load({"pidfile": "/var/run/js.pid", "database": {"embedded_dir": "~/pg"}},
                  base_dir=str(tmp_path))
    assert config.pidfile == "/var/run/js.pid"
    assert config.database.embedded_dir == os.path.expanduser("~/pg")


def test_no_file_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.path is None
    assert config.base_dir == str(tmp_path)
    assert config.database.embedded_dir == str(tmp_path / ".jobsupervisor" / "pgdata")


def test_config_path_from_environment(tmp_path):
    path = write(tmp_path, "children:\n  max: 3\n")
    config = load_config(None, env={"JOBSUPERVISOR_CONFIG": str(path)})
    assert config.children.max == 3
    assert config.path == str(path)


def test_explicit_path_wins_over_environment(tmp_path):
    path = write(tmp_path, "children:\n  max: 3\n")
    other = write(tmp_path, "children:\n  max: 7\n", name="other.yaml")
    assert load_config(str(path), env={"JOBSUPERVISOR_CONFIG": str(other)}).children.max == 3


def test_config_env_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(None, env={"JOBSUPERVISOR_CONFIG": str(tmp_path / "missing.yaml")})


def test_empty_config_env_means_defaults():
    assert load_config(None, env={"JOBSUPERVISOR_CONFIG": ""}).path is None


def test_dsn_env_with_file(tmp_path):
    path = write(tmp_path, "children:\n  max: 3\n")
    config = load_config(str(path), env={"JOBSUPERVISOR_DSN": "dbname=x"})
    assert config.database.dsn == "dbname=x"


# --- defaults_yaml -----------------------------------------------------------------------------


def test_defaults_yaml_round_trips(tmp_path):
    text = defaults_yaml()
    data = yaml.safe_load(text)
    assert load(data, base_dir=str(tmp_path)) == load({}, base_dir=str(tmp_path))
    env = {"JOBSUPERVISOR_DSN": "dbname=x"}
    assert load(data, env=env).database.dsn == "dbname=x"


def test_defaults_yaml_lists_every_key():
    text = defaults_yaml()
    for key in declared_keys():
        name = key.rsplit(".", 1)[-1]
        assert re.search(rf"^[# ]*-? *{re.escape(name)}:", text, re.M), key
    for setting in SETTINGS:
        assert setting.help.split()[0] in text


def test_defaults_yaml_examples_are_valid():
    """The commented-out jobs/schedules examples load once uncommented."""
    blocks, current = [], None
    for line in defaults_yaml().splitlines():
        if line == "# For example:":
            current = []
            blocks.append(current)
        elif current is not None and line.startswith("#"):
            current.append(line[2:])
        else:
            current = None
    assert len(blocks) == 2
    for block in blocks:
        load(yaml.safe_load("\n".join(block)))


# --- config.example.yaml -----------------------------------------------------------------------


def _flat_keys(data):
    """Key paths in the declared-key form: children.max, jobs.*.timeout, schedules[].cron."""
    sections = {key.split(".")[0] for key in declared_keys() if "." in key}
    for key, value in data.items():
        if key == "jobs":
            for options in (value or {}).values():
                yield from (f"jobs.*.{name}" for name in options or {})
        elif key == "schedules":
            for entry in value or []:
                yield from (f"schedules[].{name}" for name in entry)
        elif key in sections:
            yield from (f"{key}.{name}" for name in value or {})
        else:
            yield key


def _uncomment(text):
    """Enable the optional lines: '#key:' or '#  nested:' (prose comments are '# words')."""
    out = []
    for line in text.splitlines():
        match = re.match(r"^(\s*)#(?! \S)(.*)$", line)
        out.append(match.group(1) + match.group(2) if match and match.group(2).strip() else line)
    return "\n".join(out)


def test_example_config_loads():
    config = load_config(str(EXAMPLE), env={})
    assert config.database.dsn is None
    assert config.database.embedded_dir == str(REPO / ".jobsupervisor" / "pgdata")
    assert config.imports == ("examples.handlers",)
    assert (config.children.min, config.children.max) == (1, 4)
    assert set(config.jobs) <= {"hello", "flaky", "slow", "cpu"}
    assert config.jobs["flaky"].backoff_delay == 1.0
    assert config.logging.format == "json"


def test_example_config_keys_are_declared():
    declared = set(declared_keys())
    for text in (EXAMPLE.read_text(), _uncomment(EXAMPLE.read_text())):
        keys = set(_flat_keys(yaml.safe_load(text)))
        assert keys, "no keys found"
        assert keys <= declared, keys - declared


def test_example_config_optional_lines_load(tmp_path):
    text = _uncomment(EXAMPLE.read_text())
    assert "\n#" not in "\n" + "\n".join(
        line for line in text.splitlines() if re.match(r"^\s*#(?! \S)\S", line))
    env = {"PGPASSWORD": "pw", "DASHBOARD_PASSWORD": "dash"}
    config = load(yaml.safe_load(text), env=env, base_dir=str(tmp_path))
    assert config.database.dsn == "postgresql://app:pw@localhost:5432/app"
    assert config.pidfile is not None
    # Optional blocks for features shipped later (web, schedules) are checked when present.
    if "web:" in text:
        assert config.web.listen is not None and config.web.auth.password == "dash"
    if "schedules:" in text:
        assert config.schedules and config.schedules[0].job in {"hello", "flaky", "slow", "cpu"}
