"""What a fine-tuning run records about itself, and the checks that keep it from being misused.

Both methods write a JSON record beside their weights (`adapter.json` for the adapter, `finetune.json`
in a LoRA model folder): base model and vector size, collection or data source, the exact case ids of
the training and validation sets, the loss, the hyper-parameters, the seed, library versions and the
validation metrics the run produced. The adapter's id is the SHA-256 of its weights file, so a collection
transformed by an adapter names exactly which weights made it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path

from scinsearch.errors import ScinSearchError
from scinsearch.helpers import write_text_atomically

RECORD_VERSION = 1
ADAPTER_ID = "adapter_id"  # collection metadata of an adapted collection (written by `finetune apply`)
ADAPTER_DIR = "adapter_dir"
ADAPTED_FROM = "adapted_from"
LIBRARIES = ("torch", "transformers", "peft", "safetensors", "numpy", "qdrant-edge-py", "qdrant-client")


def library_versions() -> dict[str, str | None]:
    """Versions of scinsearch, Python and the libraries that shape the numbers (None: not installed)."""
    from importlib import metadata

    from scinsearch import __version__

    versions: dict[str, str | None] = {"scinsearch": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> Path:
    """Write atomically (temporary file + rename): an interrupted run never leaves half a record."""
    return write_text_atomically(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def read_json(path: Path, what: str) -> dict:
    """A record file as a dict, or a one-line error naming what is wrong with it."""
    if not path.is_file():
        raise ScinSearchError(f"{path.parent} is not a scinsearch {what}: no {path.name} in it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScinSearchError(f"unreadable {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ScinSearchError(f"{path} is not a scinsearch {what} record")
    return data


def require_fields(data: dict, fields: dict[str, type], path: Path) -> None:
    for name, kind in fields.items():
        if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool) and kind is int:
            raise ScinSearchError(f"{path} lacks a valid {name!r}: not a scinsearch record, or a damaged one")


def check_same_space(record: dict, model: str, dim: int, collection: str, source: Path) -> None:
    """Refuse to use an adapter on vectors of another model or size: the map would be meaningless."""
    if record["base_model"] != model or int(record["dim"]) != int(dim):
        raise ScinSearchError(
            f"adapter {source} was trained on {record['dim']}-d vectors of "
            f"{record['base_model']!r}; collection {collection!r} holds {dim}-d vectors of "
            f"{model!r}: train an adapter on this collection instead"
        )


def check_frozen_collection(record: dict, model: str, dim: int, collection: str, extra: dict, source: Path) -> None:
    """An adapter applies to the original (frozen) vectors of its model: not to an adapted collection."""
    if extra.get(ADAPTER_ID):
        raise ScinSearchError(
            f"collection {collection!r} already holds adapted vectors: use the original "
            f"collection ({extra.get(ADAPTED_FROM)!r}) with --adapter"
        )
    check_same_space(record, model, dim, collection, source)
