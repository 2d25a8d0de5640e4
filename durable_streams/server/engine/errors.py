"""Why the engine refused an operation, without HTTP: the protocol layer maps each
kind to a status code and headers (protocol/errors.py)."""

from __future__ import annotations


class StreamError(Exception):
    """Base of every refusal. `reason` is a short human-readable sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRequest(StreamError):
    """The request is malformed or names an impossible position."""


class StreamNotFound(StreamError):
    """No such stream (never created, deleted or expired)."""


class StreamGone(StreamError):
    """The stream was deleted but is kept for its forks."""


class BelowFloor(StreamGone):
    """A read from an offset that retention has dropped; carries the earliest retained."""

    def __init__(self, floor: int) -> None:
        super().__init__("offset is before the earliest retained offset of the stream")
        self.floor = floor


class Conflict(StreamError):
    """The request contradicts the stream's configuration or writer state."""


class StreamClosed(Conflict):
    """An append to a closed stream; carries the final tail for the client."""

    def __init__(self, reason: str, tail: int) -> None:
        super().__init__(reason)
        self.tail = tail


class StaleProducerEpoch(StreamError):
    """A producer with an older epoch than the server knows (zombie fencing)."""

    def __init__(self, current_epoch: int) -> None:
        super().__init__(f"producer epoch is stale; current epoch is {current_epoch}")
        self.current_epoch = current_epoch


class ProducerSeqGap(Conflict):
    """A producer skipped sequence numbers."""

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(f"producer sequence gap: expected {expected}, received {received}")
        self.expected = expected
        self.received = received


class ShuttingDown(StreamError):
    """The server is stopping."""
