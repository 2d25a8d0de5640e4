"""A subscription: its configuration (what the client asked for) and its state (links,
cursors, the wake in flight), as one JSON document in the store.

Offsets inside are byte positions; -1 is "before the first byte" (a stream linked at
its start). The API shows them in the protocol's offset format."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import SubscriptionError, invalid
from .targets import RejectedTarget, check_url

TYPES = ("webhook", "pull-wake")
LEASE_DEFAULT_MS = 30_000
LEASE_MIN_MS = 1_000
LEASE_MAX_MS = 600_000
BEFORE_FIRST = -1
MAX_ID_LENGTH = 256
MAX_STREAMS = 1000  # explicit streams in one request
MAX_DESCRIPTION = 1024
RESERVED = "__ds"


def relative_path(value: Any, what: str = "stream path") -> str:
    """A stream-root-relative path as clients write it (`events/abc`), normalised."""
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string")
    path = value.strip("/")
    if not path:
        raise invalid(f"{what} must not be empty")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\x00" in path:
        raise invalid(f"{what} {value!r} has an empty, '.' or '..' segment")
    if parts[0] == RESERVED:
        raise invalid(f"{what} {value!r} is in the reserved {RESERVED} namespace")
    if len(path.encode("utf-8", "surrogatepass")) > 1024:
        raise invalid(f"{what} is longer than 1024 bytes")
    return path


def check_id(value: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or not value.isprintable() or "/" in value:
        raise invalid(f"subscription id must be 1 to {MAX_ID_LENGTH} printable characters without '/'")
    return value


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """What a PUT asks for, normalised: two PUTs that mean the same thing compare equal."""

    type: str
    pattern: str | None
    streams: tuple[str, ...]  # explicit, sorted, unique
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    @classmethod
    def parse(cls, body: Any) -> "SubscriptionConfig":
        """The PUT body, checked; raises SubscriptionError (400) saying what is wrong."""
        if not isinstance(body, dict):
            raise invalid("the body must be a JSON object")
        known = {"type", "pattern", "streams", "webhook", "wake_stream", "lease_ttl_ms", "description"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}")
        kind = body.get("type")
        if kind not in TYPES:
            raise invalid("type must be 'webhook' or 'pull-wake'")
        pattern = body.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str) or not pattern.strip("/"):
                raise invalid("pattern must be a non-empty string")
            pattern = relative_path(pattern, "pattern")
        raw_streams = body.get("streams", [])
        if raw_streams is None:
            raw_streams = []
        if not isinstance(raw_streams, list) or len(raw_streams) > MAX_STREAMS:
            raise invalid(f"streams must be an array of at most {MAX_STREAMS} paths")
        streams = tuple(sorted({relative_path(item) for item in raw_streams}))
        if pattern is None and not streams:
            raise invalid("at least one of pattern or streams is required")
        webhook_url = wake_stream = None
        webhook = body.get("webhook")
        if kind == "webhook":
            if not isinstance(webhook, dict) or "url" not in webhook:
                raise invalid("webhook subscriptions require webhook.url")
            if set(webhook) - {"url"}:
                raise invalid(f"unknown field webhook.{sorted(set(webhook) - {'url'})[0]}")
            webhook_url = webhook["url"]
            try:
                check_url(webhook_url)
            except RejectedTarget as exc:
                raise SubscriptionError(400, "WEBHOOK_URL_REJECTED", str(exc)) from None
            if body.get("wake_stream") is not None:
                raise invalid("wake_stream is for pull-wake subscriptions")
        else:
            if webhook is not None:
                raise invalid("webhook is for webhook subscriptions")
            if body.get("wake_stream") is None:
                raise invalid("pull-wake subscriptions require wake_stream")
            wake_stream = relative_path(body["wake_stream"], "wake_stream")
        lease = body.get("lease_ttl_ms", LEASE_DEFAULT_MS)
        if lease is None:
            lease = LEASE_DEFAULT_MS
        if isinstance(lease, bool) or not isinstance(lease, int) or not LEASE_MIN_MS <= lease <= LEASE_MAX_MS:
            raise invalid(f"lease_ttl_ms must be an integer from {LEASE_MIN_MS} to {LEASE_MAX_MS}")
        description = body.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > MAX_DESCRIPTION):
            raise invalid(f"description must be a string of at most {MAX_DESCRIPTION} characters")
        return cls(kind, pattern, streams, webhook_url, wake_stream, lease, description)

    def digest(self) -> str:
        """The hash of the normalised configuration (PROTOCOL §6.2: idempotent re-PUT)."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> dict:
        return {"type": self.type, "pattern": self.pattern, "streams": list(self.streams),
                "webhook_url": self.webhook_url, "wake_stream": self.wake_stream,
                "lease_ttl_ms": self.lease_ttl_ms, "description": self.description}

    @classmethod
    def from_json(cls, d: dict) -> "SubscriptionConfig":
        return cls(d["type"], d["pattern"], tuple(d["streams"]), d["webhook_url"], d["wake_stream"],
                   d["lease_ttl_ms"], d["description"])


