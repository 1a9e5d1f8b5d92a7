"""`nst stylize` end to end on bundled images: outputs, sidecars, and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image
from pipeline.cli.app import app
from typer.testing import CliRunner

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
