"""Batched Gatys et al. optimisation of image pixels; the Stylizer is called by the CLI and the pipeline's GPU actors.

B images are optimised in one tensor with the SUM of their own losses, so each image's gradient is exactly
what it would be alone; Adam and gradient descent update elementwise, hence a batch reproduces per-image
runs. L-BFGS does not (one line search and one curvature history for the whole tensor would couple the
images), so it runs image by image.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, MutableMapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from nst_core.colour import combine_luminance, luminance, match_color_histogram, match_luminance
from nst_core.compiled import Backend, StepFunction
from nst_core.images import resize_long_side, resize_to, resized_shape
from nst_core.losses import (
    LOSS_TERMS,
    ContentLoss,
    StyleLoss,
    StyleLossW2,
    WeightedSum,
    layer_weights,
    total_loss,
    tv_loss,
)
from nst_core.masks import check_masks
from nst_core.params import (
    Init,
    OptimizerName,
    Padding,
    Pooling,
    Precision,
    PreserveColor,
    StyleLossKind,
    StyleParams,
)
from nst_core.precision import conv_autocast, cuda_run_settings, flush_denormals, resolve_precision
from nst_core.spatial import guided_style_term, is_guided
from nst_core.targets import Style, StyleTargets, compute_style_targets, needs_content, target_cache_key
from nst_core.vgg import VGGFeatures


@dataclass
class LossCurve:
    """Losses every `log_every` steps and after the last step: one list per name of `LOSS_TERMS`. Terms
    are weighted (α·L_c, β·L_s, tv·L_tv), so content + style + tv = total. `step` counts updates from the
    start of the run across stages."""

    step: list[int]
    total: list[float]
    content: list[float]
    style: list[float]
    tv: list[float]
    stage: list[int] = field(default_factory=list)


@dataclass
class ImageResult:
    image: Tensor
    """[3, H, W] float32 on the CPU, in [0, 1]."""
    curve: LossCurve
    final: dict[str, float]
    """The `LOSS_TERMS` of the returned image."""
    steps_run: int
    """Updates applied over all stages; fewer than planned when early stopping fired."""
    style_weights: tuple[float, ...] = ()
    """β each stage used for this image: `style_weight` (1 − λ with `content_ratio`), or the value
    `style_ratio` measured for this image and stage."""


@dataclass(frozen=True)
class StepReport:
    """Progress after one update; built from Python counters only, so reporting never waits for the device."""

    stage: int
    step: int
    steps: int


@dataclass
class _StageLog:
    offset: int
    steps: list[int]
    values: Tensor  # [K, B, len(LOSS_TERMS)] on device until the end of the run
    steps_run: Tensor  # [B]
    final: Tensor  # [B, len(LOSS_TERMS)]
    final_replaces_last: bool = False
    """The final row is the returned image's loss even where a logged row has its step: with `ema_decay`
    that row holds the iterate's loss, the final one the average's."""
    style_weights: Tensor | None = None  # [B]: β of each image in this stage


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """A per-image vector [B] shaped to broadcast over `like` [B, ...] (masks, normalisers, factors)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class AdamCarry:
    """Adam's state handed from one coarse-to-fine stage to the next (`warm_start`), at the old size.

    `exp_avg` and `exp_avg_sq` are [B, C, h, w]; every image's moments are those of `step` updates (an
    image that stopped early has its moments rescaled to that count, see `Stylizer._optimise`)."""

    exp_avg: Tensor
    exp_avg_sq: Tensor
    step: int


def resize_adam_state(carry: AdamCarry, shape: tuple[int, int]) -> AdamCarry:
    """The moments resized to `shape` as the image is (`images.resize_to`'s bilinear, antialiased when
    shrinking), without its clamp.

    Bilinear weights, antialiased or not, are non-negative and sum to 1, so each new value is a convex
    combination of old ones: exp_avg_sq stays ≥ 0 (Adam takes its square root) and a constant field stays
    constant. Bicubic (crowsonkb's choice for exp_avg) has negative lobes and would need a relu on
    exp_avg_sq; one filter for both keeps the two moments of a pixel from the same neighbours.
    """

    return AdamCarry(
        resize_to(carry.exp_avg, shape, clamp=False), resize_to(carry.exp_avg_sq, shape, clamp=False), carry.step
    )


