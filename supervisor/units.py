"""Durations, sizes and connection strings as users write them (pure functions).

Durations are float seconds everywhere inside jobsupervisor; sizes are int bytes.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration", "format_duration", "parse_size", "format_size", "mask_dsn", "mask_secrets",
           "remember_secrets"]

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"

# ---------------------------------------------------------------------------------------------
# durations

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_DURATION_FULL = re.compile(rf"(?:{_NUMBER}\s*(?:ms|s|m|h|d)\s*)+")
_DURATION_HINT = "expected seconds or a duration like '30s', '5m', '1h30m', '1d', '250ms'"


def parse_duration(value: object) -> float:
    """Return *value* as a number of seconds (float, >= 0).

    Accepts an int or float (seconds), or a string: a bare number (seconds, ``"90"``), or one
    or more number+unit parts with units ``ms``, ``s``, ``m``, ``h``, ``d``: ``"30s"``,
    ``"1.5s"``, ``"250ms"``, ``"1h30m"``, ``"1h 30m"``. Units are case-insensitive.
    Booleans, negative and non-finite values raise :class:`ValueError`.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif text.startswith("-") and _looks_like_duration(text[1:].strip()):
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        elif _looks_like_duration(text):
            seconds = sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
        else:
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    else:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError(f"invalid duration {value!r}: must not be negative")
    return seconds


def _looks_like_duration(text: str) -> bool:
    return bool(re.fullmatch(rf"-?{_NUMBER}", text) or _DURATION_FULL.fullmatch(text))


