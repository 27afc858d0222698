"""What the kiosk page needs to know from the server: its idle reset and the languages it can speak.

Adding a language is one file: `static/i18n/<code>.json`, a message catalogue with the same keys as
`en.json` plus `_language` (the language's own name, shown in the switch). The folder is listed once,
when the app is built, so a broken or misnamed file is reported in the log and left out instead of
breaking the page.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

log = logging.getLogger("scinsearch.service")
LANGUAGE_FILE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # BCP 47 tags such as en, sw, pt-BR
DEFAULT_LANGUAGE = "en"  # complete by rule: every other catalogue falls back to it, key by key
MAX_CATALOGUE_BYTES = 256 * 1024


def catalogue_languages(folder: Path) -> list[dict]:
    """[{code, name, status}] for each readable catalogue in `folder`, English first, then by code."""
    languages = []
    for path in sorted(folder.glob("*.json")):
        code = path.stem
        try:
            if not LANGUAGE_FILE.match(code) or path.stat().st_size > MAX_CATALOGUE_BYTES:
                raise ValueError("the name is not a language tag, or the file is too large")
            catalogue = json.loads(path.read_text(encoding="utf-8"))
            name = catalogue.get("_language") if isinstance(catalogue, dict) else None
            if not isinstance(name, str) or not name.strip():
                raise ValueError('no "_language" name')
        except (OSError, ValueError) as exc:
            log.warning("language catalogue %s left out: %s", path.name, exc)
            continue
        languages.append({"code": code, "name": name.strip(), "status": str(catalogue.get("_status", "reviewed"))})
    return sorted(languages, key=lambda item: (item["code"] != DEFAULT_LANGUAGE, item["code"]))


def page_config(settings, folder: Path) -> dict:
    """The body of GET /config."""
    return {
        "idle_reset_seconds": settings.idle_reset_seconds,
        "default_language": DEFAULT_LANGUAGE,
        "languages": catalogue_languages(folder),
    }
