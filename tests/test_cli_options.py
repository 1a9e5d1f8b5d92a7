"""The style options are generated from StyleParams: every field is an option, parsed and validated once."""

import dataclasses

import typer
from typer.testing import CliRunner

from nst_core.params import STYLE_PARAM_FIELDS, PreserveColor, StyleParams
from pipeline.cli.options import with_style_params

seen: list[StyleParams] = []
app = typer.Typer()


@app.command()
@with_style_params
def probe(name: str = "x", *, params: StyleParams) -> None:
    seen.append(params)


def test_every_field_has_help_text() -> None:
    assert all(field.metadata.get("help") for field in STYLE_PARAM_FIELDS)  # every field brings its --help


def test_defaults_equal_the_dataclass_defaults() -> None:
    seen.clear()
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 0, result.output
    assert seen == [StyleParams()]


def test_options_are_parsed_into_typed_fields() -> None:
    seen.clear()
    args = [
        "--size", "96", "--steps", "7", "--style-weight", "5e5", "--style-layers", "relu1_1,relu3_1",
        "--style-layer-weights", "0.25,0.75", "--schedule", "32:3,64:4", "--preserve-color", "luminance",
        "--no-clamp", "--content-ratio", "0.3",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = dataclasses.replace(
        StyleParams(),
        size=96,
        steps=7,
        style_weight=5e5,
        style_layers=("relu1_1", "relu3_1"),
        style_layer_weights=(0.25, 0.75),
        schedule=((32, 3), (64, 4)),
        preserve_color=PreserveColor.luminance,
        clamp=False,
        content_ratio=0.3,
    )
    assert seen == [expected]


def test_invalid_values_are_usage_errors_naming_the_problem() -> None:
    result = CliRunner().invoke(app, ["--style-layers", "relu9_9"])
    assert result.exit_code == 2
    assert "relu9_9" in result.output
    result = CliRunner().invoke(app, ["--steps", "0"])
    assert result.exit_code == 2
    assert "steps must be a positive integer" in result.output


def test_help_lists_the_issue_option_names() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    for flag in ("--size", "--steps", "--optimizer", "--lr", "--init", "--seed", "--content-weight",
                 "--style-weight", "--tv-weight", "--content-layers", "--style-layers", "--preserve-color",
                 "--style-scale", "--precision", "--pooling"):  # fmt: skip
        assert flag in result.output


def test_style_loss_and_ema_decay_options() -> None:
    seen.clear()
    result = CliRunner().invoke(app, ["--style-loss", "W2", "--ema-decay", "0.5"])
    assert result.exit_code == 0, result.output
    assert seen == [StyleParams(style_loss="w2", ema_decay=0.5)]
    result = CliRunner().invoke(app, ["--ema-decay", "1"])
    assert result.exit_code == 2
    assert "ema_decay must be within [0, 1)" in result.output
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--style-loss" in result.output and "--ema-decay" in result.output


def test_style_ratio_option() -> None:
    seen.clear()
    result = CliRunner().invoke(app, ["--style-ratio", "0.5"])
    assert result.exit_code == 0, result.output
    assert seen == [StyleParams(style_ratio=0.5)]
    result = CliRunner().invoke(app, ["--style-ratio", "0"])
    assert result.exit_code == 2
    assert "style_ratio must be > 0" in result.output
    result = CliRunner().invoke(app, ["--style-ratio", "1", "--content-ratio", "0.9"])
    assert result.exit_code == 2
    assert "set only one of them" in result.output
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--style-ratio" in result.output


def test_warm_start_option() -> None:
    seen.clear()
    result = CliRunner().invoke(app, ["--warm-start", "--schedule", "32:3,64:4"])
    assert result.exit_code == 0, result.output
    assert seen == [StyleParams(schedule=((32, 3), (64, 4)), warm_start=True)]
    result = CliRunner().invoke(app, ["--no-warm-start"])
    assert result.exit_code == 0, result.output
    assert seen[-1] == StyleParams()
    result = CliRunner().invoke(app, ["--warm-start", "--optimizer", "lbfgs"])
    assert result.exit_code == 2
    assert "curvature pairs cannot be resized" in result.output
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--warm-start" in result.output
