"""The report's stylesheet and script are package files, inlined verbatim into the one-file page."""

from __future__ import annotations

from importlib.resources import files

from pipeline.report.html import render_html


def static_text(name: str) -> str:
    return files("pipeline.report").joinpath("static").joinpath(name).read_text(encoding="utf-8")


def test_page_inlines_the_static_stylesheet_and_script() -> None:
    css, js = static_text("report.css"), static_text("dom.js") + static_text("report.js")
    page = render_html({"out": "/runs/a", "status": {}, "run": {}})
    assert f"<style>\n{css}</style>" in page
    assert f"<script>\n{js}</script>" in page
    # Inlined as they are: neither may close its own element early.
    assert "</style" not in css.lower() and "</script" not in js.lower()
    assert "<link rel=\"stylesheet\"" not in page and "<script src=" not in page
