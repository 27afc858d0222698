"""Is this photo, and this answer, good enough? Cheap checks a health worker can act on.

Every search by photo answers with a `QualityReport`: one `QualityCheck` per question, each with the
measured value, the threshold, a verdict ("pass", "warn" or "skipped"), a stable `code` for the page's
message catalogue, and an English reason and advice. The results are always returned as well: a
warning tells the health worker what to distrust and how to take a better photo, it hides nothing.

- Photo checks (`photo_checks`) look at the decoded photo only, on a copy shrunk in memory to at most
  ANALYSIS_SIDE pixels (so a 48-megapixel photo costs what a 0.2-megapixel one does): brightness,
  overexposure, sharpness, pixel size (of the photo as taken), colour tint.
- `gradability_check` turns the collection's gradability probe (`calibration.probe`) into a check;
  `similarity_check` compares the best match with the collection's "nothing alike" cut. Both are
  "skipped" until `scinsearch calibrate` has run on the collection.

Every threshold is a named constant here and nowhere else; docs/quality.md says how each was chosen.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

ANALYSIS_SIDE = 512  # the long side of the grey copy the checks measure (fixed, so values are comparable)
MIN_BRIGHTNESS = 0.15  # luminance (0-1) of the photo's brightest twentieth (95th percentile)
BRIGHT_PERCENTILE = 95
MAX_CLIPPED_SHARE = 0.25  # share of pixels blown out to white (every channel >= CLIPPED_LEVEL)
CLIPPED_LEVEL = 250
MIN_SHARPNESS = 20.0  # variance of the 4-neighbour Laplacian of the 0-255 grey copy
MIN_SIDE = 224  # pixels on the short side of the photo as taken: the smallest SigLIP input
MAX_CHANNEL_SHARE = {"red": 0.60, "green": 0.40, "blue": 0.40}  # share of the light in one colour channel
MIN_GRADABLE_PROBABILITY = 0.5  # below: more likely not gradable than gradable, by the calibrated probe
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luminance weights

PASS, WARN, SKIPPED = "pass", "warn", "skipped"
CHECK_NAMES = ("brightness", "overexposure", "sharpness", "size", "tint", "gradability", "similarity")

ADVICE = {
    "too_dark": "Take it again in daylight or with more light on the skin.",
    "overexposed": "Take it again without the flash, out of direct sunlight.",
    "blurred": "Hold the camera still, tap on the skin to focus, and take it again.",
    "too_small": "Take it again closer, so the skin problem fills most of the picture.",
    "tinted": "Take it again in daylight or under white light, not coloured light.",
    "not_gradable": "Take it again: close, sharp, well lit, with the skin problem in the middle.",
    "nothing_alike": "The cases below are the closest ones, but they do not look alike. "
    "Examine the patient and refer when in doubt.",
}


@dataclasses.dataclass(frozen=True)
class QualityCheck:
    """One check: what was measured, against what, and what to tell the health worker."""

    name: str
    value: float | None
    threshold: float | None
    verdict: str
    reason: str
    code: str | None = None  # set when the verdict is "warn": the page's catalogue key (quality_<code>)
    advice: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "value": None if self.value is None else round(float(self.value), 4),
            "threshold": None if self.threshold is None else round(float(self.threshold), 4),
            "verdict": self.verdict,
            "code": self.code,
            "reason": self.reason,
            "advice": self.advice,
        }


@dataclasses.dataclass
class QualityReport:
    """The checks of one answer; `ok` when none warns."""

    checks: list[QualityCheck]

    @property
    def ok(self) -> bool:
        return not self.warnings

    @property
    def warnings(self) -> list[QualityCheck]:
        return [check for check in self.checks if check.verdict == WARN]

    def get(self, name: str) -> QualityCheck | None:
        return next((check for check in self.checks if check.name == name), None)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [check.to_dict() for check in self.checks]}


def passed(name: str, value: float | None, threshold: float | None, reason: str) -> QualityCheck:
    return QualityCheck(name, value, threshold, PASS, reason)


def warned(name: str, value: float | None, threshold: float | None, code: str, reason: str) -> QualityCheck:
    return QualityCheck(name, value, threshold, WARN, reason, code, ADVICE[code])


def skipped(name: str, reason: str, value: float | None = None, threshold: float | None = None) -> QualityCheck:
    return QualityCheck(name, value, threshold, SKIPPED, reason)


# Photo checks -------------------------------------------------------------------------------------


def analysis_copy(image: Image.Image) -> np.ndarray:
    """The photo shrunk (never enlarged) to at most ANALYSIS_SIDE on its long side, as float32 RGB 0-255."""
    small = image if image.mode == "RGB" else image.convert("RGB")
    if max(small.size) > ANALYSIS_SIDE:
        scale = ANALYSIS_SIDE / max(small.size)
        size = (max(1, round(small.width * scale)), max(1, round(small.height * scale)))
        small = small.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.float32)


def photo_checks(image: Image.Image, taken_size: tuple[int, int] | None = None) -> list[QualityCheck]:
    """Brightness, overexposure, sharpness, size and tint of a decoded (upright RGB) photo.

    `taken_size`: (width, height) of the photo as taken, when `image` was decoded at a reduced scale
    (a JPEG draft); the size check must judge what the camera delivered."""
    pixels = analysis_copy(image)
    luminance = pixels @ LUMA / 255.0
    brightness = brightness_check(luminance)
    if brightness.verdict == WARN:  # darkness hides edges too: one warning that says what to fix
        sharpness = skipped("sharpness", "The photo is too dark to judge its sharpness.", None, MIN_SHARPNESS)
    else:
        sharpness = sharpness_check(luminance * 255.0, clipped_pixels(pixels))
    return [
        brightness,
        overexposure_check(pixels),
        sharpness,
        size_check(taken_size or image.size),
        tint_check(pixels, luminance),
    ]


def brightness_check(luminance: np.ndarray) -> QualityCheck:
    """The brightest twentieth of the photo, not its mean: well-lit dark skin filling the frame has a
    low mean but still has highlights; an underexposed photo has none."""
    value = float(np.percentile(luminance, BRIGHT_PERCENTILE))
    if value < MIN_BRIGHTNESS:
        return warned(
            "brightness",
            value,
            MIN_BRIGHTNESS,
            "too_dark",
            f"The photo is too dark: even its brightest parts reach only {value:.0%} of full brightness "
            f"(at least {MIN_BRIGHTNESS:.0%} expected).",
        )
    return passed("brightness", value, MIN_BRIGHTNESS, "The photo is bright enough.")


def clipped_pixels(pixels: np.ndarray) -> np.ndarray:
    """Pixels blown out to white: every channel at CLIPPED_LEVEL or above."""
    return pixels.min(axis=-1) >= CLIPPED_LEVEL


def overexposure_check(pixels: np.ndarray) -> QualityCheck:
    value = float(clipped_pixels(pixels).mean())
    if value > MAX_CLIPPED_SHARE:
        return warned(
            "overexposure",
            value,
            MAX_CLIPPED_SHARE,
            "overexposed",
            f"The photo is too bright: {value:.0%} of it is blown out to white "
            f"(at most {MAX_CLIPPED_SHARE:.0%} expected), so the skin there shows no detail.",
        )
    return passed("overexposure", value, MAX_CLIPPED_SHARE, "The photo is not overexposed.")


def laplacian_variance(grey: np.ndarray, clipped: np.ndarray | None = None) -> float | None:
    """Variance of the 4-neighbour Laplacian: edges and fine texture give large values, blur small ones.
    Pixels blown out to white (`clipped`) are left out: they have no texture to judge. None when less
    than a tenth of the photo is left to judge."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return None
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    if clipped is not None:
        laplacian = laplacian[~clipped[1:-1, 1:-1]]
    return float(laplacian.var()) if laplacian.size >= 0.1 * grey.size else None


