"""The engine's parameters: one frozen dataclass that the CLI options and manifest columns derive from.

Every knob of a style-transfer run lives here exactly once. `pipeline` builds its Typer options from
`STYLE_PARAM_FIELDS`, and `jobs` builds its manifest columns from the same list, so a default or a
name is never retyped in two places.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from types import SimpleNamespace
from typing import Any, TypeVar


class Arch(str, Enum):
    """VGG variants from torchvision's model zoo."""

    vgg19 = "vgg19"
    vgg16 = "vgg16"


class Pooling(str, Enum):
    """Gatys et al. 2016 §2 replace max pooling by average pooling "for slightly more appealing results"."""

    avg = "avg"
    max = "max"


class Padding(str, Enum):
    """Border handling of VGG's first convolution; every deeper convolution keeps VGG's zero padding.

    `zeros` is VGG as trained: in ImageNet-normalised space a zero border is a mean-grey frame, which can
    saturate the outer pixels; `replicate` (crowsonkb's style-transfer-pytorch) and `reflect` extend the
    image instead. Measured figures in docs/engine.md.
    """

    zeros = "zeros"
    replicate = "replicate"
    reflect = "reflect"


class OptimizerName(str, Enum):
    adam = "adam"
    lbfgs = "lbfgs"
    gd = "gd"


class Init(str, Enum):
    """Where the optimised pixels start. The paper starts from white noise; content converges faster."""

    content = "content"
    noise = "noise"
    style = "style"


class PreserveColor(str, Enum):
    """Colour control from Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer" §5."""

    none = "none"
    luminance = "luminance"
    histogram = "histogram"


class Precision(str, Enum):
    """Arithmetic for the convolutions; Gram matrices and losses are always float32.

    `auto` (the default) is bf16 on CUDA devices that support it and fp32 elsewhere
    (`nst_core.precision.resolve_precision`): bf16 is the GPU's fast path, while on CPU fp32 keeps the
    property that a batch reproduces single-image runs. It is an execution choice, not a style
    parameter: fp32 and auto give the same row id (jobs/row_id.py).
    """

    auto = "auto"
    fp32 = "fp32"
    tf32 = "tf32"
    bf16 = "bf16"


class StyleNormalization(str, Enum):
    """How each layer's Gram error is scaled.

    `paper`:  E_l = 1/(4 N_l² M_l²) Σ (G − A)²  (Gatys et al. 2016, eq. 4).
    `common`: the Gram matrix is first divided by N_l·M_l (as in the PyTorch tutorial and most
              re-implementations) and the squared error is averaged over its N_l² entries, i.e. an extra
              1/N_l² per layer relative to the paper (and no factor 4). Deep layers (N_l = 512) then
              weigh far less than shallow ones (N_l = 64).
    """

    paper = "paper"
    common = "common"


W2_NEWTON_SCHULZ_ITERATIONS = 20
"""Newton–Schulz iterations per matrix square root. An eigenvalue λ of A/‖A‖_F grows about 2.25× per
iteration until it converges, so more iterations reach smaller eigenvalues; but on a rank-deficient
covariance (fewer positions than channels) float32 rounding in the null space grows the same way and the
iteration diverged from 24 iterations on (measured for N = 128…512, M = 16…256). 20 keeps that margin and
puts W2 within 0.3 % of an eigendecomposition on VGG features (docs/engine.md, "Style loss: Gram or W2")."""


class StyleLossKind(str, Enum):
    """What each style layer compares.

    `gram`: the Gram-matrix error E_l of Gatys et al. 2016 eq. 4 (see `StyleNormalization`).
    `w2`:   the squared 2-Wasserstein distance between Gaussians fitted to the generated and the style
            features, W2² = ‖μ_x − μ_s‖² + tr(Σ_x + Σ_s − 2 (Σ_s^½ Σ_x Σ_s^½)^½), divided by N_l
            (crowsonkb's style-transfer-pytorch `StyleLossW2`; formula and scale in docs/engine.md).
    """

    gram = "gram"
    w2 = "w2"


