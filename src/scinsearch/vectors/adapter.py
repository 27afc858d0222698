"""The adapter as search and evaluation use it: read back from its folder, map vectors, no training.

    y = normalise(x + U V^T x)        V^T: dim -> rank, U: rank -> dim

Training (`finetune.adapter`) writes the folder: `adapter.safetensors` (tensors `down`, `up`,
`prototypes`) and `adapter.json` (`finetune.record`). `Adapter.load` reads it back, checks the weights
against their recorded SHA-256 and the record against the adapter's id (a hash of the record, which holds
the weights' hash: `record_identity`), and refuses another model's or size's vectors;
`query_adapter` is the one check search makes before it transforms queries. This module imports no
training code (tests/test_layout.py holds search to that).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scinsearch.errors import ScinSearchError
from scinsearch.helpers import file_sha256, read_json_object
from scinsearch.store import CollectionInfo

WEIGHTS_FILE = "adapter.safetensors"
RECORD_FILE = "adapter.json"
FORMAT = "scinsearch-adapter"
# Text queries go through the adapter too. Measured on planted data (tests/test_finetune_adapter.py,
# docs/finetuning.md): condition texts in a cone of their own, pointing along their condition's image
# direction; text->image precision@20 against the adapted collection was 0.96 with the text through the
# adapter, 0.76 for the frozen model and 0.65 with the raw text (mean of 4 seeds). On real SigLIP it is
# measured by `scinsearch evaluate --adapter DIR --zero-shot`.
TEXT_THROUGH_ADAPTER = True


class ResidualMap(torch.nn.Module):
    """x -> normalise(x + up(down(x))). `down` starts at zero, so the map starts as the identity, and its
    gradient (up^T g x^T) lies in the span of the training image vectors: the map learns to read only
    directions images have. That is why text vectors can go through it (measured; see TEXT_THROUGH_ADAPTER):
    with `up` at zero instead, the untrained random reading of the text-only directions scrambled text
    queries (planted text->image precision fell below the frozen model's)."""

    def __init__(self, dim: int, rank: int, generator: torch.Generator | None = None):
        super().__init__()
        rank = min(rank, dim)
        self.down = torch.nn.Parameter(torch.zeros(rank, dim))
        self.up = torch.nn.Parameter(torch.randn(dim, rank, generator=generator) / math.sqrt(rank))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors + (vectors @ self.down.T) @ self.up.T, dim=-1)


@torch.no_grad()
def transform(module: ResidualMap, vectors: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Adapted unit vectors, float32, in chunks (bounded memory for any collection size)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) == 0:
        return vectors.reshape(0, module.up.shape[0])
    parts = [
        module(torch.from_numpy(np.ascontiguousarray(vectors[i : i + chunk]))).numpy()
        for i in range(0, len(vectors), chunk)
    ]
    return np.concatenate(parts).astype(np.float32)