def sharpness_check(grey: np.ndarray, clipped: np.ndarray | None = None) -> QualityCheck:
    value = laplacian_variance(grey, clipped)
    if value is None:
        return skipped("sharpness", "Too little of the photo shows detail to judge its sharpness.", None, MIN_SHARPNESS)
    if value < MIN_SHARPNESS:
        return warned(
            "sharpness",
            value,
            MIN_SHARPNESS,
            "blurred",
            f"The photo is blurred: it has almost no sharp edges or fine texture "
            f"(sharpness {value:.1f}, at least {MIN_SHARPNESS:.0f} expected).",
        )
    return passed("sharpness", value, MIN_SHARPNESS, "The photo is sharp enough.")


def size_check(size: tuple[int, int]) -> QualityCheck:
    width, height = size
    value = float(min(width, height))
    if value < MIN_SIDE:
        return warned(
            "size",
            value,
            MIN_SIDE,
            "too_small",
            f"The photo is too small: {width}x{height} pixels, less than {MIN_SIDE} on its short side, "
            f"so the search has to enlarge it and fine detail is missing.",
        )
    return passed("size", value, MIN_SIDE, f"The photo is large enough ({width}x{height} pixels).")


def tint_check(pixels: np.ndarray, luminance: np.ndarray) -> QualityCheck:
    """Each channel's share of the light against its limit: skin reflects more red than green or blue,
    so red is allowed more; a green or blue cast, or a red lamp, goes past its limit."""
    if float(luminance.mean()) < 0.02:
        return skipped("tint", "The photo is too dark to judge its colours.")
    totals = pixels.reshape(-1, 3).sum(axis=0, dtype=np.float64)
    shares = dict(zip(MAX_CHANNEL_SHARE, totals / totals.sum()))
    channel = max(MAX_CHANNEL_SHARE, key=lambda c: shares[c] / MAX_CHANNEL_SHARE[c])
    value, limit = float(shares[channel]), MAX_CHANNEL_SHARE[channel]
    if value > limit:
        return warned(
            "tint",
            value,
            limit,
            "tinted",
            f"The colours of the photo look wrong: it has a strong {channel} cast ({channel} carries "
            f"{value:.0%} of the light, at most {limit:.0%} expected), which changes how the skin looks.",
        )
    return passed("tint", value, limit, "The colours of the photo look natural.")


