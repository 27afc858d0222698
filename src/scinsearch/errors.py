"""One exception type for every problem a user can fix, so the CLI can print one line and exit.

Each error also carries a machine-readable `code`, defined here and nowhere else: the HTTP service
sends it next to the precise one-line `detail` ({"detail": ..., "code": ...}), and the kiosk page
turns the code into plain advice in the health worker's language (static/i18n/*.json, `error_<code>`).
"""

# The codes, one per kind of failure a caller (or the page) reacts to differently.
BAD_REQUEST = "bad_request"  # anything else the caller sent wrong (a bad parameter, malformed JSON)
NO_PHOTO = "no_photo"  # a photo search without a photo
EMPTY_UPLOAD = "empty_upload"  # a file of zero bytes
NOT_AN_IMAGE = "not_an_image"  # the bytes are not a picture at all
BROKEN_IMAGE = "broken_image"  # a picture whose data is cut off or corrupt
UNSUPPORTED_FORMAT = "unsupported_format"  # a picture or body in a format that is not accepted
IMAGE_TOO_LARGE = "image_too_large"  # too many pixels (decompression-bomb guard)
UPLOAD_TOO_LARGE = "upload_too_large"  # too many bytes
BAD_FILTER = "bad_filter"  # a filter value outside SCIN's vocabulary, or matching no stored case
EMPTY_TEXT = "empty_text"  # a text search with nothing to search for
UNAUTHORIZED = "unauthorized"  # missing or wrong API key
NOT_FOUND = "not_found"  # an unknown image, case or path
TIMEOUT = "timeout"  # the request body came too slowly
OVERLOADED = "overloaded"  # too many requests at once: retry shortly
NOT_READY = "not_ready"  # the model or the store is still loading, or held by another process
INTERNAL = "internal"  # a bug: see the service log

# How each code answers over HTTP; codes not listed answer 400.
HTTP_STATUS = {
    UNAUTHORIZED: 401,
    NOT_FOUND: 404,
    TIMEOUT: 408,
    UPLOAD_TOO_LARGE: 413,
    IMAGE_TOO_LARGE: 413,
    UNSUPPORTED_FORMAT: 415,
    OVERLOADED: 503,
    NOT_READY: 503,
    INTERNAL: 500,
}
# The code of an HTTP error raised without one (FastAPI's own 404/405/422, a plain HTTPException).
CODE_FOR_STATUS = {
    401: UNAUTHORIZED,
    404: NOT_FOUND,
    405: BAD_REQUEST,
    408: TIMEOUT,
    413: UPLOAD_TOO_LARGE,
    415: UNSUPPORTED_FORMAT,
    503: OVERLOADED,
    500: INTERNAL,
}


class ScinSearchError(Exception):
    """A user-facing failure: bad input, a missing file, a busy store. Its message is one line;
    `code` says which kind of failure it is (one of the codes above)."""

    def __init__(self, message: str = "", code: str = BAD_REQUEST):
        super().__init__(message)
        self.code = code


class StoreLockedError(ScinSearchError):
    """The embedded store is open in another process (embedded Qdrant allows one owner)."""

    def __init__(self, message: str = "", code: str = NOT_READY):
        super().__init__(message, code)