def record_identity(record: dict) -> str:
    """The adapter's id: SHA-256 of its whole record (case ids, splits, config, run, the weights' SHA-256)
    but the id itself, as canonical JSON. Binding the record to the weights means a leak check that reads
    the recorded cases reads what the weights were trained on: an edited adapter.json is refused."""
    body = {key: value for key, value in record.items() if key != "adapter_id"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_json(path: Path, what: str) -> dict:
    """A record file as a dict, or a one-line error naming what is wrong with it."""
    if not path.is_file():
        raise ScinSearchError(f"{path.parent} is not a scinsearch {what}: no {path.name} in it")
    try:
        return read_json_object(path)
    except (OSError, ValueError) as exc:
        raise ScinSearchError(f"{path} is not a readable scinsearch {what} record: {exc}") from None


def require_fields(data: dict, fields: dict[str, type], path: Path) -> None:
    for name, kind in fields.items():
        if not isinstance(data.get(name), kind) or isinstance(data.get(name), bool) and kind is int:
            raise ScinSearchError(f"{path} lacks a valid {name!r}: not a scinsearch record, or a damaged one")


def require_frozen(info: CollectionInfo, collection: str) -> None:
    """Adapters are trained on, and applied to, the original (frozen) vectors of a model: never adapted ones."""
    if info.adapter_id:
        raise ScinSearchError(
            f"collection {collection!r} already holds adapted vectors: use the original "
            f"collection ({info.adapted_from!r})"
        )


class Adapter:
    """A trained adapter read back from its folder: `transform` maps vectors of its base model."""

    def __init__(self, folder: Path, record: dict, module: ResidualMap):
        self.folder = folder
        self.record = record
        self.module = module.eval()

    @classmethod
    def load(cls, folder: Path | str) -> Adapter:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ScinSearchError(f"adapter folder not found: {folder}")
        record = read_json(folder / RECORD_FILE, "adapter")
        if record.get("format") != FORMAT:
            raise ScinSearchError(f"{folder / RECORD_FILE} is not a scinsearch adapter record")
        require_fields(record, {"base_model": str, "dim": int, "adapter_id": str, "collection": str}, folder)
        weights = folder / WEIGHTS_FILE
        recorded = record.get("weights") if isinstance(record.get("weights"), dict) else {}
        if not weights.is_file() or file_sha256(weights) != recorded.get("sha256"):
            raise ScinSearchError(f"the weights in {folder} do not match its {RECORD_FILE} (missing or changed)")
        if record_identity(record) != record["adapter_id"]:
            raise ScinSearchError(
                f"{folder / RECORD_FILE} does not match the adapter's id (its training record was edited or "
                "damaged, or an older scinsearch wrote it): retrain the adapter"
            )
        try:
            tensors_ = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise ScinSearchError(f"unreadable adapter weights {weights}: {exc}") from None
        down, up, dim = tensors_.get("down"), tensors_.get("up"), record["dim"]
        if (
            down is None
            or up is None
            or down.ndim != 2
            or down.shape[1] != dim
            or tuple(up.shape) != (dim, down.shape[0])
        ):
            raise ScinSearchError(f"adapter weights {weights} do not have the shapes of a {dim}-d adapter")
        module = ResidualMap(dim, down.shape[0])
        module.load_state_dict({"down": down.float(), "up": up.float()})
        return cls(folder, record, module)

    @property
    def id(self) -> str:
        return self.record["adapter_id"]

    @property
    def base_model(self) -> str:
        return self.record["base_model"]

    @property
    def dim(self) -> int:
        return int(self.record["dim"])

    def describe(self) -> str:
        return f"adapter {self.folder} ({self.id[:12]}, rank {self.module.down.shape[0]}, for {self.base_model})"

    def check_same_space(self, info: CollectionInfo, collection: str) -> None:
        """Refuse a collection of another model or size: the map would be meaningless on its vectors."""
        if not info.same_space(self.base_model, self.dim):
            raise ScinSearchError(
                f"adapter {self.folder} was trained on {self.dim}-d vectors of "
                f"{self.base_model!r}; collection {collection!r} holds {info.dim}-d vectors of "
                f"{info.model!r}: train an adapter on this collection instead"
            )

    def check_frozen_collection(self, info: CollectionInfo, collection: str) -> None:
        """Refuse a collection of another model or size, or one that already holds adapted vectors."""
        require_frozen(info, collection)
        self.check_same_space(info, collection)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Image vectors (one, or a batch) of the base model -> adapted unit vectors."""
        vectors = np.asarray(vectors, dtype=np.float32)
        single = vectors.ndim == 1
        out = transform(self.module, vectors[None, :] if single else vectors)
        return out[0] if single else out

    def transform_text(self, vectors: np.ndarray) -> np.ndarray:
        """Text vectors of the base model, as text queries are searched with this adapter."""
        return self.transform(vectors) if TEXT_THROUGH_ADAPTER else np.asarray(vectors, dtype=np.float32)


def query_adapter(adapter_dir: Path | str | None, info: CollectionInfo, collection: str) -> Adapter | None:
    """The adapter queries must go through for this collection, or None; every mismatch is refused."""
    recorded = info.adapter_id
    if adapter_dir is None:
        if recorded:
            raise ScinSearchError(
                f"collection {collection!r} holds vectors transformed by the adapter "
                f"{info.adapter_dir}: search it with --adapter "
                f"{info.adapter_dir} so queries are transformed the same way"
            )
        return None
    adapter = Adapter.load(adapter_dir)
    adapter.check_same_space(info, collection)
    if recorded == adapter.id:
        return adapter
    if not recorded:
        raise ScinSearchError(
            f"collection {collection!r} holds frozen vectors, not adapted ones: run `scinsearch "
            f"finetune apply --adapter {adapter_dir} --collection {collection} --to-collection "
            f"{collection}_adapted` and search --collection {collection}_adapted"
        )
    raise ScinSearchError(
        f"collection {collection!r} was made by another adapter ({recorded[:12]}, "
        f"{info.adapter_dir}), not by {adapter_dir} ({adapter.id[:12]})"
    )