class Distance(str, Enum):
    """Elementwise distance used by both the content and the style loss."""

    squared = "squared"
    absolute = "absolute"


DEFAULT_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

MAX_SIZE = 8192
"""Longest side the engine accepts; larger requests are almost always a typo (and would not fit a GPU)."""

MAX_WEIGHT = 1e20
"""Largest loss weight: losses and their gradients are float32 (max ~3.4e38), so a weight near 1e308
overflows at run time; 1e20 is far above any useful α, β or TV weight (the default β is 1e6)."""
MAX_LR = 1e6
"""Largest learning rate / L-BFGS step size; beyond it the first step overflows the pixels."""

MAX_STEPS = 100_000
"""Most steps per stage: the paper's results converge within ~1,000; 10⁵ at 512 px is already ~30 GPU-minutes
per image, so anything larger is a typo that would hold a GPU for days."""

MAX_LBFGS_HISTORY = 1000
"""Most L-BFGS curvature pairs: each holds two copies of the image, so 1000 at 1024 px is ~25 GB."""


_T = TypeVar("_T")


def _help(default: _T, text: str) -> _T:
    """A field whose one-line help (the `--option` help of the CLI) is kept beside it, so a new field brings
    its help with it: `field_help(name)` reads it back."""
    return dataclasses.field(default=default, metadata={"help": text})


def field_help(name: str) -> str:
    """The one-line help of a `StyleParams` field."""
    return str(next(f for f in dataclasses.fields(StyleParams) if f.name == name).metadata["help"])


