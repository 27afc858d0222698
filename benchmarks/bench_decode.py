"""Compare decode-and-resize paths for SCIN-sized images (one core), and how far each is from the reference.

The reference is what SigLIP's own processor does (PIL backend): full decode, `convert("RGB")`,
`resize((S, S), BICUBIC)`. Every other path is timed on the same bytes and compared with it pixel by
pixel (grey levels out of 255). OpenCV and imagecodecs are measured only when importable: they are
not dependencies of scinsearch (see docs/performance.md for why).

    python benchmarks/bench_decode.py            # ~1 min
    python benchmarks/bench_decode.py --quick    # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import machine  # noqa: E402

from scinsearch.images import load_square, resize_square  # noqa: E402
from scinsearch.testing import scin_sized_png  # noqa: E402

BICUBIC = Image.Resampling.BICUBIC


def pil_open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def paths(size: int) -> dict:
    """name -> (function bytes -> array or image, compare with the reference?)."""
    found = {
        "PIL decode only": (lambda d: pil_open(d), False),
        "PIL decode + BICUBIC (reference = processor)": (
            lambda d: np.asarray(pil_open(d).resize((size, size), BICUBIC)),
            True,
        ),
        "scinsearch load_square (exact, default)": (lambda d: load_square(d, size, BICUBIC, fast=False), True),
        "scinsearch load_square (fast)": (lambda d: load_square(d, size, BICUBIC, fast=True), True),
    }
    for gap in (1.5, 2.0, 3.0):
        found[f"PIL decode + BICUBIC reducing_gap={gap}"] = (
            lambda d, g=gap: np.asarray(pil_open(d).resize((size, size), BICUBIC, reducing_gap=g)),
            True,
        )
    found["PIL decode + reduce(2) + BICUBIC"] = (lambda d: resize_square(pil_open(d).reduce(2), size, BICUBIC), True)
    try:
        import cv2

        cv2.setNumThreads(1)
        flag = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)

        def cv_decode(d):
            return cv2.imdecode(np.frombuffer(d, np.uint8), flag)

        found[f"OpenCV {cv2.__version__} decode only"] = (cv_decode, False)
        found["OpenCV decode + INTER_AREA"] = (
            lambda d: cv2.resize(cv_decode(d), (size, size), interpolation=cv2.INTER_AREA),
            True,
        )
        found["OpenCV decode + INTER_CUBIC (no antialias)"] = (
            lambda d: cv2.resize(cv_decode(d), (size, size), interpolation=cv2.INTER_CUBIC),
            True,
        )
        found["OpenCV decode + PIL BICUBIC"] = (
            lambda d: np.asarray(Image.fromarray(cv_decode(d)).resize((size, size), BICUBIC)),
            True,
        )
    except ImportError:
        pass
    try:
        import imagecodecs

        found[f"imagecodecs {imagecodecs.__version__} PNG (libpng) decode only"] = (imagecodecs.png_decode, False)
        if hasattr(imagecodecs, "spng_decode"):
            found["imagecodecs SPNG decode only"] = (imagecodecs.spng_decode, False)
    except ImportError:
        pass
    return found


def time_paths(samples: list[bytes], candidates: dict, rounds: int) -> dict[str, list[float]]:
    """Interleaved: every round runs every path once per sample, so load changes hit all paths alike."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, (function, _) in candidates.items():
            for data in samples:
                started = time.perf_counter()
                function(data)
                times[name].append(time.perf_counter() - started)
    return times


def deviation(samples: list[bytes], function, reference) -> tuple[float, int, float]:
    """(mean |diff|, max |diff|, share of values off by more than 2) over all samples, in grey levels."""
    diffs = [
        np.abs(np.asarray(function(d), dtype=np.int16) - np.asarray(reference(d), dtype=np.int16)) for d in samples
    ]
    flat = np.concatenate([d.ravel() for d in diffs])
    return float(flat.mean()), int(flat.max()), float((flat > 2).mean())


def as_jpeg(data: bytes, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    pil_open(data).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="model input side (224, 384, ...)")
    parser.add_argument("--images", type=int, default=4, help="distinct synthetic images")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 images, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 2, 2
    pngs = [scin_sized_png(seed) for seed in range(args.images)]
    print(
        f"machine: {machine.describe_cpu()}; {platform.python_implementation()} "
        f"{platform.python_version()}, Pillow {Image.__version__} (zlib-ng {features.version('zlib_ng')}, "
        f"libjpeg-turbo {features.version('libjpeg_turbo')}); measured on one core"
    )
    print(
        f"{len(pngs)} synthetic SCIN-sized PNGs, 810x1080, {np.mean([len(p) for p in pngs]) / 1e6:.2f} MB each; "
        f"target {args.size}x{args.size}; {args.rounds} interleaved rounds; median ms\n"
    )
    report(pngs, paths(args.size), args.rounds)
    jpegs = [as_jpeg(p) for p in pngs]
    print(f"\nSame images as JPEG q90 ({np.mean([len(j) for j in jpegs]) / 1e6:.2f} MB): uploads and other data sets\n")
    jpeg_paths = {
        name: value
        for name, value in paths(args.size).items()
        if name.startswith(("PIL decode only", "PIL decode + BICUBIC (ref", "scinsearch"))
    }
    report(jpegs, jpeg_paths, args.rounds)


def report(samples: list[bytes], candidates: dict, rounds: int) -> None:
    reference = candidates["PIL decode + BICUBIC (reference = processor)"][0]
    times = time_paths(samples, candidates, rounds)
    print("| path | ms / image | images/s per core | mean abs diff | max abs diff | values off by > 2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (function, compare) in candidates.items():
        ms = statistics.median(times[name]) * 1000
        if compare:
            mean, worst, share = deviation(samples, function, reference)
            diff = f"{mean:.3f} | {worst} | {share:.2%}"
        else:
            diff = "n/a | n/a | n/a"
        print(f"| {name} | {ms:.1f} | {1000 / ms:.0f} | {diff} |")


if __name__ == "__main__":
    main()
