"""A kiosk bundle: one folder that holds everything `serve` needs, checked byte for byte before it serves.

    DIR/
      bundle.json        what it is: format, collection name, the model id the collection records, when
      model/             the model's files (a hub id's snapshot from the local cache, or a model folder)
      collection/        the collection in the embedded store's layout (Qdrant Edge), with its record
      calibration.json   the collection's calibration (`scinsearch calibrate`), or null before one was made
      page.json          the kiosk page's settings (idle reset)
      MANIFEST.json      the SHA-256 and size of every other file

`serve --bundle DIR` verifies the manifest first (a changed, missing or extra file: one line naming it),
then copies the collection to a temporary folder (the embedded store writes to the folder it opens, and
the bundle must stay exactly as built) and loads the model from `model/`: no network, no model cache,
and no path inside the bundle refers to where it was built, so it may be moved or copied anywhere.
docs/kiosk-bundle.md tells how to carry it to a kiosk and update it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from pathlib import Path

from scinsearch.errors import ScinSearchError
from scinsearch.helpers import file_sha256, first_line, fsync_path, read_json_object, write_text_atomically
from scinsearch.settings import Settings

FORMAT = "scinsearch-bundle/1"
MANIFEST = "MANIFEST.json"
DESCRIPTION = "bundle.json"
MODEL_DIR, COLLECTION_DIR = "model", "collection"
CALIBRATION, PAGE = "calibration.json", "page.json"
MAX_JSON_BYTES = 16 << 20


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A verified bundle: where it is and what it says about itself."""

    folder: Path
    collection: str
    model: str  # the model id the collection records (its vectors' space)
    files: int
    page: dict

    def settings(self, base: Settings, store_folder: Path) -> Settings:
        """Search settings that serve this bundle: its collection (copied to `store_folder`) and model files."""
        moved = base.moved(qdrant_path=store_folder)
        return moved.replace(collection=self.collection, model=self.model, model_files=self.folder / MODEL_DIR)


def bundle_files(folder: Path) -> list[str]:
    """Every file under `folder` (links included, never followed), as sorted relative POSIX paths."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            found.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(name for name in found if name != MANIFEST)


def write_manifest(folder: Path) -> int:
    entries = {name: {"sha256": file_sha256(folder / name), "size": (folder / name).stat().st_size}
               for name in bundle_files(folder)}  # fmt: skip
    write_text_atomically(folder / MANIFEST, json.dumps({"format": FORMAT, "files": entries}, indent=1) + "\n")
    return len(entries)


def same_file(path: Path, entry: dict) -> bool:
    """The file has the manifest's size and SHA-256 (the size first: a cheap answer for most changes)."""
    try:
        return path.stat().st_size == entry.get("size") and file_sha256(path) == entry.get("sha256")
    except OSError as exc:
        raise ScinSearchError(f"bundle refused: cannot read {path}: {exc.strerror or exc}") from None


def read_json(path: Path, what: str) -> dict:
    try:
        return read_json_object(path, MAX_JSON_BYTES)
    except (OSError, ValueError) as exc:
        raise ScinSearchError(f"bundle refused: {what} {path.name} cannot be read ({exc})") from None


def verify_bundle(folder: Path) -> Bundle:
    """The bundle at `folder` if every file is exactly as the manifest lists it; else one line naming the first
    file that differs (changed, missing or not listed)."""
    folder = Path(folder).expanduser()
    if not (folder / MANIFEST).is_file():
        raise ScinSearchError(f"bundle refused: {folder} has no {MANIFEST} (build one with `scinsearch bundle --out`)")
    manifest = read_json(folder / MANIFEST, "manifest")
    listed = manifest.get("files")
    if manifest.get("format") != FORMAT or not isinstance(listed, dict):
        raise ScinSearchError(f"bundle refused: {MANIFEST} is not a {FORMAT} manifest")
    for name in listed:
        if not isinstance(name, str) or name.startswith("/") or "\\" in name or ".." in name.split("/"):
            raise ScinSearchError(f"bundle refused: {MANIFEST} names {str(name)[:80]!r}, a path outside the bundle")
    present = bundle_files(folder)
    for name in present:
        if name not in listed:
            raise ScinSearchError(f"bundle refused: file {name} is not in the manifest (added after the build)")
    for name, entry in sorted(listed.items()):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise ScinSearchError(f"bundle refused: file {name} is missing")
        if not isinstance(entry, dict) or not same_file(path, entry):
            raise ScinSearchError(f"bundle refused: file {name} changed since the bundle was built")
    description = read_json(folder / DESCRIPTION, "description")
    page = read_json(folder / PAGE, "page settings")
    if description.get("format") != FORMAT:
        raise ScinSearchError(f"bundle refused: {DESCRIPTION} is not a {FORMAT} description")
    return Bundle(folder, str(description["collection"]), str(description["model"]), len(listed), page)


