"""Read a photo upload entirely in memory, with the size limit enforced while reading.

Why not FastAPI's `UploadFile`: Starlette's multipart parser spools any file part over 1 MB to a
temporary file on disk, and a patient photo must never touch the disk. So the body is read here,
counted as it arrives (413 as soon as it passes the limit, whatever Content-Length claimed), and
parsed with python-multipart's streaming parser into `bytes`, in a worker thread (a 20 MB form is
CPU work the event loop must not wait for). A raw `image/*` body is accepted too. The photo is then
decoded in the photo decoder process (`scinsearch.photo_worker`), never in the server.
"""

from __future__ import annotations

import dataclasses
import logging

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from scinsearch.errors import EMPTY_UPLOAD, NO_PHOTO, UPLOAD_TOO_LARGE, ScinSearchError

# python-multipart logs a malformed body's offending byte ("Found invalid character ..."): an upload's
# bytes never reach a log, and the 400 says what was wrong.
logging.getLogger("python_multipart").setLevel(logging.CRITICAL + 1)
MAX_PARTS = 64  # a form has a photo and a dozen filter fields; more is not a kiosk talking
MAX_FIELD_BYTES = 4096
PHOTO_FIELDS = ("photo", "image", "file")
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclasses.dataclass
class Upload:
    """The fields of a form (every value, in order) and its file parts (field name -> bytes)."""

    fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def photo(self) -> bytes:
        """The uploaded photo, or a 400 saying what was missing."""
        for name in PHOTO_FIELDS:
            if name in self.files:
                if not self.files[name]:
                    raise ScinSearchError(f"the uploaded file '{name}' is empty", EMPTY_UPLOAD)
                return self.files[name]
        if self.files:
            raise ScinSearchError(
                f"no photo: send the image in a form field named 'photo' (got {', '.join(sorted(self.files))})",
                NO_PHOTO,
            )
        raise ScinSearchError("no photo: send the image as a multipart form field named 'photo'", NO_PHOTO)


def too_large(limit: int) -> ScinSearchError:
    return ScinSearchError(f"upload larger than the limit of {limit / 2**20:.1f} MiB", UPLOAD_TOO_LARGE)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing it (413) once it passes `limit` bytes: a lying or absent
    Content-Length cannot make the server buffer more than the limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:  # the client left, or the guard answered (408, 413): nobody reads this answer
        raise HTTPException(400, "the client disconnected before the whole body arrived") from None
    return b"".join(chunks)


class _PartCollector:
    """python-multipart callbacks that keep every part in memory (never a file)."""

    def __init__(self):
        self.upload = Upload()
        self.parts = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise HTTPException(400, f"too many form fields (limit {MAX_PARTS})")
        self._disposition, self._data = b"", bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._data += data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def on_part_end(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise HTTPException(400, "a form part has no name")
        if b"filename" in options:
            self.upload.files[name] = bytes(self._data)
        elif len(self._data) > MAX_FIELD_BYTES:
            raise HTTPException(400, f"form field '{name}' is longer than {MAX_FIELD_BYTES} bytes")
        else:
            self.upload.fields.setdefault(name, []).append(self._data.decode("utf-8", "replace"))


def parse_multipart(body: bytes, content_type: str) -> Upload:
    """Parse a multipart/form-data body held in memory."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart body without a boundary")
    collector = _PartCollector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except (HTTPException, ScinSearchError):
        raise
    except Exception:  # python-multipart raises several types for malformed bodies
        raise HTTPException(400, "malformed multipart form data") from None
    return collector.upload


async def read_upload(request: Request, limit: int) -> Upload:
    """A multipart form, or a raw image body (Content-Type image/*), read into memory."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        body = await read_body(request, limit)
        return await run_in_threadpool(parse_multipart, body, content_type)
    if media_type.startswith(RAW_IMAGE_TYPES):
        body = await read_body(request, limit)
        if not body:
            raise ScinSearchError("the uploaded file is empty", EMPTY_UPLOAD)
        return Upload(files={"photo": body})
    if not media_type or media_type == "application/x-www-form-urlencoded":  # a form without a file part
        raise ScinSearchError("no photo: send a multipart form with a field named 'photo'", NO_PHOTO)
    raise HTTPException(415, f"unsupported content type {media_type!r}: send multipart/form-data or image/*")
