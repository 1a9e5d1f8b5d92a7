"""The builder over a local folder and over fsspec's memory file system, with params, sweeps and lists."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from jobs import (
    ManifestRow,
    build_manifest,
    iter_manifest,
    list_sources,
    parse_param_args,
    parse_sweep_args,
    row_id_for,
)
from nst_core.params import StyleParams
from tests.jobs.manifest_helpers import write_image


def test_local_folder_product_is_sorted_and_ids_match(image_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.parquet")
    result = build_manifest(
        content=[str(image_dir / "content")],
        style=[str(image_dir / "style")],
        params=parse_param_args(["size=64"]),
        sweeps=parse_sweep_args(["steps=10,20", "style_layers=relu1_1,relu2_1;relu3_1"]),
        output=out,
    )
    assert (result.rows, result.contents, result.styles, result.parameter_sets) == (24, 3, 2, 4)
    table = pq.read_table(out)
    assert table.column_names == ["content_uri", "style_uri", "size", "steps", "style_layers"]  # no row_id
    contents = sorted(str(image_dir / "content" / n) for n in ("a.png", "b.jpg", "nested/c.webp"))
    styles = sorted(str(image_dir / "style" / n) for n in ("stars.png", "wave.jpg"))
    assert table.column("content_uri").to_pylist()[:12] == [c for c in contents for _ in range(4)]
    assert table.column("style_uri").to_pylist() == [s for s in styles for _ in range(12)]
    rows = list(iter_manifest(out))
    assert all(isinstance(r, ManifestRow) for r in rows)
    first = rows[0]
    assert isinstance(first, ManifestRow)
    expected = StyleParams(size=64, steps=10, style_layers=("relu1_1", "relu2_1"))
    assert first.params == expected
    assert first.row_id == row_id_for(contents[0], styles[0], expected)
    assert len({r.row_id for r in rows if isinstance(r, ManifestRow)}) == 24


def test_ids_of_a_built_manifest_follow_the_run_defaults(image_dir: Path, tmp_path: Path) -> None:
    """A run with other defaults renders other images, so its ids differ; its own cells still win."""
    out = str(tmp_path / "m.parquet")
    build_manifest(
        content=[str(image_dir / "content" / "a.png")],
        style=[str(image_dir / "style")],
        sweeps=parse_sweep_args(["seed=1,2"]),
        output=out,
    )
    ids: dict[int, list[str]] = {}
    for steps in (500, 300, 1000):
        rows = [
            r for r in iter_manifest(out, defaults=StyleParams(steps=steps)) if isinstance(r, ManifestRow)
        ]
        assert len(rows) == 4
        for row in rows:
            assert row.params.steps == steps
            assert row.row_id == row_id_for(
                row.content_uri, row.style_uri, StyleParams(steps=steps, seed=row.params.seed)
            )
        ids[steps] = [r.row_id for r in rows]
    assert len({rid for group in ids.values() for rid in group}) == 12  # three runs never share an image id
    # the defaults' own values give the same ids as leaving them out: 500 steps is the library default
    assert ids[500] == [r.row_id for r in iter_manifest(out) if isinstance(r, ManifestRow)]
    # a manifest cell overrides the run default, and then the run default no longer matters
    pinned = str(tmp_path / "pinned.parquet")
    build_manifest(
        content=[str(image_dir / "content" / "a.png")],
        style=[str(image_dir / "style")],
        params={"seed": "1"},
        output=pinned,
    )
    ids_by_seed = {
        seed: [
            r.row_id
            for r in iter_manifest(pinned, defaults=StyleParams(seed=seed))
            if isinstance(r, ManifestRow)
        ]
        for seed in (0, 7)
    }
    assert ids_by_seed[0] == ids_by_seed[7] and len(ids_by_seed[0]) == 2


def test_rebuild_is_identical_and_overwrite_is_explicit(image_dir: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.parquet")
    kwargs = {"content": [str(image_dir / "content")], "style": [str(image_dir / "style" / "*.jpg")]}
    build_manifest(**kwargs, output=out)
    first = pq.read_table(out)
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        build_manifest(**kwargs, output=out)
    build_manifest(**kwargs, output=out, overwrite=True)
    assert pq.read_table(out).equals(first) and first.num_rows == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "m.parquet"]  # no temporary files left


def test_memory_filesystem_globs_and_lists(
    memfs: tuple[fsspec.AbstractFileSystem, str], tmp_path: Path
) -> None:
    fs, root = memfs
    for name in ("c1.jpg", "c2.png", "readme.md"):
        fs.pipe(f"{root}/photos/{name}", b"img")
    fs.pipe(
        f"{root}/styles.csv",
        f"title,uri\nwave,memory://{root}/s/wave.jpg\nstars,memory://{root}/s/stars.jpg\n".encode(),
    )
    fs.pipe(f"{root}/styles.txt", f"# styles\nmemory://{root}/s/wave.jpg\n\n".encode())
    assert list_sources(f"memory://{root}/photos", column="content_uri") == [
        f"memory://{root}/photos/c1.jpg",
        f"memory://{root}/photos/c2.png",
    ]
    assert list_sources(f"memory://{root}/photos/*.jpg", column="content_uri") == [
        f"memory://{root}/photos/c1.jpg"
    ]
    assert list_sources(f"memory://{root}/styles.txt", column="style_uri") == [f"memory://{root}/s/wave.jpg"]
    out = f"memory://{root}/out/m.parquet"
    result = build_manifest(
        content=[f"memory://{root}/photos"],
        style=[f"memory://{root}/styles.csv"],
        sweeps={"seed": ["1", "2"]},
        output=out,
    )
    assert result.rows == 2 * 2 * 2
    rows = [r for r in iter_manifest(out) if isinstance(r, ManifestRow)]
    assert len(rows) == 8 and rows[0].style_uri == f"memory://{root}/s/stars.jpg"


def test_local_list_resolves_relative_entries(tmp_path: Path) -> None:
    write_image(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "list.txt").write_text("imgs/a.jpg\n/abs/b.jpg\ns3://bucket/c.jpg\n")
    assert list_sources(str(tmp_path / "list.txt"), column="content_uri") == sorted(
        [str(tmp_path / "imgs" / "a.jpg"), "/abs/b.jpg", "s3://bucket/c.jpg"]
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"params": {"steps": "-1"}}, "steps must be a positive integer"),
        ({"sweeps": {"optimizer": ["adam", "sgd"]}}, "optimizer must be one of"),
        ({"sweeps": {"steps": ["10", "10"]}}, "lists 10 more than once"),
        ({"params": {"steps": "10"}, "sweeps": {"steps": ["20"]}}, "both as --param and as --sweep"),
    ],
)
def test_bad_parameters_are_refused_before_writing(
    image_dir: Path, tmp_path: Path, kwargs: dict, message: str
) -> None:
    out = tmp_path / "m.parquet"
    with pytest.raises(ValueError, match=message):
        build_manifest(
            content=[str(image_dir / "content")], style=[str(image_dir / "style")], output=str(out), **kwargs
        )
    assert not out.exists()


def test_argument_parsing_errors() -> None:
    with pytest.raises(ValueError, match="unknown parameter 'stpes'"):
        parse_param_args(["stpes=3"])
    with pytest.raises(ValueError, match="expects key=value"):
        parse_sweep_args(["steps"])
    assert parse_sweep_args(["schedule=256:10,512:5;512:20"]) == {"schedule": ["256:10,512:5", "512:20"]}


def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file, directory or glob"):
        list_sources(str(tmp_path / "nothing"), column="content_uri")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        list_sources(str(tmp_path / "empty"), column="content_uri")
