"""`export --for kiosk-backend`: the collection as the rural kiosk backend reads it (docs/storage.md).

That backend opens the collection with qdrant-client, queries the unnamed vector and turns each hit
into a result model that wants `condition` and `icd_code` as strings, `features` as a list of strings,
`image_path` as something it can show, and a score between 0 and 1; a hit that fails the model ends
the loop over that query's hits. The profile writes every point so that it passes:

- only images whose case has a dermatologist label; the others are counted, with their reason;
- `condition` a string, `icd_code` from the SCIN-condition -> ICD-10 table `icd10_scin.csv` (a draft
  that wants review by a clinician; a condition not in it gets L98.9 and is listed in the summary);
- `features`: plain words from the case's textures, symptoms and body parts;
- `image_path`: absolute (the collection's image folder joined on) or a URL under `--image-base-url`,
  the release's relative path kept in `image_relative_path`;
- vectors placed so that a self-query scores at most 1.0 (`kiosk_vectors`), checked for every point
  after writing; every other payload field as it was.

The profile is a read-only view of the source (`KioskView`), so the usual copy and Parquet export,
with their resume and verification, write it unchanged.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import re
import urllib.parse
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.paths import resolve_image
from scinsearch.schema import Field
from scinsearch.store import CollectionInfo, StoredPoint, VectorStore, require_collection
from scinsearch.transfer.copy import batched
from scinsearch.transfer.kiosk_vectors import place_vectors, self_score_problems

PROFILE = "kiosk-backend"
PROFILES = (PROFILE,)
FALLBACK_ICD = "L98.9"  # the backend's own code for a condition it cannot name: "disorder of skin, unspecified"
ICD_TABLE = "icd10_scin.csv"
MAX_FEATURES = 8
FEATURE_SOURCES = ("textures", "condition_symptoms", "other_symptoms", "body_parts")  # in this order
NOT_A_FEATURE = ("no relevant",)  # SCIN's "no relevant experience / symptoms" boxes say there is none
NAMED_LEFT_OUT = 5  # image ids named per reason in the summary
VERIFY_PAGE = 1024

# The fields the profile writes or rewrites; every other payload field is kept as it was.
KIOSK_FIELDS: tuple[Field, ...] = (
    Field("condition", "keyword", doc="always a string: the highest-weighted dermatologist label"),
    Field("icd_code", "keyword", doc=f"ICD-10 code of `condition` from {ICD_TABLE}; {FALLBACK_ICD} when not in it"),
    Field("features", "keyword[]", doc=f"up to {MAX_FEATURES} plain words: textures, symptoms, body parts"),
    Field("image_path", "keyword", doc="the image's absolute path, or its URL with --image-base-url"),
    Field("image_relative_path", "keyword", doc="the path as the release lists it (what `embed` stored)"),
)
KIOSK_FIELD_NAMES = tuple(field.name for field in KIOSK_FIELDS)


@dataclasses.dataclass(frozen=True)
class IcdCode:
    code: str
    title: str
    note: str


def condition_key(name: str) -> str:
    """Table look-ups ignore case and runs of spaces (SCIN spells a few names two ways)."""
    return re.sub(r"\s+", " ", name).strip().casefold()


def load_icd_table() -> dict[str, IcdCode]:
    """SCIN condition name (as `condition_key`) -> its ICD-10 code, from the table shipped in the package."""
    text = resources.files("scinsearch.transfer").joinpath(ICD_TABLE).read_text(encoding="utf-8")
    table: dict[str, IcdCode] = {}
    for row in csv.DictReader(text.splitlines()):
        table[condition_key(row["scin_condition"])] = IcdCode(row["icd10"], row["title"], row["note"])
    return table


def plain_words(value: str) -> str:
    return value.replace("_", " ").strip().lower()


def features_of(payload: dict) -> list[str]:
    """Plain strings from the case's textures, symptoms and body parts (the release's ticked boxes)."""
    found: list[str] = []
    for name in FEATURE_SOURCES:
        values = payload.get(name)
        for value in values if isinstance(values, list) else []:
            word = plain_words(str(value))
            if word and word not in found and not word.startswith(NOT_A_FEATURE):
                found.append(word)
    return found[:MAX_FEATURES]


def check_base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ScinSearchError(f"--image-base-url must be an http(s) URL without ?query or #fragment, not {url!r}")
    return url.rstrip("/") + "/"


@dataclasses.dataclass
class LeftOut:
    count: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)

    def add(self, image_id: str) -> None:
        self.count += 1
        if len(self.examples) < NAMED_LEFT_OUT:
            self.examples.append(image_id)


class KioskView:
    """A collection as the kiosk backend should see it: the parts of `VectorStore` that `copy_collection`
    and `export_parquet` read (name, info, count, scroll), with the profile applied point by point."""

    def __init__(self, source: VectorStore, images_dir: Path | None = None, image_base_url: str | None = None):
        self.source = source
        self.name = source.name
        self.record = require_collection(source)
        self.base_url = check_base_url(image_base_url) if image_base_url else None
        root = images_dir or self.record.image_root
        if self.base_url is None and not root:
            raise ScinSearchError(
                "the collection records no image folder: give --images-dir DIR or --image-base-url URL"
            )
        self.image_root = Path(root).expanduser().absolute() if root else None
        self.icd = load_icd_table()
        self.left_out: dict[str, LeftOut] = collections.defaultdict(LeftOut)
        self.unmapped: collections.Counter[str] = collections.Counter()
        self.kept = 0
        self.verified = 0
        for point in source.scroll():  # payloads only: how many points the profile keeps, and why not the rest
            if self.convert(point.payload, point.id) is not None:
                self.kept += 1

    # What copy_collection and export_parquet read ----------------------------------------------------

    def info(self) -> CollectionInfo:
        return dataclasses.replace(self.record, extra={**self.record.extra, "scinsearch_profile": PROFILE})

    def count(self, filter=None) -> int:
        return self.kept

    def scroll(self, filter=None, with_vectors: bool = False, page: int = 256) -> Iterator[StoredPoint]:
        for batch in batched(self.source.scroll(with_vectors=with_vectors, page=page), page):
            kept = [(point, payload) for point in batch if (payload := self.convert(point.payload)) is not None]
            if not kept:
                continue
            vectors = None
            if with_vectors:
                seeds = [zlib.crc32(point.id.encode()) for point, _ in kept]  # the point's own, run after run
                vectors = place_vectors(np.stack([point.vector for point, _ in kept]), seeds)
            for index, (point, payload) in enumerate(kept):
                yield StoredPoint(point.id, payload, vectors[index] if vectors is not None else None)

    # The profile ---------------------------------------------------------------------------------------

    def convert(self, payload: dict, point_id: str | None = None) -> dict | None:
        """The point's payload under the profile, or None when it is left out (counted when `point_id`
        is given: the first pass counts, the writing pass does not count again)."""
        image_id = str(payload.get("image_id", point_id))
        condition = payload.get("condition")
        reason = None
        if payload.get("labelled") is False or not isinstance(condition, str) or not condition.strip():
            reason = "no dermatologist label"
        relative = payload.get("image_path")
        location = self.image_location(relative) if isinstance(relative, str) else None
        if reason is None and location is None:
            reason = "no usable image path"
        if reason is not None:
            if point_id is not None:
                self.left_out[reason].add(image_id)
            return None
        icd = self.icd.get(condition_key(condition))
        if icd is None and point_id is not None:
            self.unmapped[condition] += 1
        return {
            **payload,
            "condition": condition,
            "icd_code": icd.code if icd else FALLBACK_ICD,
            "features": features_of(payload),
            "image_path": location,
            "image_relative_path": relative,
        }

    def image_location(self, relative: str) -> str | None:
        """The URL under --image-base-url, or the absolute path inside the image folder; None when the
        stored path would leave the folder."""
        pure = relative.replace("\\", "/")
        if self.base_url is not None:
            if pure.startswith("/") or ".." in pure.split("/"):
                return None
            return self.base_url + urllib.parse.quote(pure)
        path = resolve_image(self.image_root, relative)
        return str(path) if path is not None else None

    # After writing ------------------------------------------------------------------------------------

    def verify_store(self, target: VectorStore) -> None:
        """Every point the target holds scores at most 1.0 against itself (both engines' arithmetic)."""
        page: list[StoredPoint] = []
        for point in target.scroll(with_vectors=True, page=VERIFY_PAGE):
            page.append(point)
            if len(page) == VERIFY_PAGE:
                self.verify_page(page, target.name)
                page = []
        self.verify_page(page, target.name)

    def verify_parquet(self, path: Path) -> None:
        from scinsearch.transfer.parquet import ParquetPoints

        for batch in ParquetPoints(path).batches(VERIFY_PAGE):
            self.verify_page(batch, str(path))

    def verify_page(self, points: list[StoredPoint], where: str) -> None:
        if not points:
            return
        problems = self_score_problems(np.stack([point.vector for point in points]))
        if problems.size:
            raise ScinSearchError(
                f"verification failed: point {points[int(problems[0])].id} in {where} could score above 1.0 "
                f"against itself ({problems.size} such points in one page)"
            )
        self.verified += len(points)

    def lines(self) -> list[str]:
        """What the summary adds: what was left out and why, the unmapped conditions, the check."""
        left = sum(item.count for item in self.left_out.values())
        lines = [f"profile {PROFILE}: {self.kept} points written, {left} left out"]
        for reason, item in sorted(self.left_out.items()):
            more = ", ..." if item.count > len(item.examples) else ""
            lines.append(f"  left out, {reason}: {item.count} (image ids {', '.join(item.examples)}{more})")
        if self.unmapped:
            listed = "; ".join(f"{name} ({count})" for name, count in self.unmapped.most_common())
            lines.append(
                f"  not in the ICD-10 table, given {FALLBACK_ICD}: {len(self.unmapped)} conditions, "
                f"{sum(self.unmapped.values())} points: {listed}"
            )
        else:
            lines.append("  every condition is in the ICD-10 table")
        lines.append(
            f"  self-similarity checked for {self.verified} points: at most 1.0 in qdrant-client's local mode "
            "and in Qdrant's float32 cosine"
        )
        return lines


def profile_view(profile: str | None, source: VectorStore, images_dir: Path | None, image_base_url: str | None):
    """What `export` reads: the source itself, or the source under the named profile."""
    if profile is None:
        if images_dir or image_base_url:
            raise ScinSearchError("--images-dir and --image-base-url belong to --for kiosk-backend")
        return source
    if profile not in PROFILES:
        raise ScinSearchError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    return KioskView(source, images_dir, image_base_url)