@dataclass(slots=True)
class Link:
    """One stream the subscription follows, and its cursor (last processed, inclusive)."""

    glob: bool
    explicit: bool
    acked: int

    @property
    def link_type(self) -> str:
        return "explicit" if self.explicit else "glob"


@dataclass(slots=True)
class Wake:
    """The wake in flight: created when pending work meets an idle subscription, ended
    by `done`, a release, or its lease running out."""

    id: str
    snapshot: dict[str, int]  # stream -> tail when the wake was made (what `done` acks)
    trigger: str  # the stream that caused it (pull-wake events name it)
    holder: str | None = None  # pull-wake: the worker holding the claim
    lease_expires_at: float | None = None  # unix seconds; None: no lease runs yet
    delivered: bool = False  # webhook: the receiver took it (2xx)
    attempts: int = 0  # webhook: failed deliveries so far
    next_attempt_at: float | None = None  # webhook: when the next delivery attempt is due
    sending: bool = False  # webhook: an attempt is claimed (next_attempt_at is its claim's end)


@dataclass(slots=True)
class Subscription:
    root: str  # the stream root: paths in the API are relative to it
    id: str
    config: SubscriptionConfig
    base_url: str  # absolute URL of the stream root, for callback and JWKS URLs
    created_at: str  # ISO 8601, as shown
    links: dict[str, Link] = field(default_factory=dict)
    generation: int = 0
    wake: Wake | None = None
    status: str = "active"  # "failed" while a webhook retry is scheduled
    version: int = 0  # the store document's version (not part of the document)

    @property
    def key(self) -> str:
        return document_name(self.root, self.id)

    def absolute(self, relative: str) -> str:
        return self.root + relative

    def link(self, path: str, *, glob: bool = False, explicit: bool = False, acked: int) -> None:
        existing = self.links.get(path)
        if existing is None:
            self.links[path] = Link(glob, explicit, acked)
        else:
            existing.glob = existing.glob or glob
            existing.explicit = existing.explicit or explicit

    def to_document(self) -> bytes:
        wake = self.wake
        return json.dumps({
            "root": self.root, "id": self.id, "config": self.config.to_json(), "base_url": self.base_url,
            "created_at": self.created_at, "generation": self.generation, "status": self.status,
            "links": {path: [link.glob, link.explicit, link.acked] for path, link in self.links.items()},
            "wake": None if wake is None else {
                "id": wake.id, "snapshot": wake.snapshot, "trigger": wake.trigger, "holder": wake.holder,
                "lease_expires_at": wake.lease_expires_at, "delivered": wake.delivered,
                "attempts": wake.attempts, "next_attempt_at": wake.next_attempt_at, "sending": wake.sending,
            },
        }, separators=(",", ":")).encode()

    @classmethod
    def from_document(cls, body: bytes, version: int) -> "Subscription":
        d = json.loads(body)
        w = d["wake"]
        wake = None if w is None else Wake(w["id"], dict(w["snapshot"]), w["trigger"], w["holder"],
                                           w["lease_expires_at"], w["delivered"], w["attempts"], w["next_attempt_at"],
                                           w.get("sending", False))
        links = {path: Link(bool(g), bool(e), int(a)) for path, (g, e, a) in d["links"].items()}
        return cls(d["root"], d["id"], SubscriptionConfig.from_json(d["config"]), d["base_url"], d["created_at"],
                   links, d["generation"], wake, d["status"], version)


def document_name(root: str, subscription_id: str) -> str:
    """Ids are unique per stream root (its `__ds` namespace); a root ends with '/' and an
    id holds none, so the concatenation is unambiguous."""
    return root + subscription_id
