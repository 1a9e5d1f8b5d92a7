"""Security of inputs and outputs: nothing written outside --out (symlinks included), weights loaded only with
weights_only=True, credentials masked everywhere a run writes or prints, limits configurable.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest

from nst_core.images import DEFAULT_MAX_PIXELS
from nst_core.params import StyleParams
from nst_core.vgg import WeightsError, load_vgg
from pipeline.cluster.tasks import DEFAULT_MAX_PIXELS as TASKS_MAX_PIXELS
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputNameError
from tests.hardening.cli_helpers import fast_options, nst, option_flags, run_args
from tests.pipeline.pipeline_checks import WEIGHTS, write_manifest

pytestmark = pytest.mark.usefixtures("local_ray")

REPO = Path(__file__).resolve().parents[2]
PARAMS = StyleParams(size=32, steps=2, log_every=1)
PACKAGES = ("nst_core", "jobs", "pipeline")


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def test_every_torch_load_uses_weights_only_and_nothing_unpickles() -> None:
    loads = 0
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for call in _calls(tree):
                func = call.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
                if name == "load" and owner == "torch":
                    loads += 1
                    flags = {k.arg: k.value for k in call.keywords}
                    value = flags.get("weights_only")
                    assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{call.lineno}"
                assert not (owner in ("pickle", "dill", "cloudpickle") and name in ("load", "loads")), (
                    f"{path}:{call.lineno} unpickles"
                )
    assert loads >= 1  # the weights loader is found, so the scan looks where it should


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"features.0.weight": Payload()}))
    with pytest.raises(WeightsError, match="evil.pth"):
        load_vgg("vgg19", str(path))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["images", "curves", "_ledger", "run.json"])
def test_a_layout_entry_symlinked_outside_out_is_refused_before_anything_is_written(
    name: str, tmp_path: Path, images
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.parquet").write_bytes(b"not ours")
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(outside / "run.json" if name == "run.json" else outside)
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"content_uri": images["contents"][0], "style_uri": images["styles"][0]}]
    )
    with pytest.raises(OutputNameError, match="outside the output folder"):
        run_manifest(manifest=manifest, out=str(out), params=PARAMS, weights=WEIGHTS)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.parquet"]  # nothing written, nothing swept


def test_images_folder_symlinked_outside_fails_the_cli_with_one_line(
    tmp_path: Path, images, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "images").symlink_to(outside)
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"content_uri": images["contents"][0], "style_uri": images["styles"][0]}]
    )
    code, _, err = nst(run_args(manifest, str(out), PARAMS, "--weights", WEIGHTS), monkeypatch, capfd)
    assert code == 1 and "outside the output folder" in err, err
    assert not list(outside.iterdir())


def test_credentials_never_appear_in_outputs_logs_or_errors(
    tmp_path: Path, images, moto, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    storage_secret = "FAKE-storage-secret-4b1d"
    uri_secret = "FAKE-uri-secret-77e2"
    options = fast_options({**moto.options, "secret": storage_secret})
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("secrets")
    for local in images["contents"][:2] + images["styles"][:1]:
        fs.put_file(local, f"secrets/in/{Path(local).name}")
    style = f"s3://secrets/in/{Path(images['styles'][0]).name}"
    rows = [
        {"content_uri": f"s3://secrets/in/{Path(c).name}", "style_uri": style} for c in images["contents"][:2]
    ] + [{"content_uri": f"s3://AKIAFAKE:{uri_secret}@secrets/in/x.png", "style_uri": style}]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = "s3://secrets/run"
    args = run_args(manifest, out, PARAMS, "--weights", WEIGHTS, "--json", *option_flags(options))
    code, stdout, stderr = nst(args, monkeypatch, capfd)
    assert code == 2, stderr  # the row with credentials in its URI fails; the others are done
    assert json.loads(stdout.strip().splitlines()[-1])["done"] == 2
    # A run that cannot even start (weights missing) prints its error with the same masking.
    weights = f"s3://AKIAFAKE:{uri_secret}@secrets/w.pth"
    bad = run_args(manifest, "s3://secrets/run2", PARAMS, "--weights", weights, *option_flags(options))
    code2, stdout2, stderr2 = nst(bad, monkeypatch, capfd)
    assert code2 == 1 and "error:" in stderr2
    written = {path: readable(fs.cat_file(path), path) for path in fs.find("secrets") if "/in/" not in path}
    assert any(p.endswith("run.json") for p in written) and any("_ledger" in p for p in written)
    for secret in (storage_secret, uri_secret):
        for text in (stdout, stderr, stdout2, stderr2):
            assert secret not in text
        for path, data in written.items():
            assert secret.encode() not in data, f"{secret} found in {path}"
    run_json = json.loads(written["secrets/run/run.json"])
    assert run_json["storage_options"]["secret"] == "***"


def readable(data: bytes, path: str) -> bytes:
    """A file's bytes, with Parquet (compressed) decoded to its values so a secret inside cannot hide."""
    if not path.endswith(".parquet"):
        return data
    table = pq.read_table(io.BytesIO(data))
    return data + json.dumps(table.to_pylist(), default=str).encode()


def test_pixel_limit_defaults_agree_and_are_recorded() -> None:
    assert TASKS_MAX_PIXELS == DEFAULT_MAX_PIXELS
