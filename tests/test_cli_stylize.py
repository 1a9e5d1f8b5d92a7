"""`nst stylize` end to end on bundled images: outputs, sidecars, and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "examples"
CONTENT = str(EXAMPLES / "content" / "chelsea.jpg")
STYLE = str(EXAMPLES / "style" / "strokes.png")
FAST = ["--weights", "random:0", "--size", "40", "--steps", "6", "--log-every", "2", "-q"]


def test_stylize_writes_image_curve_and_provenance(tmp_path) -> None:
    out = tmp_path / "result.png"
    result = CliRunner().invoke(app, ["stylize", CONTENT, STYLE, "-o", str(out), *FAST, "--style-weight", "1e5"])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert max(image.size) == 40 and image.mode == "RGB"
    curve = pq.read_table(tmp_path / "result.curve.parquet").to_pylist()
    assert [row["step"] for row in curve] == [0, 2, 4, 6]
    assert curve[-1]["total"] < curve[0]["total"]
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["params"]["steps"] == 6 and record["params"]["style_weight"] == 1e5
    assert record["style_weights"] == [1e5]  # the β each stage used
    assert record["content_mask"] is None and record["style_masks"] is None
    assert record["weights"]["source"] == "random:0"
    assert record["versions"]["torch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.curve.parquet", "result.json", "result.png"]


def test_two_styles_blend_and_jpeg_output(tmp_path) -> None:
    out = tmp_path / "blend.jpg"
    hubble = str(EXAMPLES / "style" / "hubble.jpg")
    args = ["stylize", CONTENT, STYLE, hubble, "-o", str(out), "--style-blend", "0.7,0.3", *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert Image.open(out).format == "JPEG"
    assert json.loads((tmp_path / "blend.json").read_text())["style_blend"] == [0.7, 0.3]


def test_bad_blend_and_output_extension_are_usage_errors(tmp_path) -> None:
    result = CliRunner().invoke(app, ["stylize", CONTENT, STYLE, "-o", str(tmp_path / "x.png"), "--style-blend", "1,2"])
    assert result.exit_code == 2 and "2 weights for 1 style images" in result.output
    result = CliRunner().invoke(app, ["stylize", CONTENT, STYLE, "-o", str(tmp_path / "x.gif"), *FAST])
    assert result.exit_code == 2 and ".png" in result.output


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_missing_input_is_one_line_and_exit_code_1(tmp_path) -> None:
    proc = run_cli("stylize", str(tmp_path / "absent.jpg"), STYLE, "-o", str(tmp_path / "o.png"), *FAST)
    assert proc.returncode == 1
    assert "absent.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_offline_imagenet_fails_fast_with_instructions(tmp_path) -> None:
    proc = run_cli("stylize", CONTENT, STYLE, "-o", str(tmp_path / "o.png"), "--size", "32", "--steps", "1", "-q",
                   TORCH_HOME=str(tmp_path / "torch"))  # fmt: skip
    assert proc.returncode == 1
    assert "TORCH_HOME" in proc.stderr and "--weights" in proc.stderr
    assert not (tmp_path / "o.png").exists()  # never a silent fall-back to random weights


def test_compile_flag_reaches_the_engine(tmp_path, monkeypatch) -> None:
    import nst_core.engine as command  # the command imports the engine when it runs

    seen: dict[str, object] = {}

    class Recording(command.Stylizer):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            seen.update(kwargs)
            kwargs["compile_backend"] = "aot_eager"  # inductor's C++ build is too slow for a CLI test
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(command, "Stylizer", Recording)
    result = CliRunner().invoke(app, ["stylize", CONTENT, STYLE, "-o", str(tmp_path / "c.png"), *FAST, "--compile"])
    assert result.exit_code == 0, result.output
    assert seen["compile"] is True
    assert Image.open(tmp_path / "c.png").size[0] == 40


def test_misspelt_weights_get_a_did_you_mean(tmp_path) -> None:
    proc = run_cli("stylize", CONTENT, STYLE, "-o", str(tmp_path / "o.png"), "--weights", "randum:0", "-q")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean random:0?" in lines[0]
    assert not (tmp_path / "o.png").exists()


MASK_ARGS = ["--weights", "random:0", "--size", "32", "--steps", "2", "--log-every", "1", "-q"]


def test_region_masks_through_the_cli_are_used_and_recorded(tmp_path) -> None:
    from tests.pipeline.pipeline_checks import write_mask

    regions = [(0, 0, 0), (255, 0, 0)]
    content_mask = write_mask(tmp_path / "photo-mask.png", (170, 256), regions)  # chelsea.jpg is 256x170
    style_mask = write_mask(tmp_path / "strokes-mask.png", (64, 64), regions)  # strokes.png is square
    hubble = str(EXAMPLES / "style" / "hubble.jpg")
    out = tmp_path / "masked.png"
    proc = run_cli("stylize", CONTENT, STYLE, hubble, "-o", str(out), "--content-mask", content_mask,
                   "--style-mask", style_mask, "--style-mask", "-", *MASK_ARGS)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert max(Image.open(out).size) == 32
    record = json.loads((tmp_path / "masked.json").read_text())
    assert record["content_mask"] == content_mask
    assert record["style_masks"] == [style_mask, None]  # hubble.jpg serves every region whole

    wrong = write_mask(tmp_path / "square.png", (64, 64), regions)  # not the content's aspect ratio
    proc = run_cli("stylize", CONTENT, STYLE, "-o", str(tmp_path / "bad.png"), "--content-mask", wrong, *MASK_ARGS)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert "square.png" in lines[0] and "aspect ratio" in lines[0]
    assert not (tmp_path / "bad.png").exists()


def test_style_masks_must_match_the_styles_and_need_a_content_mask(tmp_path) -> None:
    hubble = str(EXAMPLES / "style" / "hubble.jpg")
    out = str(tmp_path / "x.png")
    result = CliRunner().invoke(app, ["stylize", CONTENT, STYLE, hubble, "-o", out, "--content-mask", "m.png",
                                      "--style-mask", "s.png", *MASK_ARGS])  # fmt: skip
    assert result.exit_code == 2 and "1 style masks for 2 style images" in result.output
    result = CliRunner().invoke(app, ["stylize", CONTENT, STYLE, "-o", out, "--style-mask", "s.png", *MASK_ARGS])
    assert result.exit_code == 2 and "needs --content-mask" in result.output
    assert not (tmp_path / "x.png").exists()