class _MovingAverage:
    """Bias-corrected exponential moving average of each image's iterates (`ema_decay` d).

    ema_t = d·ema_{t−1} + (1 − d)·x_t from ema_0 = 0, returned as ema_t / (1 − d^t). The normaliser
    1 − d^t is accumulated by the same recursion (c_t = d·c_{t−1} + (1 − d)) under the same mask, so an
    image that stopped early freezes its average with its pixels, as it would alone. Deviation from Gatys
    et al. 2016 (they return the last iterate): averaging damps the step-to-step flicker of Adam's pixels.
    """

    def __init__(self, x: Tensor, decay: float) -> None:
        self.decay = float(decay)
        self.sum = torch.zeros_like(x, memory_format=torch.contiguous_format)
        self.norm = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def update(self, x: Tensor, active: Tensor) -> None:
        d = self.decay
        mask = _per_image(active, x)
        self.sum = torch.where(mask, self.sum * d + x * (1.0 - d), self.sum)
        self.norm = torch.where(active, self.norm * d + (1.0 - d), self.norm)

    def value(self, x: Tensor, clamp: bool) -> Tensor:
        """The average; x itself for an image with no update yet (its average is undefined)."""
        norm = _per_image(self.norm, x)
        out = torch.where(norm > 0, self.sum / norm.clamp_min(torch.finfo(x.dtype).tiny), x)
        return out.clamp(0.0, 1.0) if clamp else out  # an average of clamped pixels, up to rounding


