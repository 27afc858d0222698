"""The page's files, and the offline report: the same page as ONE self-contained HTML file.

The report inlines the page's CSS and script, embeds the exploration document as JSON and, when the
images folder is known, each drawn image's thumbnail as a small JPEG data URI. Its content security
policy allows nothing to be fetched (no network, no other file), so it opens the same from a laptop, a
USB stick or an e-mail attachment, and it cannot leak what it shows.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

from scinsearch.errors import ScinSearchError
from scinsearch.helpers import write_text_atomically
from scinsearch.images import ImageError, open_rgb
from scinsearch.paths import resolve_image

STATIC_DIR = Path(__file__).parent / "static"
PAGE = "explore.html"
STYLE_TAG = '<link rel="stylesheet" href="/explore-assets/explore.css">'
SCRIPT_TAG = '<script src="/explore-assets/explore.js" defer></script>'
REPORT_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
THUMBNAIL_SIZE = 96  # px on the long side: ~2-4 KB each, ~30 MB at SCIN's 10,400 images


def page_html() -> str:
    return (STATIC_DIR / PAGE).read_text(encoding="utf-8")


def embedded_json(document: dict) -> str:
    """JSON that cannot close its <script> element or open a comment inside it."""
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def report_html(document: dict) -> str:
    """The page with its style, script and data inline: one file, nothing fetched."""
    html = page_html()
    if STYLE_TAG not in html or SCRIPT_TAG not in html:
        raise ScinSearchError("the explore page's template lost its style or script tag")
    style = (STATIC_DIR / "explore.css").read_text(encoding="utf-8")
    script = (STATIC_DIR / "explore.js").read_text(encoding="utf-8").replace("</", "<\\/")
    head = f'<meta http-equiv="Content-Security-Policy" content="{REPORT_POLICY}">\n  <style>\n{style}</style>'
    body = (
        f'<script id="explore-data" type="application/json">{embedded_json(document)}</script>\n'
        f"  <script>\n{script}</script>"
    )
    return html.replace(STYLE_TAG, head).replace(SCRIPT_TAG, body)


def thumbnail_uri(path: Path, size: int = THUMBNAIL_SIZE) -> str | None:
    try:
        image = open_rgb(path)
    except (ImageError, OSError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(image_ids: Sequence[str], paths: Sequence[str | None], root: Path) -> dict[str, str]:
    """image id -> JPEG data URI, for the files found inside `root` (the stored path is untrusted)."""
    root = Path(root).expanduser().resolve()
    found = {}
    for image_id, relative in zip(image_ids, paths):
        candidate = resolve_image(root, relative) if isinstance(relative, str) and relative else None
        if candidate is None:
            continue
        resolved = candidate.resolve()
        if resolved.is_relative_to(root) and resolved.is_file():
            uri = thumbnail_uri(resolved)
            if uri:
                found[image_id] = uri
    return found


def write_report(document: dict, out: Path) -> Path:
    """Write the report atomically (a half-written file never replaces a good one)."""
    out = Path(out)
    text = report_html(document)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out, text)
    except OSError as exc:
        raise ScinSearchError(f"cannot write the report {out}: {exc}") from None
    return out
