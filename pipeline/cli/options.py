"""Command-line options shared by `nst stylize`, `nst run` and `nst demo`, derived from `StyleParams`.

One Typer option per StyleParams field, generated from the dataclass so that names, types and defaults
are never retyped: `--size`, `--steps`, `--style-weight`, … A command decorated with
`with_style_params` receives a validated `params: StyleParams` instead of the loose options.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Optional, TypeVar

import typer

from nst_core.params import (
    DEFAULT_PARAMS,
    STYLE_PARAM_FIELDS,
    Arch,
    StyleParams,
    enum_of,
    field_help,
    field_kind,
    format_field,
    parse_field,
)

PANEL = "Style parameters"




_TEXT_FIELDS = {f.name for f in STYLE_PARAM_FIELDS if field_kind(f.name).rstrip("?") in ("layers", "floats", "schedule")}
"""Fields typed as text on the command line (lists and schedules) and parsed like a manifest cell."""


def _option_for(field: dataclasses.Field[Any]) -> inspect.Parameter:
    name = field.name
    default = getattr(DEFAULT_PARAMS, name)
    flag = "--" + name.replace("_", "-")
    help_text = field_help(name)
    annotation: Any
    if name in _TEXT_FIELDS:
        annotation = Optional[str]  # noqa: UP045 - Typer needs the typing form at runtime on 3.10
        shown = format_field(name, default) if default is not None else None
        option = typer.Option(flag, help=help_text, rich_help_panel=PANEL, show_default=shown or False)
        default = None
    elif enum_of(name) is not None:
        annotation = enum_of(name)
        option = typer.Option(flag, help=help_text, rich_help_panel=PANEL, case_sensitive=False)
    elif field_kind(name) == "bool":
        annotation = bool
        option = typer.Option(f"{flag}/--no-{flag[2:]}", help=help_text, rich_help_panel=PANEL)
    elif field_kind(name) == "float?":
        annotation = Optional[float]  # noqa: UP045
        option = typer.Option(flag, help=help_text, rich_help_panel=PANEL)
    else:
        annotation = type(default)
        option = typer.Option(flag, help=help_text, rich_help_panel=PANEL)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, option]
    )


def params_from_options(values: dict[str, Any], base: StyleParams = DEFAULT_PARAMS) -> StyleParams:
    """Build StyleParams from option values; text fields left unset (None) keep the base value."""
    changes: dict[str, Any] = {}
    for field in STYLE_PARAM_FIELDS:
        value = values[field.name]
        if field.name in _TEXT_FIELDS:
            if value is None:
                continue
            value = parse_field(field.name, value)
        elif isinstance(value, Enum):
            value = enum_of(field.name)(value.value)  # type: ignore[misc]
        changes[field.name] = value
    return dataclasses.replace(base, **changes)


F = TypeVar("F", bound=Callable[..., Any])


def with_style_params(func: F) -> F:
    """Give a Typer command one option per StyleParams field and pass it `params: StyleParams`.

    Invalid combinations (unknown layer, negative steps…) are reported as a usage error naming the option.
    """
    signature = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # resolves `from __future__` string annotations
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in signature.parameters.values()
        if p.name != "params"
    ]
    names = [field.name for field in STYLE_PARAM_FIELDS]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in names}
        try:
            params = params_from_options(values)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        return func(params=params, **kwargs)

    extra = [_option_for(field) for field in STYLE_PARAM_FIELDS]
    parameters = own + extra
    wrapper.__signature__ = signature.replace(parameters=parameters, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]


WeightsOpt = Annotated[
    str,
    typer.Option(
        "--weights",
        help="VGG weights: 'imagenet' (torchvision cache, honours TORCH_HOME), 'random:SEED', "
        "or a path/URI (s3://…, gs://…) to a state dict.",
        rich_help_panel="Model",
    ),
]


WeightsSha256Opt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--weights-sha256", help="Expected sha256 of the weights file.", rich_help_panel="Model"),
]


ArchOpt = Annotated[
    Arch, typer.Option("--arch", help="VGG architecture.", rich_help_panel="Model", case_sensitive=False)
]


StorageOptionOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--storage-option",
        help="fsspec storage option key=value (repeatable; dotted keys nest, e.g. client_kwargs.endpoint_url=…).",
        rich_help_panel="Storage",
    ),
]


CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile/--no-compile",
        help="torch.compile the optimisation step (CUDA graphs on GPU); changes speed, never the image. "
        "Falls back to eager with a warning if compilation fails.",
        rich_help_panel="Model",
    ),
]


DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.", rich_help_panel="Model"
    ),
]


PROGRESS_INTERVAL_S = 30.0
"""Seconds between plain progress lines when stderr is not a terminal (logs, `ray job logs -f`, CI)."""


QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress display (errors and the final summary still print)."),
]


NoProgressOpt = Annotated[bool, typer.Option("--no-progress", hidden=True, help="Same as --quiet.")]


ProgressIntervalOpt = Annotated[
    float,
    typer.Option(
        "--progress-interval",
        min=1.0,
        help="Seconds between progress lines when stderr is not a terminal (with a terminal: a live view).",
    ),
]
