"""Reading TOML files that pydantic validates (policies, job specs), with one-line errors.

Shared by policy/schema.py and supervisor/spec.py so that both speak the same error language:
`FILE: key.path[2].sub: what is wrong (the fix)`.
"""

from __future__ import annotations

import difflib
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from aios_host.errors import AiosError, shown

MAX_TOML_BYTES = 16 << 20


def read_toml(path: Path, error: type[AiosError], what: str) -> dict[str, Any]:
    """Parse a TOML file; every failure is `error("PATH: reason")`, one line. Only a regular file
    is read: opening a FIFO would block forever (a daemon's reload included), a device could be
    endless."""
    shown_path = str(path) if len(str(path)) <= 200 else shown(str(path), 200)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise error(f"{shown_path}: not a regular file")
            if st.st_size > MAX_TOML_BYTES:
                raise error(f"{shown_path}: {st.st_size} bytes; a {what} is at most {MAX_TOML_BYTES}")
            with os.fdopen(os.dup(fd), "rb") as f:
                text = f.read().decode("utf-8")
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise error(f"{shown_path}: no such {what}") from None
    except UnicodeDecodeError as exc:
        raise error(f"{shown_path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{shown_path}: cannot read ({exc.strerror})") from None
    except ValueError:  # a NUL in the name: no such file can exist
        raise error(f"{shown_path}: not a file name (it holds a NUL byte)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{shown_path}: invalid TOML: {exc}") from None


def loc_str(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc ('class', 2, 'memory', 'high') as the key path class[2].memory.high."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if len(part) <= 40 and part.isprintable() else shown(part)
            out += ("." if out else "") + key
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation: X, X | None, list[X], dict[str, X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys (aliases where set) a file may have at `loc`, for did-you-mean."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        by_key = {(f.alias or n): f for n, f in current.model_fields.items()}
        if part not in by_key:
            return []
        current = _model_in(by_key[part].annotation)
    if current is None:
        return []
    return [(f.alias or n) for n, f in current.model_fields.items()]


def did_you_mean(key: str, allowed: list[str]) -> str:
    hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def describe(model: type[BaseModel], err: dict[str, Any]) -> tuple[str, str]:
    """(key path, what is wrong) for one pydantic error dict."""
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        return loc_str(loc), f"unknown key {shown(key)}{did_you_mean(key, fields_at(model, loc[:-1]))}"
    if kind == "missing":
        return loc_str(loc), "required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind not in ("value_error", "assertion_error"):
        msg = f"{shown(err.get('input'))}: {msg[0].lower()}{msg[1:]}"
    return loc_str(loc), msg


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, val in over.items():
        out[key] = deep_merge(out[key], val) if isinstance(val, dict) and isinstance(out.get(key), dict) else val
    return out
