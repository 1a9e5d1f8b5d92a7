"""The report page's stylesheet and script, read from the package's static/ folder for `render_html`.

They are real files (static/report.css; static/dom.js, the helpers that read no data, and static/report.js,
the views) so they can be edited, linted and diffed as CSS and JavaScript; `render_html` inlines them, so
the report stays one self-contained HTML file. The wheel
ships them as package data, and importlib.resources finds them in any installed form (folder or zip).

The script reads the one JSON blob in `<script id="nst-data">` and builds every view with DOM calls
(text always through textContent, so names and error messages can never inject markup). Views are paged
and thumbnails use loading="lazy", so 10,000 rows keep only one page of tiles in the DOM.
"""

from __future__ import annotations

from importlib.resources import files


def read_static(name: str) -> str:
    """The text of static/`name`, shipped inside this package."""
    return files("pipeline.report").joinpath("static").joinpath(name).read_text(encoding="utf-8")


CSS = read_static("report.css")
JS = read_static("dom.js") + read_static("report.js")
"""One script: the helpers first, as the views take them from their `NST` object."""