@dataclass(frozen=True, kw_only=True)
class StyleParams:
    """Everything that shapes one stylised image.

    Loss scale: the paper feeds Caffe-scaled pixels (0–255, mean subtracted) and reports α/β = 1e-3.
    We feed ImageNet-normalised pixels, which are ~58× smaller, so content losses shrink by 58² and
    style losses (fourth power of activations) by 58⁴: the same balance needs β/α ≈ 1e3 · 58² ≈ 3e6.
    The default style_weight of 1e6 with content_weight 1 sits in that range.
    """

    size: int = _help(512, 'Long side of the output in pixels (the content image is resized to it).')
    steps: int = _help(500, 'Optimisation steps.')
    optimizer: OptimizerName = _help(OptimizerName.adam, 'Optimiser over the pixels.')
    lr: float = _help(0.02, 'Step size of Adam and gd. L-BFGS ignores it: its strong-Wolfe line search picks every step.')
    init: Init = _help(Init.content, "Starting image: the content, seeded noise (the paper's choice) or the style.")
    seed: int = _help(0, 'Seed for noise initialisation.')
    content_weight: float = _help(1.0, 'α, weight of the content loss.')
    style_weight: float = _help(1e6, 'β, weight of the style loss.')
    tv_weight: float = _help(0.0, 'Weight of the total-variation smoothness loss.')
    content_ratio: float | None = _help(None, 'λ in [0,1]: use the convex form λ·content + (1−λ)·style instead of α/β.')
    """λ for the convex form λ·L_content + (1 − λ)·L_style; when set, content/style weights are ignored."""
    content_layers: tuple[str, ...] = _help(DEFAULT_CONTENT_LAYERS, 'Comma-separated content layers.')
    content_layer_weights: tuple[float, ...] | None = _help(None, 'Comma-separated weights, one per content layer (default: equal).')
    style_layers: tuple[str, ...] = _help(DEFAULT_STYLE_LAYERS, 'Comma-separated style layers.')
    style_layer_weights: tuple[float, ...] | None = _help(None, 'Comma-separated w_l, one per style layer (default: 1/number of layers).')
    """w_l; None means 1/len(style_layers) each, the paper's choice."""
    style_normalization: StyleNormalization = _help(StyleNormalization.paper, "'paper': 1/(4N²M²) per layer (Gatys et al.); 'common': the extra 1/N² most implementations use.")
    distance: Distance = _help(Distance.squared, 'Elementwise distance in both losses.')
    pooling: Pooling = _help(Pooling.avg, 'VGG pooling; the paper uses average pooling.')
    preserve_color: PreserveColor = _help(PreserveColor.none, "Keep the content's colours: luminance-only transfer or style histogram matching.")
    style_scale: float = _help(1.0, "Style image long side relative to the content's.")
    """Style image long side relative to the content's long side (Gatys et al. 2017 §4)."""
    schedule: tuple[tuple[int, int], ...] | None = _help(None, "Coarse-to-fine stages 'size:steps,size:steps' (replaces --size/--steps).")
    """Coarse-to-fine stages (long side, steps); when set it replaces size/steps."""
    clamp: bool = _help(True, 'Clamp pixels to [0,1] after each step.')
    early_stop: float = _help(0.0, 'Stop when the relative loss change per log interval falls below this (0 = off).')
    """Stop once the relative change of the total loss over `log_every` steps falls below this; 0 = off."""
    log_every: int = _help(10, 'Record the loss curve every N steps.')
    precision: Precision = _help(Precision.auto, 'Convolution arithmetic; Gram matrices and losses are always float32.')
    padding: Padding = _help(Padding.zeros, "Border of VGG's first convolution: zeros (VGG as trained) or replicate/reflect, which extend the image.")
    """First-convolution border (see `Padding`). zeros stays the default: in the border measurement of
    docs/engine.md replicate took 6 points off the outer ring's saturated share (81 -> 75 % against 15 %
    inside) and changed the loss by 1-3 %: not enough to move every existing row's image."""
    lbfgs_history: int = _help(100, 'Curvature pairs L-BFGS keeps (each costs two copies of the image).')
    """Curvature pairs L-BFGS keeps (torch's and neural-style-pt's default); each costs two image-sized tensors."""
    style_loss: StyleLossKind = _help(StyleLossKind.gram, "Style comparison per layer: 'gram' (the paper) or 'w2', the Wasserstein-2 distance between Gaussian fits of the features (usually needs a different --style-weight; see docs/engine.md).")
    """Gram matrices (the paper) or the W2 distance between Gaussian fits (`StyleLossKind`)."""
    ema_decay: float = _help(0.0, 'd in [0,1): return the bias-corrected moving average of the iterates, weight d per step (0 = off; adam and gd only).')
    """d in [0, 1): return the bias-corrected exponential moving average of the iterates instead of the
    last one (ema_t = d·ema_{t−1} + (1 − d)·x_t, result ema_t / (1 − d^t)); 0 = off. Adam and gd only
    (refused with lbfgs, see validate_params). The curve records the iterates' losses, its final row and
    `ImageResult.final` the average's. Each coarse-to-fine stage averages its own iterates (as Adam restarts
    per stage unless `warm_start`) and the next stage starts from that average, upsampled."""
    style_ratio: float | None = _help(None, 'r > 0: replaces --style-weight by a β per image, set so that the style gradient is r times the content gradient at the seeded noise image (holds for any VGG weights; see docs/engine.md).')
    """r > 0: set β per image and stage from the gradient norms instead of taking `style_weight`, so that
    ‖β ∇L_style‖ / ‖α ∇L_content‖ = r at a fixed reference point, the seeded noise image of `init=noise`
    (docs/engine.md, "Balance from gradient norms"). A fixed β is tuned to one backbone's feature scale
    (the Gram loss grows with its fourth power, the content loss with its square); a ratio of gradients
    holds for any weights. None = off: `style_weight` applies, as before the field existed."""
    warm_start: bool = _help(False, "Coarse-to-fine with adam: start each stage from the previous stage's Adam moments (resized) and step count instead of fresh ones (no-op with one stage or gd; not with lbfgs).")
    """Coarse-to-fine with Adam: each stage after the first starts from the previous stage's Adam state
    (moments resized bilinearly to the new size, step counter carried over) instead of fresh moments, as
    crowsonkb's style-transfer-pytorch does (docs/engine.md, "Warm-started stages"). A no-op with one stage
    and with gd (plain SGD keeps no state); refused with lbfgs. False = every stage restarts Adam, as before
    the field existed."""

    def __post_init__(self) -> None:
        _normalise_inputs(self)
        problems = validate_params(self)
        if problems:
            raise ValueError("; ".join(problems))

    def stages(self) -> tuple[tuple[int, int], ...]:
        """(long side, steps) per stage: the schedule, or one stage of size × steps."""
        return self.schedule if self.schedule else ((self.size, self.steps),)

    def replace(self, **changes: Any) -> StyleParams:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (enums as strings, tuples as lists) for run records."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out


