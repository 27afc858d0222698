#!/usr/bin/env python3
"""Embed SCIN images with SigLIP into Qdrant: the existing script's command line, kept working.

    python scripts/embed_scin_siglip.py --metadata real_labeled_metadata.csv --images-dir ~/data/scin/images \\
        --collection scin_dermatology --batch-size 32 --limit 1000 --model google/siglip-base-patch16-224

A thin wrapper over `scinsearch embed`, with the same flags and defaults as before (--collection
scin_dermatology, --batch-size 32, --model google/siglip-base-patch16-224, data under ~/data/scin).
Unlike the old script it resumes instead of deleting the collection (add --recreate to start over),
and every other `scinsearch embed` option passes through (--qdrant-path, --qdrant-url, --device, ...).
"""

import sys

from _wrapper import DATA_DEFAULTS, import_cli, with_defaults

SEED_DEFAULTS = {
    **DATA_DEFAULTS,
    "--collection": "scin_dermatology",
    "--batch-size": "32",
    "--model": "google/siglip-base-patch16-224",
}

if __name__ == "__main__":
    sys.exit(import_cli()(["embed", *with_defaults(sys.argv[1:], SEED_DEFAULTS)]))
