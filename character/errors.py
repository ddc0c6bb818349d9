"""The one user-facing error type.

A `CharacterError` is bad input or a missing resource: the CLI prints its message as one line
(`error: ...`) and exits with code 2, no traceback. Our own invariants use `assert` instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

EXIT_USAGE = 2


class CharacterError(Exception):
    """Bad input: what is wrong, where, and how to fix it, in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def run_cli(fn: Callable[[], T]) -> T:
    """Run `fn`, turning a CharacterError into one line on stderr and exit code 2."""
    try:
        return fn()
    except CharacterError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except BrokenPipeError:  # `character ... | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
