"""What the engine reports as it works: the one contract between the engine and metrics.

The server's metrics (ops/metrics.py) implement it structurally, together with what the
protocol layer reports; the engine never imports them. Calls are cheap and synchronous."""

from __future__ import annotations

from typing import Protocol


class EngineEvents(Protocol):
    def appended(self, nbytes: int) -> None:
        """`nbytes` of stream data became durable (an append, or a create with a body)."""

    def stream_expired(self) -> None:
        """A stream ceased to exist because its TTL or Expires-At passed."""

    def producer_duplicate(self) -> None:
        """An idempotent producer's retry was recognised and not written again."""

    def retention_applied(self, dropped: int, reclaimed: int) -> None:
        """Retention moved a stream's floor by `dropped` bytes; the store released the
        storage of `reclaimed` bytes (now or of earlier passes)."""


class _NoEvents:
    """The engine's default when nobody listens (an engine used on its own, in tests)."""

    def appended(self, nbytes: int) -> None:
        pass

    def stream_expired(self) -> None:
        pass

    def producer_duplicate(self) -> None:
        pass

    def retention_applied(self, dropped: int, reclaimed: int) -> None:
        pass


NO_EVENTS: EngineEvents = _NoEvents()
