"""StyleParams: one validated source of engine parameters, with a lossless text form."""

import pytest

from nst_core.params import (
    STYLE_PARAM_FIELDS,
    OptimizerName,
    StyleParams,
    format_field,
    parse_field,
)


def test_text_form_round_trips_every_field() -> None:
    params = StyleParams(schedule=((64, 10), (128, 5)), style_layer_weights=(0.5, 0.1, 0.1, 0.2, 0.1))
    for field in STYLE_PARAM_FIELDS:
        value = getattr(params, field.name)
        assert parse_field(field.name, format_field(field.name, value)) == value


def test_plain_python_forms_are_accepted() -> None:
    params = StyleParams(optimizer="gd", style_layers=["relu1_1"], schedule=[[32, 2], [64, 3]])
    assert params.optimizer is OptimizerName.gd
    assert params.style_layers == ("relu1_1",)
    assert params.schedule == ((32, 2), (64, 3))
    assert params.stages() == ((32, 2), (64, 3))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "sgd"}, "optimizer must be one of"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"size": 10**6}, "size must be <="),
        ({"steps": 10**9}, "steps must be <= 100000"),
        ({"schedule": ((64, 10**9),)}, "schedule stage"),
        ({"style_weight": float("nan")}, "style_weight must be a finite number"),
        ({"content_ratio": 1.5}, "content_ratio must be within"),
        ({"style_layers": ("relu1_1", "fc7")}, "unknown style layer"),
        ({"style_layer_weights": (1.0,)}, "1 values for 5 style_layers"),
        ({"schedule": ((0, 5),)}, "schedule stage"),
    ],
)
def test_invalid_values_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StyleParams(**changes)


def test_parse_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="steps"):
        parse_field("steps", "many")
    with pytest.raises(ValueError, match="pooling must be one of avg, max"):
        parse_field("pooling", "median")
    with pytest.raises(ValueError, match="unknown parameter"):
        parse_field("stepz", "1")
