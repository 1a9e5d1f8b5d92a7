"""The one way a command fails: a single masked line on stderr, exit code 1, a traceback behind NST_DEBUG=1.

Used by the root (`main`, the last line of defence) and by commands that catch their own errors early
(`nst manifest …`, to mask the storage options they were given), so every command words failures alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from jobs.masking import mask_text
from pipeline.store.errors import InputMissing, RunError, StorageError

DEBUG_ENV = "NST_DEBUG"


def format_error(exc: BaseException) -> str:
    """Our own errors carry complete messages; anything else is prefixed by its type for searchability."""
    own: list[type[BaseException]] = [StorageError, InputMissing, ValueError, RunError]
    # Error types of modules that were never imported cannot have been raised: importing them (torch)
    # only to compare would add seconds to every early error.
    for module, name in (("nst_core.images", "ImageError"), ("nst_core.vgg", "WeightsError")):
        if module in sys.modules:
            own.append(getattr(sys.modules[module], name))
    if isinstance(exc, tuple(own)):
        return str(exc)
    return f"{type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for a traceback)"


def print_error(exc: BaseException, options: Mapping[str, Any] | None = None) -> None:
    line = escape(mask_text(format_error(exc), options))
    Console(stderr=True).print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)


@contextmanager
def user_errors(options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Any failure inside becomes one masked line and exit code 1 (typer's own exits pass through)."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        print_error(exc, options)
        raise typer.Exit(1) from None
