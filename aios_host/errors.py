"""Domain errors. Each one renders as a single line a user can act on.

The CLI catches `AiosError` and prints `str(err)`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno as errno_mod
import os


def shown(value: object, limit: int = 40) -> str:
    """A value (or key) for an error line: hostile input can be kilobytes long, and one line must
    stay readable. repr() also makes control characters and NULs visible."""
    r = repr(value)
    if len(r) <= limit:
        return r
    return r[: limit - 5] + "...'" if isinstance(value, str) else r[: limit - 3] + "..."


def one_line(text: str) -> str:
    """Control characters (a newline in a file name, a NUL in a key) escaped as repr() would, so
    that an error names hostile input and still stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class AiosError(Exception):
    """An error caused by input or by the host, not by a bug in aios-host. str() is one line."""

    exit_code = 1

    def __str__(self) -> str:
        return one_line(super().__str__())


class KernelError(AiosError):
    """An OS call on a kernel file failed. Carries the path, the operation and errno."""

    def __init__(self, op: str, path: str | os.PathLike[str], err: int, detail: str = "") -> None:
        self.op = op
        self.path = os.fspath(path)
        self.errno = err
        self.detail = detail
        super().__init__(str(self))

    @property
    def errno_name(self) -> str:
        return errno_mod.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        what = f"{self.path}: {self.op} failed: {self.errno_name} ({os.strerror(self.errno)})"
        return one_line(f"{what}; {self.detail}" if self.detail else what)

    @classmethod
    def from_oserror(cls, op: str, path: str | os.PathLike[str], exc: OSError) -> KernelError:
        return cls(op, path, exc.errno or errno_mod.EIO)


class ParseError(AiosError):
    """A kernel file did not have the format its documentation gives."""

    def __init__(self, what: str, text: str, reason: str) -> None:
        self.what = what
        self.text = text
        super().__init__(f"cannot parse {what} {text[:80]!r}: {reason}")


class NotFoundError(AiosError):
    """A cgroup, file or device that the user named does not exist."""
