"""Whole-object reads and writes: a reader never sees a partial file, and repeating a write is harmless.

File systems: temporary name, fsync, rename. Object stores: one PUT of the whole body (a rename there is
a copy plus a delete). Inputs are read with a byte limit and only from regular files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any

from jobs.masking import mask_uri
from nst_core.atomic import replaced_atomically
from pipeline.store.bounded import LOCAL_PROTOCOLS, _fs_is_local, bounded
from pipeline.store.errors import InputMissing, InputRefused
from pipeline.store.fs import filesystem, protocol_of


def read_bytes(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    max_bytes: int | None = None,
    timeout: float | None = None,
) -> bytes:
    """The whole object, read within `timeout` seconds and at most `max_bytes` long (InputRefused beyond).

    Local paths must be regular files, checked before opening: a FIFO would block `open()` for ever and a
    device (`/dev/zero`) never ends.
    """
    fs, path = filesystem(uri, storage_options)
    try:
        if _fs_is_local(fs):
            return _read_local(path, uri, max_bytes)
        if max_bytes is None:
            return bounded(fs, "cat_file", path, uri=uri, timeout=timeout)  # type: ignore[no-any-return]
        data = bounded(fs, "cat_file", path, uri=uri, timeout=timeout, start=0, end=max_bytes + 1)
        if len(data) > max_bytes:
            raise InputRefused(f"larger than the {max_bytes}-byte read limit (from --max-pixels): {mask_uri(uri)}")
        return data  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise InputMissing(f"file not found: {mask_uri(uri)}") from None
    except IsADirectoryError:
        raise InputMissing(f"is a directory, not a file: {mask_uri(uri)}") from None
    except PermissionError:
        raise InputMissing(f"permission denied: {mask_uri(uri)}") from None


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_local(path: str, uri: str, max_bytes: int | None) -> bytes:
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise InputRefused(f"not a regular file ({kind}): {mask_uri(uri)}")
    with open(path, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced between the check and the open
            raise InputRefused(f"not a regular file: {mask_uri(uri)}")
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise InputRefused(f"larger than the {max_bytes}-byte read limit (from --max-pixels): {mask_uri(uri)}")
    return data


def write_bytes_atomic(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write so that no reader ever sees a partial object, and so that repeating the write is harmless.

    Local paths: write a uniquely named temporary file in the same directory, fsync, then `os.replace`
    (atomic on POSIX). Object stores: one PUT of the whole body (`pipe_file`), which is atomic by the
    store's own contract; a rename there would be a copy plus delete and is avoided.
    """
    fs, path = filesystem(uri, storage_options)
    if protocol_of(uri) in LOCAL_PROTOCOLS:
        with replaced_atomically(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return
    parent = path.rsplit("/", 1)[0]
    try:
        bounded(fs, "makedirs", parent, uri=uri, exist_ok=True)
    except TimeoutError:
        raise
    except Exception:  # object stores have no directories; some backends refuse makedirs
        pass
    bounded(fs, "pipe_file", path, data, uri=uri)