class _Objective(nn.Module):
    """[B, len(LOSS_TERMS)] per image: total, α·L_c, β·L_s, tv·L_tv of the pixels x (LOSS_TERMS' order).

    One module per optimisation stage with its targets as buffers, so a compiled step treats them as
    graph inputs and reuses one graph for every batch of the same shape and settings.
    """

    def __init__(
        self,
        model: VGGFeatures,
        content_term: WeightedSum,
        style_term: WeightedSum,
        params: StyleParams,
        *,
        lum: bool,
        channels_last: bool,
        device: torch.device,
    ) -> None:
        super().__init__()
        self.model = model
        self.content_term = content_term
        self.style_term = style_term
        self.layers = tuple(dict.fromkeys((*params.content_layers, *params.style_layers)))
        self.pooling = Pooling(params.pooling)
        self.padding = Padding(params.padding)
        self.precision = Precision(params.precision)
        self.device = device
        self.lum = lum
        self.channels_last = channels_last
        self.tv_weight = float(params.tv_weight)
        if params.content_ratio is not None:
            self.alpha, self.beta = float(params.content_ratio), 1.0 - float(params.content_ratio)
        else:
            self.alpha, self.beta = float(params.content_weight), float(params.style_weight)
        # Per-image β ([B]) once `set_style_weights` is called (style_ratio); a buffer, so a compiled
        # step takes it as a graph input. None keeps the plain float β and its arithmetic bit for bit.
        self.beta_per_image: Tensor | None
        self.register_buffer("beta_per_image", None)

    def set_style_weights(self, beta: Tensor) -> None:
        self.beta_per_image = beta

    def style_weights(self, batch: int) -> Tensor:
        """[B] β of each image."""
        if self.beta_per_image is not None:
            return self.beta_per_image.detach().clone()
        return torch.full((batch,), self.beta, device=self.device)

    def terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Unweighted L_content and L_style per image ([B] each)."""
        image = x.expand(-1, 3, -1, -1) if self.lum else x
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with conv_autocast(self.device, self.precision):
            feats = self.model(image, self.layers, self.pooling, self.padding)
        return self.content_term(feats), self.style_term(feats)

    def forward(self, x: Tensor) -> Tensor:
        lc, ls = self.terms(x)
        lt = tv_loss(x) if self.tv_weight > 0 else torch.zeros_like(lc)
        beta = self.beta if self.beta_per_image is None else self.beta_per_image
        total = total_loss(lc, ls, lt, alpha=self.alpha, beta=beta, tv_weight=self.tv_weight)
        return torch.stack([total, self.alpha * lc, beta * ls, self.tv_weight * lt], dim=1)


def balanced_style_weights(objective: _Objective, reference: Tensor, ratio: float, fallback: float) -> Tensor:
    """[B] β with ‖β ∇L_style‖ = ratio · ‖α ∇L_content‖ for each image at its reference pixels.

    Both norms are gradients with respect to the optimised pixels and are reduced per image (sums of
    squares over each image's own pixels), so an image's β does not depend on the rest of its batch.
    Where either norm is 0 or not finite the ratio is undefined and `fallback` (style_weight) is used.
    """
    x = reference.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        lc, ls = objective.terms(x)
        (grad_c,) = torch.autograd.grad(lc.sum(), x, retain_graph=True)
        (grad_s,) = torch.autograd.grad(ls.sum(), x)
    norm_c = objective.alpha * grad_c.double().flatten(1).square().sum(1).sqrt()
    norm_s = grad_s.double().flatten(1).square().sum(1).sqrt()
    beta = ratio * norm_c / norm_s.clamp_min(torch.finfo(torch.float64).tiny)
    defined = (norm_c > 0) & (norm_s > 0) & torch.isfinite(beta)
    return torch.where(defined, beta, torch.full_like(beta, fallback)).float()


class Stylizer:
    """Holds a frozen VGG on one device and stylises batches of images with it.

    Execution settings (they change speed, not the image beyond floating-point rounding, so they are
    not StyleParams fields): `channels_last` (default: on CUDA), `autotune` (cuDNN algorithm search,
    default: on CUDA), `compile` (torch.compile the per-step loss and its backward with `compile_backend`
    and `compile_mode`, e.g. "reduce-overhead" for CUDA graphs; falls back to eager with a
    RuntimeWarning if compiling fails; see `compiled.StepFunction`).
    """

    def __init__(
        self,
        model: VGGFeatures,
        device: str | torch.device | None = None,
        *,
        channels_last: bool | None = None,
        autotune: bool | None = None,
        compile: bool = False,
        compile_backend: Backend = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        self.device = torch.device(device) if device is not None else model.mean.device
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.autotune = self.device.type == "cuda" if autotune is None else autotune
        self.step_function = StepFunction(compile=compile, backend=compile_backend, mode=compile_mode)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.cache_hits = 0
        self.cache_misses = 0

    # ------------------------------------------------------------------ public
    def stylize(
        self,
        contents: Sequence[Tensor],
        styles: Style | Sequence[Style],
        params: StyleParams,
        *,
        cache: MutableMapping[Hashable, StyleTargets] | None = None,
        init_images: Sequence[Tensor] | None = None,
        callback: Callable[[StepReport], None] | None = None,
        content_masks: Sequence[Tensor | None] | None = None,
    ) -> list[ImageResult]:
        """Stylise every content image; result i belongs to contents[i].

        contents: [3,H,W] in [0,1], any size (resized to the stage long side). styles: one for all or one
        per content. init_images (one per content) replace params.init. content_masks (one [H, W] label map
        or None per content, `nst_core.masks`): spatial control, region v styled by the style's region v;
        checked here (MaskError), callers that batch rows check each row first with `masks.check_masks`.
        Contents whose shapes agree at every stage are optimised as one batch.
        """
        contents = list(contents)
        for i, c in enumerate(contents):
            if not isinstance(c, Tensor) or c.dim() != 3 or c.shape[0] != 3:
                shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
                raise ValueError(f"content {i} must be a [3, H, W] tensor, got {shape}")
        if isinstance(styles, Style):
            style_list = [styles] * len(contents)
        else:
            style_list = list(styles)
            if len(style_list) != len(contents):
                raise ValueError(
                    f"{len(style_list)} styles for {len(contents)} contents (give one, or one per content)"
                )
        if init_images is not None and len(init_images) != len(contents):
            raise ValueError(f"{len(init_images)} init images for {len(contents)} contents")
        masks: list[Tensor | None] = list(content_masks) if content_masks is not None else [None] * len(contents)
        if len(masks) != len(contents):
            raise ValueError(f"{len(masks)} content masks for {len(contents)} contents (None for no mask)")
        for i, (c, m, st) in enumerate(zip(contents, masks, style_list, strict=True)):
            check_masks((int(c.shape[1]), int(c.shape[2])), m, st, names=(f"content mask {i}",))
        # `auto` becomes this device's arithmetic once, so targets, their cache keys and metadata name it.
        params = params.replace(precision=resolve_precision(params.precision, self.device))
        stages = params.stages()
        groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for i, c in enumerate(contents):
            shapes = tuple(resized_shape(int(c.shape[1]), int(c.shape[2]), side) for side, _ in stages)
            groups.setdefault(shapes, []).append(i)
        memo: dict[tuple[int, int], StyleTargets] = {}
        results: list[ImageResult | None] = [None] * len(contents)
        with flush_denormals(self.device), cuda_run_settings(
            self.device, params.precision, autotune=self.autotune
        ):
            self._run_groups(
                contents, style_list, init_images, masks, groups, params, cache, memo, callback, results
            )
        return [r for r in results if r is not None]

    def _run_groups(
        self,
        contents: list[Tensor],
        style_list: list[Style],
        init_images: Sequence[Tensor] | None,
        masks: list[Tensor | None],
        groups: dict[tuple[tuple[int, int], ...], list[int]],
        params: StyleParams,
        cache: MutableMapping[Hashable, StyleTargets] | None,
        memo: dict[tuple[int, int], StyleTargets],
        callback: Callable[[StepReport], None] | None,
        results: list[ImageResult | None],
    ) -> None:
        for shapes, members in groups.items():
            # L-BFGS shares one line search and curvature history across its parameter tensor, which
            # would couple the images of a batch: run it per image (see module docstring).
            chunks = [[i] for i in members] if params.optimizer is OptimizerName.lbfgs else [members]
            for chunk in chunks:
                out = self._run(
                    [contents[i] for i in chunk],
                    [style_list[i] for i in chunk],
                    None if init_images is None else [init_images[i] for i in chunk],
                    [masks[i] for i in chunk],
                    shapes,
                    params,
                    cache,
                    memo,
                    callback,
                )
                for i, r in zip(chunk, out, strict=True):
                    results[i] = r

    def style_targets(
        self,
        style: Style,
        content_shape: tuple[int, int],
        params: StyleParams,
        *,
        content: Tensor | None = None,
        cache: MutableMapping[Hashable, StyleTargets] | None = None,
    ) -> StyleTargets:
        """Targets for one style and stage, through `cache` when the style has a key (counts hits/misses)."""
        key = target_cache_key(style, content_shape, params, content=content)
        full_key = (
            None
            if key is None
            else (self.model.arch.value, self.model.weights_source, self.model.weights_sha256, key)
        )
        if cache is not None and full_key is not None:
            hit = cache.get(full_key)
            if hit is not None:
                self.cache_hits += 1
                return hit.to(self.device)
            self.cache_misses += 1
        targets = compute_style_targets(
            self.model,
            style,
            content_long_side=max(content_shape),
            params=params,
            content=content,
            device=self.device,
        )
        if cache is not None and full_key is not None:
            cache[full_key] = targets
        return targets

    # ------------------------------------------------------------------ internals
    def _pick_targets(
        self,
        styles: list[Style],
        content: Tensor,
        params: StyleParams,
        cache: MutableMapping[Hashable, StyleTargets] | None,
        memo: dict[tuple[int, int], StyleTargets],
    ) -> list[StyleTargets]:
        """Each image's targets at this stage (one object shared by the images of one content-independent style)."""
        shape = (int(content.shape[-2]), int(content.shape[-1]))
        per_content = needs_content(params)
        picked: list[StyleTargets] = []
        for b, style in enumerate(styles):
            memo_key = (id(style), max(shape))
            if not per_content and memo_key in memo:
                picked.append(memo[memo_key])
                continue
            t = self.style_targets(
                style, shape, params, content=content[b] if per_content else None, cache=cache
            )
            if not per_content:
                memo[memo_key] = t
            picked.append(t)
        return picked

    def _init(
        self,
        b_contents: Tensor,
        styles: list[Style],
        inits: list[Tensor] | None,
        params: StyleParams,
        lum: bool,
    ) -> Tensor:
        shape = (int(b_contents.shape[-2]), int(b_contents.shape[-1]))
        if inits is not None:
            x = torch.stack([resize_to(t.to(self.device).float(), shape) for t in inits])
            return luminance(x).clamp(0, 1) if lum else x
        if params.init is Init.content:
            return luminance(b_contents).clamp(0, 1) if lum else b_contents.clone()
        if params.init is Init.noise:
            return self._noise(len(styles), shape, params.seed, lum)
        out = []
        for b, style in enumerate(styles):
            s = resize_to(style.images[0].to(self.device).float(), shape)
            if params.preserve_color is PreserveColor.histogram:
                s = match_color_histogram(s, b_contents[b])
            elif lum:
                s = match_luminance(luminance(s), luminance(b_contents[b])).clamp(0, 1)
            out.append(s)
        return torch.stack(out)

    def _noise(self, batch: int, shape: tuple[int, int], seed: int, lum: bool) -> Tensor:
        """Each image gets the noise of generator(seed) whatever its batch, so runs are reproducible alone."""
        g = torch.Generator().manual_seed(seed)
        channels = 1 if lum else 3
        return torch.stack(
            [torch.rand((channels, *shape), generator=g.manual_seed(seed)) for _ in range(batch)]
        ).to(self.device)

    def _run(
        self,
        contents: list[Tensor],
        styles: list[Style],
        inits: list[Tensor] | None,
        masks: list[Tensor | None],
        shapes: tuple[tuple[int, int], ...],
        params: StyleParams,
        cache: MutableMapping[Hashable, StyleTargets] | None,
        memo: dict[tuple[int, int], StyleTargets],
        callback: Callable[[StepReport], None] | None,
    ) -> list[ImageResult]:
        lum = params.preserve_color is PreserveColor.luminance
        logs: list[_StageLog] = []
        x_prev: Tensor | None = None
        carry: AdamCarry | None = None
        offset = 0
        content = torch.empty(0)
        last = len(shapes) - 1
        for stage, ((_, steps), shape) in enumerate(zip(params.stages(), shapes, strict=True)):
            content = torch.stack([resize_to(c.to(self.device).float(), shape) for c in contents])
            if x_prev is None:
                x0 = self._init(content, styles, inits, params, lum)
            else:
                # Coarse-to-fine: each stage starts from the previous result, upsampled.
                x0 = resize_to(x_prev, shape)
            keep = params.warm_start and params.optimizer is OptimizerName.adam and stage < last
            x, log, carry = self._optimise(
                x0,
                content,
                styles,
                masks,
                params,
                cache,
                memo,
                stage,
                steps,
                offset,
                lum,
                callback,
                None if carry is None else resize_adam_state(carry, shape),
                keep,
            )
            logs.append(log)
            x_prev = x
            offset += steps
        assert x_prev is not None
        images = combine_luminance(x_prev, content) if lum else x_prev.clamp(0, 1) if params.clamp else x_prev
        return self._results(images, logs)

    def _optimise(
        self,
        x0: Tensor,
        content: Tensor,
        styles: list[Style],
        masks: list[Tensor | None],
        params: StyleParams,
        cache: MutableMapping[Hashable, StyleTargets] | None,
        memo: dict[tuple[int, int], StyleTargets],
        stage: int,
        steps: int,
        offset: int,
        lum: bool,
        callback: Callable[[StepReport], None] | None,
        warm: AdamCarry | None = None,
        keep_state: bool = False,
    ) -> tuple[Tensor, _StageLog, AdamCarry | None]:
        """One stage. `warm`: Adam's state to start from (already at this stage's size); `keep_state`:
        return Adam's state at the end for the next stage (`warm_start`), else None."""
        batch = x0.shape[0]
        picked = self._pick_targets(styles, content, params, cache, memo)
        content_view = luminance(content).clamp(0, 1).expand(-1, 3, -1, -1) if lum else content
        with torch.no_grad(), conv_autocast(self.device, params.precision):
            content_feats = self.model(
                self._prep(content_view), params.content_layers, params.pooling, params.padding
            )
        content_term = WeightedSum(
            {n: ContentLoss(content_feats[n], params.distance) for n in params.content_layers},
            layer_weights(params.content_layers, params.content_layer_weights),
        )
        if is_guided(masks, picked):
            shape = (int(x0.shape[-2]), int(x0.shape[-1]))
            style_term = guided_style_term(picked, masks, shape, params, self.model.arch.value, self.device)
        else:
            targets = _stacked_parts(picked, params)
            style_term = WeightedSum(
                {
                    n: StyleLossW2(*targets[n])
                    if params.style_loss is StyleLossKind.w2
                    else StyleLoss(targets[n][0], params.style_normalization, params.distance)
                    for n in params.style_layers
                },
                layer_weights(params.style_layers, params.style_layer_weights),
            )
        objective = _Objective(
            self.model,
            content_term,
            style_term,
            params,
            lum=lum,
            channels_last=self.channels_last,
            device=self.device,
        )
        if params.style_ratio is not None:
            # Reference point: the seeded noise of init=noise at this stage's size, whatever the start.
            # At init=content the content gradient is exactly 0 (and at init=style the style gradient
            # nearly so), so the start point would leave the ratio undefined; noise is far from both
            # targets, deterministic per image and the paper's own start (docs/engine.md).
            reference = self._noise(batch, (int(x0.shape[-2]), int(x0.shape[-1])), params.seed, lum)
            objective.set_style_weights(
                balanced_style_weights(objective, reference, params.style_ratio, params.style_weight)
            )
        betas = objective.style_weights(batch)
        step_function = self.step_function

        x = x0.detach().clone().float().requires_grad_(True)
        if params.optimizer is OptimizerName.lbfgs:
            x, log = _lbfgs(objective, self.step_function, x, params, stage, steps, offset, callback)
            log.style_weights = betas
            return x, log, None
        opt: torch.optim.Optimizer
        if params.optimizer is OptimizerName.adam:
            opt = torch.optim.Adam([x], lr=params.lr)
            if warm is not None:
                # Warm start: the previous stage's moments and its step count. The count carries over
                # because bias correction divides by 1 − β^t to undo the zero start of the moments; these
                # moments are not zero, and t = 1 would inflate the carried m by 10× and v by 1000×.
                opt.load_state_dict(
                    {
                        "state": {
                            0: {
                                "step": torch.tensor(float(warm.step)),
                                "exp_avg": warm.exp_avg,
                                "exp_avg_sq": warm.exp_avg_sq,
                            }
                        },
                        "param_groups": opt.state_dict()["param_groups"],
                    }
                )
        else:
            opt = torch.optim.SGD([x], lr=params.lr)

        log_steps = list(range(0, steps, params.log_every))
        values = torch.zeros(len(log_steps), batch, len(LOSS_TERMS), device=self.device)
        steps_run = torch.zeros(batch, dtype=torch.long, device=self.device)
        early = params.early_stop > 0
        active = torch.ones(batch, dtype=torch.bool, device=self.device)
        prev_total: Tensor | None = None
        ema = _MovingAverage(x.detach(), params.ema_decay) if params.ema_decay > 0 else None
        keep_state = keep_state and params.optimizer is OptimizerName.adam
        start_step = 0 if warm is None else warm.step
        # With early stopping and a state to hand on, a stopped image's moments are frozen with its
        # pixels: otherwise they would go on averaging its gradient for as long as the rest of the batch
        # runs, and the next stage of this image would depend on the other rows.
        freeze_state = keep_state and early
        # No host-device synchronisation in this loop (no .item(), float(), tensor truthiness, printing):
        # the host queues steps ahead of the GPU. The one exception is the early-stop check below.
        for step in range(steps):
            record = step % params.log_every == 0
            current = step_function(objective, x)
            x_old = x.detach().clone() if early else None
            state_old = (
                [opt.state[x][k].clone() for k in ("exp_avg", "exp_avg_sq")]
                if freeze_state and len(opt.state[x]) > 0
                else None
            )
            if record:
                k = step // params.log_every
                values[k] = current
                if early:
                    total_now = current[:, 0]
                    if prev_total is not None:
                        rel = (prev_total - total_now).abs() / prev_total.abs().clamp_min(1e-30)
                        active &= rel >= params.early_stop
                    prev_total = total_now
            opt.step()
            with torch.no_grad():
                if params.clamp:
                    x.clamp_(0.0, 1.0)
                if x_old is not None:
                    # An image that stopped early keeps its pixels while the rest of the batch goes on.
                    x.copy_(torch.where(_per_image(active, x), x, x_old))
                if state_old is not None:
                    for key, old in zip(("exp_avg", "exp_avg_sq"), state_old, strict=True):
                        moment = opt.state[x][key]
                        moment.copy_(torch.where(_per_image(active, x), moment, old))
                steps_run += active
                if ema is not None:
                    ema.update(x.detach(), active)
            if early and record and step > 0 and not bool(active.any()):
                break  # one host sync per log interval, and only when early stopping is on
            if callback is not None:
                callback(StepReport(stage=stage, step=step + 1, steps=steps))
        result = x.detach() if ema is None else ema.value(x.detach(), params.clamp)
        with torch.no_grad():
            final = objective(result)  # eager: one evaluation is not worth an inference graph
        carry = self._carry(opt, x, start_step, steps, steps_run, early) if keep_state else None
        return result, _StageLog(offset, log_steps, values, steps_run, final, ema is not None, betas), carry

    @staticmethod
    def _carry(
        opt: torch.optim.Optimizer, x: Tensor, start_step: int, steps: int, steps_run: Tensor, early: bool
    ) -> AdamCarry:
        """Adam's moments at the end of a stage, every image's at the common count `start_step + steps`.

        The count is the steps planned so far, not torch's counter (which stops when the whole batch has
        stopped early) nor the image's own (one counter serves the batch): an image that ran t < T steps
        has its moments rescaled by (1 − β^T) / (1 − β^t), so that its bias-corrected moments
        m / (1 − β₁^T) and v / (1 − β₂^T) are those it had alone. Without early stopping t = T and the
        factor is exactly 1.
        """
        state = opt.state[x]
        total = start_step + steps
        m, v = state["exp_avg"].detach().clone(), state["exp_avg_sq"].detach().clone()
        if early and bool((steps_run < steps).any()):  # one sync per stage boundary, with early stopping
            beta1, beta2 = opt.param_groups[0]["betas"]
            age = (steps_run + start_step).double().clamp_min(1)
            for t, beta in ((m, beta1), (v, beta2)):
                factor = (1 - beta**total) / (1 - beta**age)
                t.mul_(_per_image(factor.to(t.dtype), x))
        return AdamCarry(m, v, total)

    def _prep(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @staticmethod
    def _results(images: Tensor, logs: list[_StageLog]) -> list[ImageResult]:
        host = [
            (log.offset, log.steps, log.values.cpu(), log.steps_run.cpu(), log.final.cpu()) for log in logs
        ]  # the only device → host copies of the run
        betas = [log.style_weights.cpu().tolist() if log.style_weights is not None else None for log in logs]
        replaces = [log.final_replaces_last for log in logs]
        images = images.detach().float().cpu()
        out = []
        for b in range(images.shape[0]):
            rows: list[tuple[int, int, list[float]]] = []
            for stage, (offset, steps, values, steps_run, final) in enumerate(host):
                ran = int(steps_run[b])
                for k, s in enumerate(steps):
                    if s <= ran:
                        rows.append((stage, offset + s, values[k, b].tolist()))
                if not rows or rows[-1][1] != offset + ran:
                    rows.append((stage, offset + ran, final[b].tolist()))
                elif replaces[stage] and rows[-1][0] == stage:
                    rows[-1] = (stage, offset + ran, final[b].tolist())
            last = host[-1][4][b].tolist()
            series = {name: [r[2][k] for r in rows] for k, name in enumerate(LOSS_TERMS)}
            curve = LossCurve(step=[r[1] for r in rows], stage=[r[0] for r in rows], **series)
            out.append(
                ImageResult(
                    image=images[b].clone(),
                    curve=curve,
                    final=dict(zip(LOSS_TERMS, last, strict=True)),
                    steps_run=int(sum(int(h[3][b]) for h in host)),
                    style_weights=tuple(float(v[b]) for v in betas if v is not None),
                )
            )
        return out


_MAX_LINE_SEARCH = 25
"""Evaluations torch's strong-Wolfe search may make per iteration (its fixed `max_ls`)."""


def _stacked_parts(picked: list[StyleTargets], params: StyleParams) -> dict[str, tuple[Tensor, ...]]:
    """Per style layer (Â,) for Gram, (μ_s, Σ_s, Σ_s^½) for W2: with a leading 1 when one
    content-independent style serves the batch, else B ([B,N,N] Grams, [B,N] means)."""
    w2 = params.style_loss is StyleLossKind.w2
    if all(t is picked[0] for t in picked):
        return {k: tuple(v.unsqueeze(0) for v in picked[0].parts(k, w2)) for k in params.style_layers}
    return {
        k: tuple(torch.stack(vs) for vs in zip(*(t.parts(k, w2) for t in picked), strict=True))
        for k in params.style_layers
    }


def _free(x: Tensor, grad: Tensor) -> Tensor:
    """Pixels that −grad may move without leaving [0, 1]: the projected gradient's support (x is kept in
    the box after every iteration, so outside it only x on a bound matters)."""
    return ~(((x <= 0) & (grad > 0)) | ((x >= 1) & (grad < 0)))


def _lbfgs(
    objective: nn.Module,
    step_function: StepFunction,
    x: Tensor,
    params: StyleParams,
    stage: int,
    steps: int,
    offset: int,
    callback: Callable[[StepReport], None] | None,
) -> tuple[Tensor, _StageLog]:
    """L-BFGS over one image's pixels, one `torch.optim.LBFGS.step` (max_iter=1) per iteration.

    Line search: torch gives strong Wolfe `max_eval − 1` evaluations (max_ls = max_eval − current_evals);
    with max_iter=1 its default max_eval is 1, which left the search none: a failed first trial meant
    step length 0 and every later step retried it. Here the search gets `_MAX_LINE_SEARCH`.

    Evaluations: each `step` call starts by evaluating the current point, which the previous call's
    line search has already evaluated (its accepted trial, bit for bit x_k + t·d). The closure therefore
    returns that evaluation again (loss terms and gradient) when clamp(x) is unchanged, and evaluates only
    when the search accepted an earlier trial than its last. The curvature history and step state persist
    across calls (torch keeps them in `opt.state`). When the unit step passes the Wolfe test, which is the
    common case, an iteration costs one evaluation: 1.2-1.6 per iteration in all (full VGG19 at 128 px,
    photo × texture, 100 iterations: 122 from content, 142 from noise).

    Bounds (with `clamp`): the line search minimises f(clamp(x)), so it judges the pixels that will be
    kept, and x is clamped after every iteration, as in the Adam loop. The gradient it sees is the
    projected one of a box-constrained problem: zero for a pixel that sits on a bound and would leave the
    box along −g (at 0 with g > 0, at 1 with g < 0), so the quasi-Newton model does not count on moves the
    clamp undoes. Passing those gradients through (as torch.clamp's backward does at the bounds) made the
    line search fail its first trial most of the time: 7-9 evaluations per iteration (96 px, 100
    iterations: 703 from content, 891 from noise, against 138 and 160 projected) and a worse loss at the
    end (323 vs 315). The alternatives measured worse still: clamping only the output let the pixels drift
    (a 64 px run: loss 27 unclamped, 160 once clamped); f(clamp(x)) with zero gradient outside the box
    froze every pixel that left it and stalled within ten iterations from noise; f(x) with a clamp after
    each iteration made the line search work against the clamp (5.6 evaluations per iteration and a
    rising loss).

    Tolerances are off (0, as neural-style-pt runs them): torch's defaults are absolute (max |gradient|
    ≤ 1e-7), so they depend on the loss scale and ended runs with small weights before any update. When
    a line search finds no decrease (step 0: the clamps make the curvature model imperfect), the history
    is dropped and the next iteration restarts from steepest descent; a run ends early only when that
    restart finds no decrease either, and `steps_run` says so. `params.lr` does not apply: the quasi-Newton step is 1 (the first
    iteration's is 1/|g|₁, torch) and the line search adapts it.
    """
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=1,
        max_eval=_MAX_LINE_SEARCH + 1,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        history_size=params.lbfgs_history,
        line_search_fn="strong_wolfe",
    )
    cached: list[Tensor] = []  # [point, loss terms, gradient] of the last evaluation
    firsts: list[Tensor] = []  # the loss terms at the start of each iteration
    scale: list[float] = []  # 1 / f(x₀), set by the first evaluation

    def closure() -> Tensor:
        with torch.no_grad():
            y0 = x.clamp(0.0, 1.0) if params.clamp else x.detach().clone()
        if cached and torch.equal(cached[0], y0):  # a sync, as every line-search evaluation is
            terms, grad = cached[1], cached[2]
        else:
            y = y0.requires_grad_(True)
            terms = step_function(objective, y)
            assert y.grad is not None
            grad = y.grad
            y.requires_grad_(False)
            cached[:] = [y0, terms, grad]
        if not scale:
            # L-BFGS sees f / f(x₀): torch's curvature test (yᵀs > 1e-10) and its first step
            # (min(1, 1/|g|₁)) are absolute, so an unscaled objective made small weights stall.
            scale.append(1.0 / max(float(terms[:, 0].sum()), 1e-30))
        x.grad = (grad * _free(x, grad) if params.clamp else grad.clone()) * scale[0]
        if first[0]:
            firsts.append(terms)
            first[0] = False
        return terms[:, 0].sum() * scale[0]

    first = [True]
    log_steps = list(range(0, steps, params.log_every))
    early = params.early_stop > 0
    done = 0
    prev_total: float | None = None
    restarted = False
    for step in range(steps):
        first[0] = True
        before = x.detach().clone()
        opt.step(closure)
        current = firsts[-1]
        if early and step % params.log_every == 0:
            total_now = float(current[0, 0])  # one sync per log interval, as in the Adam loop
            if prev_total is not None and abs(prev_total - total_now) < params.early_stop * max(
                abs(prev_total), 1e-30
            ):
                with torch.no_grad():
                    x.copy_(before)  # as the Adam loop masks the update of the step that stops
                break
            prev_total = total_now
        with torch.no_grad():
            if params.clamp:
                x.clamp_(0.0, 1.0)
        done = step + 1
        if callback is not None:
            callback(StepReport(stage=stage, step=done, steps=steps))
        if torch.equal(before, x.detach()):  # the line search found no decrease (or the gradient is 0)
            if restarted:
                break  # steepest descent from here found none either: nothing left to gain
            opt.state.clear()  # drop the curvature history: the next iteration is a steepest-descent one
            restarted = True
        else:
            restarted = False
    with torch.no_grad():
        final = objective(x.detach())
    logged = [s for s in log_steps if s < done]
    values = (
        torch.stack([firsts[s] for s in logged])
        if logged
        else torch.zeros(0, 1, len(LOSS_TERMS), device=x.device)
    )
    steps_run = torch.full((1,), done, dtype=torch.long, device=x.device)
    return x.detach(), _StageLog(offset, logged, values, steps_run, final)

def stylize_one(
    model: VGGFeatures,
    content: Tensor,
    style: Tensor | Style,
    params: StyleParams,
    *,
    cache: MutableMapping[Hashable, StyleTargets] | None = None,
    init_images: Sequence[Tensor] | None = None,
    callback: Callable[[StepReport], None] | None = None,
) -> ImageResult:
    """Convenience wrapper: one content, one style image (or Style); the keywords are `Stylizer.stylize`'s."""
    s = style if isinstance(style, Style) else Style((style,))
    return Stylizer(model).stylize([content], s, params, cache=cache, init_images=init_images, callback=callback)[0]


__all__ = [
    "LOSS_TERMS",
    "AdamCarry",
    "ImageResult",
    "LossCurve",
    "StepReport",
    "Stylizer",
    "resize_adam_state",
    "resize_long_side",
    "stylize_one",
]
