"""Hostile and clumsy images for the tests: crafted byte for byte, small on disk, big where it hurts.

Each builder says what it attacks. Nothing here needs Ghostscript or a PSD writer: the EPS and PSD
files only have to look like EPS and PSD to Pillow's format sniffing, which is the point of the
allow-list (they must be refused from their first bytes, never parsed).
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

from PIL import Image

PRIVACY_MARKER = b"SCINSEARCH-PRIVACY-MARKER-7f3a9c"  # in a photo's metadata: must never reach disk or logs


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, a few dozen bytes long (a decompression bomb's
    first line)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=2)
def sixteen_bit_png(width: int = 8000, height: int = 8000) -> bytes:
    """A real 16-bit greyscale PNG of width x height (8000^2 = the 64-MP limit), about 130 KB: a smooth
    gradient compresses well. Decoded naively to float64 it takes 8 bytes a pixel (512 MB)."""
    row = b"\0" + b"".join(struct.pack(">H", (x * 65535) // max(width - 1, 1)) for x in range(width))
    compressor = zlib.compressobj(1)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def float_tiff(width: int = 8000, height: int = 8000) -> bytes:
    """A 32-bit float TIFF of width x height (256 MB of floats once decoded), 100 KB on the wire: every
    one-row strip points at the same deflated row of zeros. TIFF is outside the allow-list: it must
    be refused before any of it is read."""
    row = zlib.compress(b"\0" * (4 * width), 9)
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value (or where the values are)
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 32),  # bits per sample
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, 1),  # black is zero
        (273, 4, height, "offsets"),
        (277, 3, 1, 1),  # samples per pixel
        (278, 4, 1, 1),  # rows per strip
        (279, 4, height, "counts"),
        (339, 3, 1, 3),  # sample format: IEEE float
    ]
    ifd_end = 8 + 2 + 12 * len(entries) + 4
    offsets_at, counts_at = ifd_end, ifd_end + 4 * height
    row_at = counts_at + 4 * height
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {"offsets": offsets_at, "counts": counts_at}.get(value, value)
        packed = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    arrays = struct.pack(f"<{height}I", *[row_at] * height) + struct.pack(f"<{height}I", *[len(row)] * height)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + arrays + row


def eps_comment_bomb(megabytes: float = 4) -> bytes:
    """EPS made of comment lines: Pillow's EPS header scan reads it line by line in Python (~1 s per
    MB), and loading it runs Ghostscript on a temporary copy."""
    line = b"%%" + b"x" * 60 + b"\n"
    return b"%!PS-Adobe-3.0 EPSF-3.0\n" + line * int(megabytes * 2**20 / len(line)) + b"%%BoundingBox: 0 0 8 8\n"


def psd_header(width: int = 64, height: int = 64) -> bytes:
    """The start of a Photoshop file (PSD's parser has had out-of-bounds writes, CVE-2026-25990)."""
    return b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3) + b"\0" * 64


def photo(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """A small noisy RGB picture (noise: truncating it cuts real image data)."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def marked_png(size: tuple[int, int] = (96, 72)) -> bytes:
    """A photo carrying PRIVACY_MARKER in a text chunk, so any copy of its bytes can be found."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", PRIVACY_MARKER.decode())
    return encoded(photo(size, seed=7), "PNG", pnginfo=info)


def polyglots() -> dict[str, bytes]:
    """Files that are two things at once: an EPS whose body is a PNG, a PNG signature followed by
    PostScript, and a JPEG start with a PSD and HTML behind it."""
    png = encoded(photo(), "PNG")
    jpeg = encoded(photo(), "JPEG")
    return {
        "eps-holding-png": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n" + png,
        "png-signature-then-postscript": png[:8] + b"%!PS-Adobe-3.0\nshowpage\n" + png[8:40],
        "jpeg-start-then-psd-and-html": jpeg[:20] + psd_header() + b"<html><script>alert(1)</script></html>",
    }


def every_writable_format(image: Image.Image | None = None) -> dict[str, bytes]:
    """One small file in every format this Pillow can write (PIL.Image.SAVE), keyed by format name;
    a format that needs another mode gets the first mode it accepts."""
    image = image or photo((32, 24))
    Image.init()
    files: dict[str, bytes] = {}
    for name in sorted(Image.SAVE):
        for mode in ("RGB", "L", "RGBA", "P", "1", "I;16", "F"):
            try:
                files[name] = encoded(image.convert(mode), name)
                break
            except Exception:  # this mode or format cannot be written here: try the next
                continue
    return files


def truncations(data: bytes) -> dict[str, bytes]:
    """The file cut inside its image data, at several points."""
    return {f"cut-at-{fraction}": data[: int(len(data) * fraction)] for fraction in (0.05, 0.25, 0.5, 0.75, 0.9)}


# Decoder time and memory bombs (issue 23): small files whose cost is in their structure --------------


def jpeg_segments(data: bytes) -> tuple[bytes, list[bytes], bytes]:
    """A baseline-free split of a progressive JPEG: (everything before the first scan, each scan with
    its entropy-coded data, the end). Written here apart from the code under test."""
    first = data.index(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    scans, start = [], first
    while start < end:
        following = data.find(b"\xff\xda", start + 2)
        stop = end if following < 0 else following
        scans.append(data[start:stop])
        start = stop
    return data[:first], scans, data[end:]


def repeated_scan_jpeg(
    size: tuple[int, int] = (2048, 2048), repeats: int = 400, scans_in_all: int | None = None
) -> bytes:
    """A progressive JPEG of a flat picture whose last (refinement) scan is repeated `repeats` times
    (or as often as makes `scans_in_all` scans): each copy is ~100 bytes and costs the decoder a pass over
    every coefficient of the image."""
    flat = Image.new("RGB", size, (180, 140, 120))
    head, scans, tail = jpeg_segments(encoded(flat, "JPEG", progressive=True, quality=90))
    if scans_in_all is not None:
        repeats = scans_in_all - len(scans)
    return head + b"".join(scans) + scans[-1] * repeats + tail


def comment_flood_jpeg(comments: int = 20_000) -> bytes:
    """A small JPEG with `comments` empty comment (COM) segments before its frame: 4 bytes each, and
    Pillow reads every one in Python (4 million of them: ~6 s and ~290 MB per header parse)."""
    jpeg = encoded(photo((32, 24)), "JPEG")
    return jpeg[:2] + b"\xff\xfe\x00\x02" * comments + jpeg[2:]


def chunk_flood_png(chunks: int = 20_000) -> bytes:
    """A small PNG with `chunks` empty unknown ancillary chunks before its image data (1.5 million
    of them took 17.7 s to open)."""
    png = encoded(photo((32, 24)), "PNG")
    ihdr_end = 8 + 25
    return png[:ihdr_end] + png_chunk(b"zzZz", b"") * chunks + png[ihdr_end:]


@functools.lru_cache(maxsize=2)
def lossless_webp(side: int = 8000) -> bytes:
    """A flat lossless WebP of side x side: 2.5 KB at 8000^2, and its decode peaks near 1 GB."""
    return encoded(Image.new("RGB", (side, side), (180, 140, 120)), "WEBP", lossless=True)
