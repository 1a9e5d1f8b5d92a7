"""`nst demo`: a full `nst run` of the bundled example manifest on an embedded local Ray.

Registered on the root app by pipeline/cli/app.py; the README's first command. It is the only command that
may fall back to random weights, and it says so loudly, because its job is to work on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.panel import Panel

from nst_core.params import StyleParams
from pipeline.cli.options import QuietOpt
from pipeline.cli.progress import RunProgress
from pipeline.cli.run import print_summary
from pipeline.run.manifest_run import run_manifest
from pipeline.store.errors import RunError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""pipeline/examples: the bundled photos and styles (package data)."""


console = Console(stderr=True)


def example_manifest(path: Path) -> int:
    """Every bundled content photo × every bundled style, as a Parquet manifest; returns the row count."""
    contents = sorted((EXAMPLES / "content").glob("*.jpg"))
    styles = sorted((EXAMPLES / "style").glob("*.*"))
    rows = [(str(c), str(s)) for c in contents for s in styles]
    if not rows:
        raise RunError(
            f"the bundled example images are missing from {EXAMPLES} ({len(contents)} photos, {len(styles)} "
            "styles): reinstall the package"
        )
    table = pa.table({"content_uri": [c for c, _ in rows], "style_uri": [s for _, s in rows]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return len(rows)


def imagenet_checkpoint_path() -> Path:
    """Where torchvision's download cache keeps the VGG19 ImageNet weights (honours TORCH_HOME)."""
    from nst_core.vgg import imagenet_checkpoint_path as checkpoint_path

    return checkpoint_path("vgg19")


def demo_weights(requested: str | None) -> str:
    """The requested weights, else ImageNet when already cached, else `random:0` with a loud warning."""
    if requested is not None:
        return requested
    cached = imagenet_checkpoint_path()
    if cached.exists():
        return "imagenet"
    console.print(
        Panel(
            f"ImageNet VGG19 weights are not in the torch cache ({cached}).\n"
            "The demo continues with seeded RANDOM weights (random:0): colours and textures still transfer, "
            "but results are not what trained weights give.\nTo use real weights, place vgg19-dcbb9e9d.pth "
            "there (or set TORCH_HOME), or pass --weights PATH_OR_URI.",
            title="[bold yellow]warning: random weights",
            border_style="yellow",
        )
    )
    return "random:0"


def demo_command(
    out: Annotated[str, typer.Option("--out", help="Output folder or URI.")] = "nst-demo",
    size: Annotated[int, typer.Option(help="Long side of the outputs in pixels.")] = 128,
    steps: Annotated[int, typer.Option(help="Optimisation steps per image.")] = 100,
    weights: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="VGG weights (default: ImageNet if cached, else random:0 with a warning)."),
    ] = None,
    workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="CPU workers when there is no GPU (default: 1)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Stylise the bundled example photos with the bundled styles on a local Ray, end to end.

    Writes OUT/manifest.parquet, then runs it into OUT/run/ exactly as `nst run` would. Run it twice:
    the second run finds every row done and recomputes nothing.
    """
    root = Path(out)
    manifest = root / "manifest.parquet"
    rows = example_manifest(manifest)
    chosen = demo_weights(weights)
    params = StyleParams(size=size, steps=steps)
    console.print(f"demo: {rows} rows ({size}px, {steps} steps) → {root / 'run'}")
    summary = run_manifest(
        manifest=str(manifest),
        out=str(root / "run"),
        params=params,
        weights=chosen,
        num_workers=workers,
        on_event=RunProgress(enabled=not quiet),
    )
    print_summary(summary)
    console.print(
        f"images: {root / 'run' / 'images'}\nstatus: nst status {root / 'run'}\n"
        f"report: nst report {root / 'run'}   (writes {root / 'run' / 'report.html'})"
    )
    if summary.failed:
        raise typer.Exit(1)
