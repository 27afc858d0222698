"""scinsearch: SCIN dermatology images as a searchable SigLIP vector database in Qdrant.

The data passes through one module per stage:
dataset (read SCIN) -> images (decode safely) -> embedding (SigLIP) -> store (Qdrant)
-> search (neighbours and condition suggestions) -> service (HTTP + kiosk page),
with pipeline (the embed job), download, evaluation and the CLI around them.
"""

from scinsearch.errors import ScinSearchError
from scinsearch.settings import Settings

__all__ = ["ScinSearchError", "Settings"]
__version__ = "0.1.0"