def _normalise_inputs(p: StyleParams) -> None:
    """Accept the plain forms callers naturally write: enum values as strings, lists for tuples."""
    for name, enum_type in _ENUM_FIELDS.items():
        value = getattr(p, name)
        if isinstance(value, str) and not isinstance(value, Enum):
            try:
                object.__setattr__(p, name, enum_type(value))
            except ValueError:
                pass  # reported by validate_params with the allowed values
    for name in ("content_layers", "style_layers", "content_layer_weights", "style_layer_weights"):
        value = getattr(p, name)
        if isinstance(value, list):
            object.__setattr__(p, name, tuple(value))
    if isinstance(p.schedule, (list, tuple)) and all(isinstance(s, (list, tuple)) for s in p.schedule):
        object.__setattr__(p, "schedule", tuple(tuple(s) for s in p.schedule))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def validate_params(p: StyleParams | SimpleNamespace) -> list[str]:
    """Every problem with a parameter set, as messages naming the field; empty when valid.

    Only attributes are read, so `p` may also be a SimpleNamespace with StyleParams' fields: a candidate
    judged before it is built (the manifest scanner does this to report every bad column at once)."""
    from nst_core.layers import ALL_LAYER_NAMES  # local: layers imports nothing heavy, avoids a cycle

    problems: list[str] = []

    def finite(name: str, value: float, *, positive: bool = False, nonneg: bool = False) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            problems.append(f"{name} must be a finite number, got {value!r}")
        elif positive and value <= 0:
            problems.append(f"{name} must be > 0, got {value!r}")
        elif nonneg and value < 0:
            problems.append(f"{name} must be >= 0, got {value!r}")

    for name, count in (
        ("size", p.size),
        ("steps", p.steps),
        ("log_every", p.log_every),
        ("lbfgs_history", p.lbfgs_history),
    ):
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            problems.append(f"{name} must be a positive integer, got {count!r}")
    if isinstance(p.size, int) and p.size > MAX_SIZE:
        problems.append(f"size must be <= {MAX_SIZE}, got {p.size}")
    if isinstance(p.steps, int) and p.steps > MAX_STEPS:
        problems.append(f"steps must be <= {MAX_STEPS}, got {p.steps}")
    if isinstance(p.lbfgs_history, int) and p.lbfgs_history > MAX_LBFGS_HISTORY:
        problems.append(f"lbfgs_history must be <= {MAX_LBFGS_HISTORY}, got {p.lbfgs_history}")
    if not isinstance(p.seed, int) or isinstance(p.seed, bool) or not 0 <= p.seed < 2**63:
        problems.append(f"seed must be an integer in [0, 2**63), got {p.seed!r}")
    finite("lr", p.lr, positive=True)
    finite("content_weight", p.content_weight, nonneg=True)
    finite("style_weight", p.style_weight, nonneg=True)
    finite("tv_weight", p.tv_weight, nonneg=True)
    for name, value, limit in (
        ("lr", p.lr, MAX_LR),
        ("content_weight", p.content_weight, MAX_WEIGHT),
        ("style_weight", p.style_weight, MAX_WEIGHT),
        ("tv_weight", p.tv_weight, MAX_WEIGHT),
    ):
        if isinstance(value, (int, float)) and math.isfinite(value) and value > limit:
            problems.append(f"{name} must be <= {limit:g} (larger values overflow float32), got {value!r}")
    finite("style_scale", p.style_scale, positive=True)
    finite("early_stop", p.early_stop, nonneg=True)
    finite("ema_decay", p.ema_decay, nonneg=True)
    if isinstance(p.ema_decay, (int, float)) and math.isfinite(p.ema_decay) and p.ema_decay >= 1:
        problems.append(f"ema_decay must be within [0, 1), got {p.ema_decay!r}")
    if isinstance(p.ema_decay, (int, float)) and p.ema_decay > 0 and p.optimizer is OptimizerName.lbfgs:
        # L-BFGS's iterates are line-search minima, not noisy steps around one: their average is not a
        # better estimate, and a point between two accepted iterates may have a higher loss than both.
        problems.append("ema_decay applies to the adam and gd optimizers only; set ema_decay=0 with lbfgs")
    if not isinstance(p.warm_start, bool):
        problems.append(f"warm_start must be true or false, got {p.warm_start!r}")
    elif p.warm_start and p.optimizer is OptimizerName.lbfgs:
        # L-BFGS's state is a history of curvature pairs (s, y) at one size: resizing them would not give
        # pairs of the new stage's objective, so the quasi-Newton model would be wrong from its first step.
        problems.append(
            "warm_start carries Adam's moments between stages and applies to the adam optimizer; "
            "L-BFGS's curvature pairs cannot be resized to another stage's size: set warm_start=false with lbfgs"
        )
    if p.style_loss is StyleLossKind.w2 and p.style_normalization is StyleNormalization.common:
        problems.append(
            "style_normalization=common scales the Gram loss only; with style_loss=w2 leave it at paper"
        )
    if p.style_ratio is not None:
        finite("style_ratio", p.style_ratio, positive=True)
        if p.content_ratio is not None:
            problems.append(
                "style_ratio and content_ratio both set the style/content balance; set only one of them"
            )
        if isinstance(p.content_weight, (int, float)) and p.content_weight == 0:
            # The ratio is measured against α‖∇L_content‖, which is 0 for every image when α = 0.
            problems.append("style_ratio balances style against content and needs content_weight > 0")
    if p.content_ratio is not None:
        finite("content_ratio", p.content_ratio)
        if isinstance(p.content_ratio, (int, float)) and not 0.0 <= p.content_ratio <= 1.0:
            problems.append(f"content_ratio must be within [0, 1], got {p.content_ratio!r}")
    for kind, layers, weights in (
        ("content", p.content_layers, p.content_layer_weights),
        ("style", p.style_layers, p.style_layer_weights),
    ):
        if not layers:
            problems.append(f"{kind}_layers must name at least one layer")
        unknown = [name for name in layers if name not in ALL_LAYER_NAMES]
        if unknown:
            problems.append(
                f"unknown {kind} layer(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(ALL_LAYER_NAMES)}"
            )
        if weights is not None:
            if len(weights) != len(layers):
                problems.append(
                    f"{kind}_layer_weights has {len(weights)} values for {len(layers)} {kind}_layers"
                )
            for w in weights:
                finite(f"{kind}_layer_weights", w, nonneg=True)
    if p.schedule is not None:
        if not p.schedule:
            problems.append("schedule must have at least one (size, steps) stage")
        for stage in p.schedule:
            if (
                len(stage) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in stage)
                or stage[0] > MAX_SIZE
                or stage[1] > MAX_STEPS
            ):
                problems.append(
                    f"schedule stage {stage!r} must be (size, steps) positive integers, "
                    f"size <= {MAX_SIZE}, steps <= {MAX_STEPS}"
                )
    for name, enum_type in (
        ("optimizer", OptimizerName),
        ("init", Init),
        ("style_normalization", StyleNormalization),
        ("distance", Distance),
        ("pooling", Pooling),
        ("preserve_color", PreserveColor),
        ("precision", Precision),
        ("padding", Padding),
        ("style_loss", StyleLossKind),
    ):
        if not isinstance(getattr(p, name), enum_type):
            problems.append(f"{name} must be one of {[e.value for e in enum_type]}, got {getattr(p, name)!r}")
    return problems


