"""Stream lifetime: a sliding TTL (reset by reads and writes, never by HEAD) or an
absolute Expires-At. Evaluated lazily on every access, so expiry is precise to the
request without any background timer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lifetime:
    ttl: int | None = None  # seconds of idleness allowed
    expires_at: float | None = None  # unix seconds
    expires_at_text: str | None = None  # as the client wrote it, echoed on HEAD

    @classmethod
    def from_settings(cls, settings: dict) -> "Lifetime":
        return cls(settings.get("ttl"), settings.get("expires_at"), settings.get("expires_at_text"))

    def to_settings(self) -> dict:
        return {"ttl": self.ttl, "expires_at": self.expires_at, "expires_at_text": self.expires_at_text}

    def is_expired(self, last_access: float, now: float) -> bool:
        if self.expires_at is not None and now >= self.expires_at:
            return True
        return self.ttl is not None and now >= last_access + self.ttl

    @property
    def unbounded(self) -> bool:
        return self.ttl is None and self.expires_at is None


def fork_lifetime(source: Lifetime, requested: Lifetime) -> Lifetime:
    """The fork's own request wins; otherwise it inherits the source's TTL value (its own
    sliding window) or the source's Expires-At (so a fork cannot retain data forever)."""
    return source if requested.unbounded else requested
