"""User-facing errors: one line saying what is wrong and how to fix it."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, wrong shape).

    The message is a single line that names the problem and the fix. Entry points print it as
    ``error: <message>`` and exit with code 2; tracebacks only appear with ``PF_DEBUG=1``.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def main_guard(fn: F) -> F:
    """Decorate a ``main()``: turn ``UserError`` into one stderr line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            if os.environ.get("PF_DEBUG"):
                raise
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapper  # type: ignore[return-value]
