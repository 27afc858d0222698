#!/usr/bin/env python3
"""The 10-image check: embed 10 images (batches of 5) into a throw-away store and verify them.

    python scripts/test_siglip_embedding.py [--metadata CSV --images-dir DIR | --scin-dir DIR] [--model ID]

A thin wrapper over `scinsearch check --limit 10 --batch-size 5`, with the original scripts' data
defaults (~/data/scin/real_labeled_metadata.csv and ~/data/scin/images). Exit code 0 means every
vector has the model's size and unit length, every payload is complete, and each image finds itself.
"""

import sys

from _wrapper import DATA_DEFAULTS, import_cli, with_defaults

if __name__ == "__main__":
    sys.exit(import_cli()(["check", "--limit", "10", "--batch-size", "5", *with_defaults(sys.argv[1:], DATA_DEFAULTS)]))
