"""Fault injection, soak, hostile input and security tests (issue #8).

``invariants.py`` is the checker every scenario ends with; ``handlers.py`` (imported by the
children as ``faults.handlers``) holds the handlers that misbehave on request.
"""