def model_snapshot(model: str) -> Path:
    """The model's files: a local folder as it is, or a hub id's snapshot in the local Hugging Face cache
    (never downloaded here: build the bundle where the model has been used once)."""
    local = Path(model).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise ScinSearchError(
            f"model {model!r} is neither a folder nor in the local Hugging Face cache ({first_line(exc)}): "
            f"run `scinsearch search` or `embed` with it once, or give --model a model folder"
        ) from None


def build_bundle(settings: Settings, out: Path, page: dict, progress: bool = True) -> list[str]:
    """Write the bundle into `out` (a new folder: built beside it and renamed when complete); returns summary lines."""
    from scinsearch.calibration import calibration_of
    from scinsearch.store import check_model, open_store, require_collection
    from scinsearch.store.edge import EdgeStore
    from scinsearch.transfer import copy_collection

    out = Path(out).expanduser()
    if out.exists():
        raise ScinSearchError(f"{out} exists: give --out a new folder")
    if not out.parent.is_dir():
        raise ScinSearchError(f"no folder {out.parent} to write the bundle into")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    source = open_store(settings)
    try:
        # --model names the collection's model, or is a folder holding its files (e.g. a copy of the hub's)
        is_folder = Path(settings.model).expanduser().is_dir()
        info = require_collection(source) if is_folder else check_model(source, settings.model)
        snapshot = model_snapshot(settings.model)
        partial.mkdir()
        shutil.copytree(snapshot, partial / MODEL_DIR, symlinks=False, ignore=shutil.ignore_patterns(".git*"))
        target = EdgeStore(partial / COLLECTION_DIR, settings.collection)
        try:
            copied = copy_collection(source, target, progress=progress)
        finally:
            target.close()
        calibration = calibration_of(info)
        write_json(partial / CALIBRATION, {"calibration": calibration.to_dict() if calibration else None})
        write_json(partial / PAGE, page)
        write_json(
            partial / DESCRIPTION,
            {
                "format": FORMAT,
                "collection": settings.collection,
                "model": info.model,
                "dim": info.dim,
                "points": copied.points,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
        )
        files = write_manifest(partial)
        os.replace(partial, out)
        fsync_path(out.parent)
    except OSError as exc:
        raise ScinSearchError(f"cannot write the bundle {out}: {exc.strerror or exc}") from None
    finally:
        source.close()
        shutil.rmtree(partial, ignore_errors=True)
    return [
        f"bundle {out}: {files} files, {sum((out / n).stat().st_size for n in bundle_files(out)) / 2**20:.1f} MiB",
        f"collection {settings.collection!r}: {copied.points} points of {info.model} ({info.dim}-d), "
        f"calibration: {'yes' if calibration else 'none yet (scinsearch calibrate)'}",
        f"model files from {snapshot}",
        *(
            [f"its vectors went through adapter {info.adapter_id}: serve it with that --adapter"]
            if info.adapter_id
            else []
        ),
        f"serve it with: scinsearch serve --bundle {out}",
    ]


def write_json(path: Path, document: dict) -> None:
    write_text_atomically(path, json.dumps(document, indent=1, ensure_ascii=False) + "\n")


def working_copy(bundle: Bundle) -> Path:
    """The bundle's collection copied to a new temporary folder, which the embedded store may write to;
    the caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix="scinsearch-bundle-"))
    shutil.copytree(bundle.folder / COLLECTION_DIR, folder, dirs_exist_ok=True)
    return folder