STYLE_PARAM_FIELDS: tuple[dataclasses.Field[Any], ...] = tuple(dataclasses.fields(StyleParams))
"""The fields in declaration order, for deriving CLI options and manifest columns."""


__all__ = [
    "Arch",
    "DEFAULT_CONTENT_LAYERS",
    "DEFAULT_PARAMS",
    "DEFAULT_STYLE_LAYERS",
    "Distance",
    "Init",
    "MAX_SIZE",
    "MAX_STEPS",
    "OptimizerName",
    "Padding",
    "Pooling",
    "Precision",
    "PreserveColor",
    "STYLE_PARAM_FIELDS",
    "StyleLossKind",
    "StyleNormalization",
    "StyleParams",
    "enum_of",
    "field_help",
    "field_kind",
    "format_field",
    "parse_field",
    "validate_params",
]


_ENUM_FIELDS: dict[str, type[Enum]] = {
    "optimizer": OptimizerName,
    "init": Init,
    "style_normalization": StyleNormalization,
    "distance": Distance,
    "pooling": Pooling,
    "preserve_color": PreserveColor,
    "precision": Precision,
    "padding": Padding,
    "style_loss": StyleLossKind,
}
_FIELD_KINDS: dict[str, str] = {
    "size": "int",
    "steps": "int",
    "seed": "int",
    "log_every": "int",
    "lbfgs_history": "int",
    "lr": "float",
    "content_weight": "float",
    "style_weight": "float",
    "tv_weight": "float",
    "content_ratio": "float?",
    "style_ratio": "float?",
    "style_scale": "float",
    "early_stop": "float",
    "ema_decay": "float",
    "clamp": "bool",
    "warm_start": "bool",
    "content_layers": "layers",
    "style_layers": "layers",
    "content_layer_weights": "floats?",
    "style_layer_weights": "floats?",
    "schedule": "schedule?",
    **{name: "enum" for name in _ENUM_FIELDS},
}


