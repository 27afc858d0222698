"""Cheap structural checks on untrusted image bytes, before any decoder (Pillow's Python header
readers included) sees them.

Why: some files cost a decoder far more than their size suggests, through their structure alone
(issue 23). A progressive JPEG can repeat a refinement scan: each ~100-byte copy makes libjpeg pass
over every coefficient of the image again (400 KB: 11 s). A JPEG of 4 million empty comment segments
(16 MB) costs Pillow's header reader ~6 s and ~290 MB; a PNG of 1.5 million empty unknown chunks,
17.7 s. A 2.5 KB lossless WebP of 8000x8000 decodes through libwebp's animation decoder at ~16 bytes a
canvas pixel (~1 GB). No camera writes any of these: a camera JPEG has a dozen or two segments and
at most ~10-20 scans; a camera PNG a handful of ancillary chunks; a phone's WebP one frame.

So the file's segments are walked here, in a few microseconds per segment and never more than the
limits below (the walk stops at the first one passed), and a file past a limit is refused before it
is parsed. Each limit is far above what cameras and SCIN produce (docs/security.md).
"""

from __future__ import annotations

import re
import struct

MAX_JPEG_SCANS = 64  # progressive JPEGs of libjpeg, mozjpeg and phones use about 10; each scan is a full pass
MAX_JPEG_SEGMENTS = 1024  # marker segments of the first image (APPn, COM, DQT, DHT, SOF, SOS, ...): cameras ~10-30
MAX_PNG_ANCILLARY_CHUNKS = 256  # chunks other than IHDR/PLTE/IDAT/IEND: cameras and editors write a handful
MAX_PNG_CHUNKS = 20_000  # a 64 MiB PNG in libpng's 8 KiB IDAT chunks has 8,192
MAX_WEBP_FRAMES = 64  # animation frames (a phone photo has one)
# libwebp decodes through a full RGBA canvas and Pillow copies it: ~16 bytes a canvas pixel (measured,
# 8000x8000 lossless: 983 MiB). A WebP's canvas x frames is held to this fraction of the pixel limit.
WEBP_PIXEL_FRACTION = 4

# In entropy-coded data a 0xFF byte is followed by 0x00 (stuffing), a restart marker (D0-D7) or fill;
# anything else is the next marker.
JPEG_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: markers without a length
JPEG_SOS, JPEG_EOI = 0xDA, 0xD9
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}


def structure_problem(raw: bytes, max_pixels: int) -> str | None:
    """Why these bytes are refused before decoding (a few words), or None when their structure is
    within the limits. Formats not walked here (AVIF, HEIF) and files too broken to walk are left to
    the decoder, which refuses broken files itself."""
    if raw[:3] == b"\xff\xd8\xff":
        return jpeg_problem(raw)
    if raw[:8] == PNG_SIGNATURE:
        return png_problem(raw)
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return webp_problem(raw, max_pixels)
    return None


def jpeg_problem(raw: bytes) -> str | None:
    """Count the marker segments and scans of the first image (up to its EOI; an MPO's other pictures
    are never decoded)."""
    position, segments, scans = 2, 0, 0
    size = len(raw)
    while position + 4 <= size:
        if raw[position] != 0xFF:
            return None  # not a marker where one must be: broken, the decoder says so
        marker = raw[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker == JPEG_EOI:
            return None
        position += 2
        if marker in JPEG_STANDALONE:
            continue
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return f"JPEG has more than {MAX_JPEG_SEGMENTS} marker segments (a camera writes a few dozen)"
        (length,) = struct.unpack_from(">H", raw, position)
        position += length
        if marker == JPEG_SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return f"JPEG has more than {MAX_JPEG_SCANS} scans (a camera writes at most about 20)"
            following = JPEG_NEXT_MARKER.search(raw, position)
            if following is None:
                return None
            position = following.end() - 2
    return None


def png_problem(raw: bytes) -> str | None:
    """Count the chunks up to IEND (length, type, data, CRC each)."""
    position, chunks, ancillary = 8, 0, 0
    while position + 8 <= len(raw):
        length, kind = struct.unpack_from(">I4s", raw, position)
        chunks += 1
        if kind not in PNG_CRITICAL:
            ancillary += 1
            if ancillary > MAX_PNG_ANCILLARY_CHUNKS:
                return f"PNG has more than {MAX_PNG_ANCILLARY_CHUNKS} ancillary chunks (a camera writes a handful)"
        if chunks > MAX_PNG_CHUNKS:
            return f"PNG has more than {MAX_PNG_CHUNKS} chunks"
        if kind == b"IEND":
            return None
        position += 12 + length
    return None


def webp_problem(raw: bytes, max_pixels: int) -> str | None:
    """The canvas (VP8X, or the single VP8/VP8L frame) times the animation frames, against the limit."""
    position, canvas, frames = 12, 0, 0
    while position + 8 <= len(raw):
        kind, length = struct.unpack_from("<4sI", raw, position)
        data = raw[position + 8 : position + 8 + min(length, 16)]
        if kind == b"VP8X" and len(data) >= 10:
            width = 1 + int.from_bytes(data[4:7], "little")
            height = 1 + int.from_bytes(data[7:10], "little")
            canvas = width * height
        elif kind == b"VP8L" and len(data) >= 5 and not canvas:
            bits = int.from_bytes(data[1:5], "little")
            canvas = (1 + (bits & 0x3FFF)) * (1 + ((bits >> 14) & 0x3FFF))
        elif kind == b"VP8 " and len(data) >= 10 and not canvas:
            width, height = struct.unpack_from("<HH", data, 6)
            canvas = (width & 0x3FFF) * (height & 0x3FFF)
        elif kind == b"ANMF":
            frames += 1
            if frames > MAX_WEBP_FRAMES:
                return f"WebP has more than {MAX_WEBP_FRAMES} animation frames"
        position += 8 + length + (length & 1)
    limit = max_pixels // WEBP_PIXEL_FRACTION
    if canvas * max(frames, 1) > limit:
        return (
            f"WebP canvas x frames is {canvas * max(frames, 1) / 1e6:.1f} megapixels "
            f"(limit {limit / 1e6:.0f}: WebP decodes at ~16 bytes a pixel)"
        )
    return None