# Checks that need the collection's calibration -------------------------------------------------------


def gradability_check(probability: float | None) -> QualityCheck:
    """The probe's calibrated probability that dermatologists would find the photo good enough to judge."""
    if probability is None:
        return skipped("gradability", "No gradability model for this collection: run `scinsearch calibrate`.")
    if probability < MIN_GRADABLE_PROBABILITY:
        return warned(
            "gradability",
            probability,
            MIN_GRADABLE_PROBABILITY,
            "not_gradable",
            f"A dermatologist might not be able to judge this photo: photos like it were found gradable "
            f"with probability {probability:.0%} (below {MIN_GRADABLE_PROBABILITY:.0%}).",
        )
    return passed(
        "gradability",
        probability,
        MIN_GRADABLE_PROBABILITY,
        f"Photos like this one were found gradable by dermatologists (probability {probability:.0%}).",
    )


def similarity_check(best: float | None, cut: float | None, filtered: bool = False) -> QualityCheck:
    """The best match against the collection's own "nothing alike" cut (see `calibration`)."""
    if cut is None:
        return skipped("similarity", "No similarity cut for this collection: run `scinsearch calibrate`.", best, None)
    if best is None:
        return skipped("similarity", "No case was found to compare with.", None, cut)
    among = "among the cases that match the filters " if filtered else ""
    if best < cut:
        return warned(
            "similarity",
            best,
            cut,
            "nothing_alike",
            f"No sufficiently similar case exists {among}in the collection: the closest one has similarity "
            f"{best:.2f}, below {cut:.2f}, which nearly all of the collection's own photos reach.",
        )
    return passed("similarity", best, cut, f"Similar cases were found {among}(best similarity {best:.2f}).")
