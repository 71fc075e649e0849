"""The dashboard (SPEC §8): a Flask application over the operator API of :mod:`supervisor.admin`.

Three ways to run it:

* ``web.listen`` in the config: the supervisor starts ``python -m supervisor.web.serve`` as
  one more managed child process;
* ``jobsupervisor web``: the dashboard alone, served by waitress;
* mounted in an existing WSGI application (Flask, Django…) with :func:`wsgi_app`::

      from werkzeug.middleware.dispatcher import DispatcherMiddleware
      from supervisor.web import wsgi_app

      app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/jobs": wsgi_app("config.yaml")})
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app", "wsgi_app"]


def wsgi_app(config_path: str | None = None, *, secret_key: str | bytes | None = None):
    """The dashboard as a WSGI application for the config at ``config_path`` (default:
    ``$JOBSUPERVISOR_CONFIG``, else built-in defaults), to mount in another application."""
    from ..config import load_config
    from ..db import resolve_dsn

    config = load_config(config_path)
    return create_app(config, resolve_dsn(config), secret_key=secret_key)
