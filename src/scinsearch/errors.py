"""One exception type for every problem a user can fix, so the CLI can print one line and exit."""


class ScinSearchError(Exception):
    """A user-facing failure: bad input, a missing file, a busy store. Its message is one line."""


class StoreLockedError(ScinSearchError):
    """The embedded store is open in another process (embedded Qdrant allows one owner)."""
