"""jobs.names is the output-name rule, and it agrees with what a run can write.

An output_name must be a plain file name inside `images/` (docs/outputs.md) with an extension the encoder
writes (nst_core.formats.OUTPUT_FORMATS): `x.gif` and `sub/y.png` are refused by `manifest validate` and
by the reader, a supported name is accepted and encodes to a file that decodes back.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import torch

from jobs import ManifestRow, RowProblem, iter_manifest, validate_manifest
from jobs.names import (
    DEFAULT_EXTENSION,
    IMAGE_FORMATS,
    image_format,
    output_name_problem,
)
from nst_core.formats import OUTPUT_FORMATS
from nst_core.images import decode_image, encode_image
from tests.jobs.manifest_helpers import write_table


def _manifest(tmp_path: Path, names: list[str]) -> str:
    table = pa.table(
        {
            "content_uri": [f"c{i}.png" for i in range(len(names))],
            "style_uri": ["s.png"] * len(names),
            "output_name": names,
        }
    )
    return write_table(tmp_path / "m.parquet", table)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("x.gif", "must end in one of .png, .jpg, .jpeg, .webp"),
        ("sub/y.png", "contains a path separator"),
    ],
)
def test_validate_and_reader_refuse_what_a_run_cannot_write(tmp_path: Path, name: str, words: str) -> None:
    uri = _manifest(tmp_path, [name, "ok.png"])
    report = validate_manifest(uri)
    assert [(p.index, p.column) for p in report.problems] == [(0, "output_name")]
    assert words in report.problems[0].message
    assert report.problems[0].message == output_name_problem(name)
    items = list(iter_manifest(uri))
    assert isinstance(items[0], RowProblem) and items[0].column == "output_name"
    assert items[0].message == output_name_problem(name)
    assert isinstance(items[1], ManifestRow) and items[1].output_name == "ok.png"


def test_gif_is_not_an_output_format() -> None:
    assert "gif" not in IMAGE_FORMATS
    assert output_name_problem("x.gif") is not None
    with pytest.raises(KeyError):
        image_format("x.gif")


@pytest.mark.parametrize("extension", sorted(IMAGE_FORMATS))
def test_every_accepted_extension_is_one_the_encoder_writes(extension: str) -> None:
    assert IMAGE_FORMATS is OUTPUT_FORMATS
    name = f"out.{extension.upper()}"
    assert output_name_problem(name) is None
    image = torch.rand(3, 12, 20, generator=torch.Generator().manual_seed(0))
    decoded = decode_image(encode_image(image, image_format(name)), name=name)
    assert tuple(decoded.shape) == (3, 12, 20)


def test_default_name_is_an_output_format() -> None:
    assert image_format(f"row.{DEFAULT_EXTENSION}") == "png"
