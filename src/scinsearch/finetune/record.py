"""What a fine-tuning run records about itself, and the checks that keep it from being misused.

Both methods write a JSON record beside their weights (`adapter.json` for the adapter, `finetune.json`
in a LoRA model folder): base model and vector size, collection or data source, the exact case ids of
the training and validation sets, the loss, the hyper-parameters, the seed, library versions and the
validation metrics the run produced. The adapter's id is the SHA-256 of its record, which holds the
weights' SHA-256, so a collection transformed by an adapter names exactly which weights made it, and an
edited record (say, test cases removed from its case ids) no longer matches the id.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path

from scinsearch.helpers import write_text_atomically

RECORD_VERSION = 1
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


def run_record(
    *,
    format: str,
    method: str,
    base_model: str,
    dim: int,
    config,
    training,
    loss: dict,
    run: dict,
    validation: dict,
    **details,
) -> dict:
    """The record both methods write: what was trained on what (`training`, a `finetune.data.TrainingSet`),
    with which settings (`config`, a `finetune.config.FinetuneConfig`), how the run went (`run`) and what
    it measured; `details` are the method's own fields (collection, architecture, LoRA modules, ...)."""
    import dataclasses

    return {
        "format": format,
        "record_version": RECORD_VERSION,
        "method": method,
        "created": now(),
        "base_model": base_model,
        "dim": int(dim),
        **details,
        "loss": loss,
        "hyperparameters": dataclasses.asdict(config),
        "seed": config.seed,
        "conditions": training.conditions,
        "train_case_ids": training.case_ids(training.fit),
        "validation_case_ids": training.case_ids(training.validation),
        "training": run,
        "validation": validation,
        "versions": library_versions(),
    }


def write_json(path: Path, data: dict) -> Path:
    """Write atomically (temporary file + rename): an interrupted run never leaves half a record."""
    return write_text_atomically(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
