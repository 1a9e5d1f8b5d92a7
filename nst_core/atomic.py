"""Write a local file so that no reader ever sees it half-written: a temporary name beside it, then one rename.

Used for every local file the project writes from a stream (downloaded weights, a built manifest, an
output image): the temporary file is in the target's own folder (a rename across file systems would be a
copy), is named with `TMP_PREFIX` (which every start-up sweep deletes and no output name may start with),
and is removed when the write fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

TMP_PREFIX = ".tmp-"
"""Prefix of temporary files; no output name may start with it."""


@contextmanager
def replaced_atomically(target: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside `target`; when the block succeeds it replaces `target` (os.replace, atomic
    on POSIX), when it raises the temporary file is removed and `target` is untouched."""
    directory = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex[:16]}")  # short: the name's bytes are the limit
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


__all__ = ["TMP_PREFIX", "replaced_atomically"]