def format_duration(seconds: float) -> str:
    """Compact human form of *seconds*: ``"250ms"``, ``"1.5s"``, ``"30s"``, ``"5m"``,
    ``"1h30m"``, ``"2d3h"``. Uses the largest units (60 -> ``"1m"``), rounds to milliseconds,
    and round-trips through :func:`parse_duration`.
    """
    seconds = float(seconds)
    if math.isnan(seconds) or math.isinf(seconds):
        return str(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return _trim(seconds * 1000, 3) + "ms"
    total_ms = round(seconds * 1000)
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    parts = []
    if days:
        parts.append(f"{days}d")
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(_trim(rest / 1000, 3) + "s")
    return "".join(parts)


def _trim(number: float, decimals: int) -> str:
    text = f"{number:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


# ---------------------------------------------------------------------------------------------
# sizes

_SIZE_UNITS = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgt", start=1):
    for _suffix in (_letter, _letter + "b", _letter + "ib"):
        _SIZE_UNITS[_suffix] = 1024**_power
_SIZE_RE = re.compile(rf"({_NUMBER})\s*([a-z]*)")
_SIZE_HINT = "expected bytes or a size like '512MB', '1GB', '2GiB', '100K'"


def parse_size(value: object) -> int:
    """Return *value* as a number of bytes (int, >= 0).

    Accepts an int (bytes) or a string: a bare number (bytes, ``"1024"``) or a number with a
    unit. All units are **1024-based**, as for memory limits: ``K``/``KB``/``KiB`` = 1024,
    ``M``/``MB``/``MiB`` = 1024**2, ``G``/``GB``/``GiB`` = 1024**3, ``T``/``TB``/``TiB`` =
    1024**4; ``B`` = 1. Units are case-insensitive and may be separated by a space
    (``"512 MB"``); fractions are allowed with a unit (``"1.5GB"``). Booleans, floats,
    negative values and unknown units raise :class:`ValueError`.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("-"):
            raise ValueError(f"invalid size {value!r}: must not be negative")
        match = _SIZE_RE.fullmatch(text)
        if not match or match.group(2) not in _SIZE_UNITS:
            raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
        number, unit = match.groups()
        multiplier = _SIZE_UNITS[unit]
        if multiplier == 1 and not number.isdigit():
            raise ValueError(f"invalid size {value!r}: a number of bytes must be whole")
        size = round(float(number) * multiplier)
    else:
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    if size < 0:
        raise ValueError(f"invalid size {value!r}: must not be negative")
    return size


def format_size(size: int) -> str:
    """Compact human form of a byte count, 1024-based: ``"512MiB"``, ``"1.5GiB"``, ``"100B"``."""
    size = int(size)
    if size < 0:
        return "-" + format_size(-size)
    for unit, multiplier in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= multiplier:
            return _trim(size / multiplier, 1) + unit
    return f"{size}B"


# ---------------------------------------------------------------------------------------------
# connection strings

_URI_START = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_URI_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)
MASK = "***"


def mask_dsn(dsn: str | None) -> str | None:
    """Return *dsn* with any password replaced by ``***``; safe to print or log.

    Handles URIs (``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``,
    also ``?password=...`` in the query) and key=value strings (``password=secret`` or
    ``password='se cret'`` -> ``password=***``). Errs on the side of hiding too much: in a URI
    everything between the first ``:`` of the user info and the last ``@`` before the query is
    hidden, even if the password was not percent-encoded. ``None`` is returned unchanged.
    """
    if dsn is None:
        return None
    text = str(dsn)
    start = _URI_START.match(text)
    if start:
        head, rest = text[: start.end()], text[start.end():]
        authority_end = len(rest)
        for sep in ("?", "#"):
            pos = rest.find(sep)
            if pos != -1:
                authority_end = min(authority_end, pos)
        at = rest.rfind("@", 0, authority_end)
        if at != -1:
            userinfo, after = rest[:at], rest[at:]
            user, colon, password = userinfo.partition(":")
            if colon and password:
                rest = f"{user}:{MASK}{after}"
        return head + _URI_QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, rest)
    return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


# Free text (error messages, log fields, tracebacks) may quote a DSN or a piece of one:
# libpq's conninfo parser echoes the offending token ("unexpected spaces found in "se cret"",
# "invalid percent-encoded token: "s3c%ret""), which can be the password alone. So besides
# DSN-shaped text, every password this process has connected with is masked wherever it shows.
_URI_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@\"']*:)([^\s@\"']*)(@)")
MIN_SECRET_LENGTH = 4  # shorter "passwords" would mask ordinary words; DSN-shaped text still is
_SECRETS: set[str] = set()
_SECRET_PATTERN: re.Pattern[str] | None = None


def dsn_passwords(dsn: str | None) -> set[str]:
    """The password(s) written in *dsn*, as written and percent-decoded."""
    from urllib.parse import unquote

    found: set[str] = set()
    if not dsn:
        return found
    text = str(dsn)
    start = _URI_START.match(text)
    if start:
        rest = text[start.end():]
        authority_end = min([p for p in (rest.find("?"), rest.find("#")) if p != -1] or [len(rest)])
        at = rest.rfind("@", 0, authority_end)
        if at != -1:
            _, colon, password = rest[:at].partition(":")
            if colon and password:
                found.add(password)
        for match in _URI_QUERY_PASSWORD.finditer(rest):
            found.add(rest[match.end(1):match.end()])
    else:
        for match in _KV_PASSWORD.finditer(text):
            value = match.group(2)
            if value.startswith("'"):
                value = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
                found.add(value.replace("\\'", "'").replace("\\\\", "\\"))
            found.add(value)
    found |= {unquote(p) for p in found}
    return {p for p in found if p}


def remember_secrets(dsn: str | None) -> None:
    """Mask the password(s) of *dsn* in everything :func:`mask_secrets` sees from now on."""
    global _SECRET_PATTERN
    new = {p for p in dsn_passwords(dsn) if len(p) >= MIN_SECRET_LENGTH} - _SECRETS
    if not new:
        return
    _SECRETS.update(new)
    # Longest first, so a password containing another is masked whole.
    _SECRET_PATTERN = re.compile("|".join(re.escape(p) for p in sorted(_SECRETS, key=len, reverse=True)))


def mask_secrets(text: str) -> str:
    """*text* with DSN passwords (URI user info, ``password=``) and every remembered password
    replaced by ``***``. Cheap when there is nothing to mask."""
    if not text:
        return text
    if _SECRET_PATTERN is not None:
        text = _SECRET_PATTERN.sub(MASK, text)
    if "://" in text:
        text = _URI_IN_TEXT.sub(lambda m: m.group(1) + MASK + m.group(3), text)
        text = _URI_QUERY_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    if "assword" in text or "ASSWORD" in text:
        text = _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, text)
    return text
