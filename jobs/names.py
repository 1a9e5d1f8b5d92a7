"""The one rule for the file names a manifest row gives its output: `row_id` (→ `images/<row_id>.png`) and
`output_name`. Used by the manifest scanner (`manifest validate`, the reader) and by pipeline.store.layout at
write time, so a name the validator accepts is a name the run can write, and the reverse.

Entry points: `output_name_problem` and `row_id_problem` (why a name cannot be used, or None),
`image_format` (the encoder format of an accepted name) and `DEFAULT_EXTENSION` (a row without
`output_name`). The extensions are those the encoder writes (`nst_core.formats.OUTPUT_FORMATS`): `x.gif`
is refused here because the run could not write it, and `sub/y.png` because an output is a plain file
name inside `images/` (docs/outputs.md).

Why each part: a path separator or `.`/`..` would leave `images/`; a leading `.` covers those and the
`.tmp-` prefix of temporary files, which the start-up sweep deletes; file systems limit a name to 255
*bytes* (ext4, APFS, NTFS), so lengths are counted in UTF-8 bytes (temporary names have a fixed short
length and no longer add to the final name).
"""

from __future__ import annotations

import posixpath

from nst_core.formats import OUTPUT_FORMATS

IMAGE_FORMATS: dict[str, str] = OUTPUT_FORMATS
"""Output extension → encoder format name: the formats `nst_core.images.encode_image` writes for a run."""
DEFAULT_EXTENSION = "png"
"""The extension of a row without `output_name`: `<row_id>.png`."""
MAX_NAME_BYTES = 255
"""The file-name limit of ext4, APFS and NTFS; object stores allow more, but outputs may be synced locally."""
MAX_ROW_ID_BYTES = 200
"""Leaves room for the extension (`<row_id>.png`) within MAX_NAME_BYTES."""
CONTROL_PATTERN = r"[\x00-\x1f\x7f]"
SEPARATOR_PATTERN = r"[/\\]"


def _common_problem(what: str, name: str) -> str | None:
    if name == "":
        return f"{what} is an empty string" + ("; use null for the default" if what == "output_name" else "")
    if name in (".", ".."):
        return f"{what} {name!r} would escape the output folder"
    separator = "/" in name or "\\" in name
    control = any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    if what == "row_id" and (separator or control):
        return f"row_id {name!r} must not contain '/', '\\' or control characters (it names files)"
    if separator:
        return f"{what} {name!r} contains a path separator; it must be a plain file name inside the output folder"
    if control:
        return f"{what} {name!r} contains a control character"
    if name.startswith("."):
        return f"{what} {name!r} starts with '.' (hidden names and the '.tmp-' prefix of temporary files are reserved)"
    return None


def row_id_problem(row_id: str) -> str | None:
    """Why `row_id` cannot name an output file, or None."""
    problem = _common_problem("row_id", row_id)
    if problem is None and len(row_id.encode("utf-8")) > MAX_ROW_ID_BYTES:
        problem = f"row_id is longer than {MAX_ROW_ID_BYTES} bytes (UTF-8)"
    return problem


def output_name_problem(name: str) -> str | None:
    """Why `output_name` cannot name an output file, or None."""
    problem = _common_problem("output_name", name)
    if problem is None and len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"output_name is longer than {MAX_NAME_BYTES} bytes (UTF-8)"
    if problem is None and extension_of(name) not in IMAGE_FORMATS:
        problem = f"output_name {name!r} must end in one of {', '.join('.' + e for e in IMAGE_FORMATS)}"
    return problem


def extension_of(name: str) -> str:
    """The extension of `name`, lower case and without the dot ("" when it has none)."""
    return posixpath.splitext(name)[1].lower().lstrip(".")


def image_format(name: str) -> str:
    """The encoder format (`nst_core.images.encode_image`'s `fmt`) of a name `output_name_problem` accepts,
    or of `<row_id>.png`; KeyError for an extension that is not an output format."""
    return IMAGE_FORMATS[extension_of(name)]