def field_kind(name: str) -> str:
    """How a field is typed and parsed: int, float, bool, enum, layers, floats, schedule; a trailing `?`
    marks an optional field (None allowed). One table serves the manifest, the CLI and the docs."""
    return _FIELD_KINDS[name]


def enum_of(name: str) -> type[Enum] | None:
    """The Enum type of a choice field, or None."""
    return _ENUM_FIELDS.get(name)


def parse_field(name: str, text: str) -> Any:
    """Parse the text form of one field, as typed on a command line or stored in a manifest string column.

    Forms: numbers as usual; booleans true/false/1/0/yes/no; layer lists and weight lists comma-separated
    (`relu1_1,relu2_1`); schedules as comma-separated `size:steps` stages (`256:300,512:200`);
    `none`/empty for optional fields. Raises ValueError with a message naming the field.
    """
    if name not in _FIELD_KINDS:
        raise ValueError(f"unknown parameter {name!r}; known: {', '.join(_FIELD_KINDS)}")
    kind = _FIELD_KINDS[name]
    raw = text.strip()
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if optional and raw.lower() in ("", "none", "null"):
        return None
    try:
        if kind == "int":
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                value = int(value)
            return value
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind == "layers":
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind == "floats":
            return tuple(float(part) for part in raw.split(",") if part.strip())
        if kind == "schedule":
            stages = []
            for part in raw.split(","):
                size, steps = part.strip().split(":")
                stages.append((int(size), int(steps)))
            return tuple(stages)
        if kind == "enum":
            enum_type = _ENUM_FIELDS[name]
            try:
                return enum_type(raw.lower())
            except ValueError:
                raise ValueError(
                    f"{name} must be one of {', '.join(e.value for e in enum_type)}, got {raw!r}"
                ) from None
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: cannot parse {text!r} as {kind}") from None
    raise AssertionError(kind)


def format_field(name: str, value: Any) -> str:
    """Inverse of `parse_field`: the canonical text form (used for stable row ids and display)."""
    kind = _FIELD_KINDS[name].rstrip("?")
    if value is None:
        return "none"
    if kind == "schedule":
        return ",".join(f"{size}:{steps}" for size, steps in value)
    if kind in ("layers", "floats"):
        return ",".join(repr(float(v)) if kind == "floats" else str(v) for v in value)
    if isinstance(value, Enum):
        return str(value.value)
    if kind == "float":
        return repr(float(value))
    if kind == "bool":
        return "true" if value else "false"
    return str(value)


DEFAULT_PARAMS = StyleParams()
