"""Move a collection where it is needed, without embedding it again (docs/storage.md#moving-a-collection).

- `copy_collection`: any store to any store (Qdrant Edge, a Qdrant server or cluster, qdrant-client's
  `:memory:` or folder), page by page, resumable, verified at the end (`copy`).
- `export_parquet` / `import_parquet`: one row per image in a Parquet file that pandas and pyarrow read,
  and back into any store; the file is untrusted on import (`parquet` reads it, `importing` loads it).
- `kiosk_profile` (`export --for kiosk-backend`): the collection as the rural kiosk backend reads it
  (labelled images, `icd_code`, `features`, absolute image paths), a view the two exports above write;
  `kiosk_vectors` writes its vectors so that a self-query scores exactly 1.0 in every engine.
- `embed_into_alias`: embed into a new versioned collection and switch an alias to it once the run has
  finished and been verified, so readers of the alias never see a half-built collection (`versions`).

Stores are the `scinsearch.store` interface, so every path is the same code for every backend.
"""

from __future__ import annotations

from scinsearch.transfer.copy import TransferSummary, copy_collection
from scinsearch.transfer.importing import import_parquet
from scinsearch.transfer.parquet import ParquetPoints, export_parquet
from scinsearch.transfer.versions import embed_into_alias, version_lines

__all__ = [
    "ParquetPoints",
    "TransferSummary",
    "copy_collection",
    "embed_into_alias",
    "export_parquet",
    "import_parquet",
    "version_lines",
]
