"""Subscriptions (PROTOCOL.md §6–7): durable cursors over streams that wake workers,
by webhook or by an event in a wake stream, fenced by generation.

One mechanism carries every change: under the subscription's lock, read the tails of its
streams, change a copy of its state, write the copy to the store (a document, as durable
as the streams), and only then act on it (send a webhook, append a wake event, answer
the request). So what a client was told, or what a receiver was sent, is never ahead of
what a restart finds. On a shared store (PostgreSQL) the write is a compare-and-set: if
another node changed the subscription first, this node reloads it and decides again.

`settle` brings a subscription to rest: it ends a wake whose lease ran out, starts one
when an idle subscription has pending work, (re)sends an undelivered webhook when its
retry is due, and arms a timer for the next deadline. Appends, deadlines, restarts and
the end of a wake all just ask for a settle.

Choices where the protocol leaves room (documented in the README):
- A webhook wake keeps its wake_id and generation through delivery retries; its lease
  starts when the receiver takes it (2xx), and a callback extends it.
- After a restart, a webhook wake that was in flight is sent again (same wake, fresh
  token), and an unclaimed pull-wake wake is announced again in its wake stream: at least
  once, fenced by generation.
- A pattern links a stream that appears after the subscription at its start (-1), so
  the append that made it is pending; at creation, existing streams link at their tail.
- When a linked stream is deleted its glob link goes; an explicit link stays, reset to
  the start, so a stream re-created at that path is followed from its first byte."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable, Protocol

from urllib.parse import quote

from ..engine.errors import InvalidRequest, StreamError
from ..engine.offsets import format_offset, parse_position
from ..engine.streams import AppendRequest, StaleDocument, StreamEngine
from .delivery import Outcome, WebhookSender
from .errors import SubscriptionError, fenced, invalid, invalid_offset, not_found
from .glob import matches
from .model import BEFORE_FIRST, Subscription, SubscriptionConfig, Wake, document_name, relative_path
from .signing import Keyring

log = logging.getLogger(__name__)

KIND = "subscriptions"
RETRY_FIRST = 1.0  # seconds: webhook retries back off from here ...
RETRY_MAX = 60.0  # ... doubling up to here
RETRY_JITTER = 0.2  # +-20%
RECONCILE_INTERVAL = 1.0  # shared stores: seconds between looks at what other nodes did
ATTEMPT_HOLD = 20.0  # seconds a node's claim on a delivery attempt lasts (longer than its timeout)
MAX_CONFLICTS = 8  # shared stores: lost compare-and-sets before a request gives up (503)
_MATCH_CACHE_LIMIT = 50_000


class SubscriptionEvents(Protocol):
    """What subscriptions report (ops/metrics.py implements it)."""

    def webhook_delivery(self, outcome: str) -> None: ...

    def wake_claim(self, outcome: str) -> None: ...


class _NoEvents:
    def webhook_delivery(self, outcome: str) -> None:
        pass

    def wake_claim(self, outcome: str) -> None:
        pass


class _Conflict(Exception):
    """Another node wrote the subscription first: decide again on the fresh copy."""


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def show_offset(position: int) -> str:
    return "-1" if position == BEFORE_FIRST else format_offset(position)


def retry_delay(attempts: int) -> float:
    """Seconds before retry number `attempts` (1, 2, ...): 1 s doubling to 60 s, +-20%."""
    base = min(RETRY_FIRST * 2 ** (attempts - 1), RETRY_MAX)
    return base * (1 + RETRY_JITTER * (2 * random.random() - 1))


Tails = dict[str, int | None]  # relative path -> tail, None when the stream is not there


class SubscriptionManager:
    def __init__(self, engine: StreamEngine, *, callback_base: str | None = None,
                 events: SubscriptionEvents | None = None, sender: WebhookSender | None = None) -> None:
        """`callback_base`: the public origin (or URL prefix) for callback and JWKS URLs
        (`webhook_callback_url`); None: the origin of the request that made the subscription."""
        self.engine = engine
        self.keys = Keyring(engine)
        self.callback_base = callback_base.rstrip("/") if callback_base else None
        self.events = events or _NoEvents()
        self.sender = sender or WebhookSender()
        self._subs: dict[str, Subscription] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._settling: dict[str, asyncio.Task] = {}
        self._again: set[str] = set()
        self._appeared: dict[str, set[str]] = {}  # key -> streams its pattern matches, not linked yet
        self._delivering: dict[str, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._linked: dict[str, set[str]] = {}  # absolute stream path -> subscription keys
        self._by_pattern: dict[str, tuple[str, ...]] = {}  # absolute path -> keys whose pattern matches
        self._reconciler: asyncio.Task | None = None
        self._stopping = False
        engine.watch(self)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        await self.keys.open()
        await self._load_all()
        for key in list(self._subs):
            self._kick(key, scan=True)  # resume: redeliver, re-announce, re-arm deadlines
        if self.engine.store.shared:
            self._reconciler = asyncio.create_task(self._reconcile_loop())

    async def stop(self) -> None:
        self._stopping = True
        if self._reconciler is not None:
            self._reconciler.cancel()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        tasks = [*self._settling.values(), *self._delivering.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        if self._reconciler is not None:
            tasks.append(self._reconciler)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sender.close()

    @property
    def retry_queue_depth(self) -> int:
        """Webhook wakes waiting for a retry after a failed delivery."""
        return sum(1 for s in self._subs.values() if s.wake and not s.wake.delivered and s.wake.attempts)

    @property
    def leases_held(self) -> int:
        now = self.engine.clock()
        return sum(1 for s in self._subs.values()
                   if s.wake and s.wake.lease_expires_at is not None and s.wake.lease_expires_at > now)

    @property
    def count(self) -> int:
        return len(self._subs)

    # ---------------------------------------------------------------- the API (routes call these)

    async def get(self, root: str, subscription_id: str) -> Subscription:
        """The subscription as it stands (on a shared store: as the database has it now)."""
        key = document_name(root, subscription_id)
        if self.engine.store.shared or key not in self._subs:
            await self._reload(key)
        sub = self._subs.get(key)
        if sub is None:
            raise not_found()
        return sub

    async def create(self, root: str, subscription_id: str, config: SubscriptionConfig,
                     request_base: str) -> tuple[Subscription, bool]:
        """PUT: (the subscription, created?). 409 when it exists with another configuration."""
        key = document_name(root, subscription_id)
        for _attempt in range(MAX_CONFLICTS):
            async with self._lock(key):
                existing = self._subs.get(key)
                if existing is not None:
                    if existing.config.digest() != config.digest():
                        raise SubscriptionError(409, "SUBSCRIPTION_ALREADY_EXISTS",
                                                "a subscription with this id exists with a different configuration")
                    return existing, False
                base = (self.callback_base + root) if self.callback_base else request_base
                sub = Subscription(root, subscription_id, config, base, _iso(self.engine.clock()))
                tails = await self._current_tails(root, config.streams)
                for path in config.streams:
                    tail = tails[path]
                    sub.link(path, explicit=True, acked=BEFORE_FIRST if tail is None else tail)
                if config.pattern is not None:
                    async for path in self.engine.paths():
                        relative = self._relative(root, path)
                        if relative is not None and matches(config.pattern, relative):
                            tail = await self._tail(path)
                            if tail is not None:
                                sub.link(relative, glob=True, acked=tail)
                try:
                    await self._write(sub)
                except _Conflict:
                    continue  # made by another node meanwhile: compare with theirs
                self._by_pattern.clear()
                return sub, True
        raise SubscriptionError(503, "UNAVAILABLE", "the subscription kept changing; retry")

    async def delete(self, root: str, subscription_id: str) -> None:
        key = document_name(root, subscription_id)
        async with self._lock(key):
            sub = self._subs.get(key)
            if sub is None:
                await self._reload(key)
                sub = self._subs.get(key)
                if sub is None:
                    raise not_found()
            await self.engine.delete_document(KIND, key)
            self._forget(key)

    async def add_streams(self, root: str, subscription_id: str, paths: list[str]) -> None:
        async def change(sub: Subscription, tails: Tails) -> None:
            for path in paths:
                tail = tails.get(path)
                sub.link(path, explicit=True, acked=BEFORE_FIRST if tail is None else tail)
        await self._change(document_name(root, subscription_id), change, extra=paths)

    async def remove_stream(self, root: str, subscription_id: str, path: str) -> None:
        async def change(sub: Subscription, tails: Tails) -> None:
            link = sub.links.get(path)
            if link is None:
                return
            link.explicit = False
            if not (link.glob and sub.config.pattern and matches(sub.config.pattern, path)):
                del sub.links[path]
        await self._change(document_name(root, subscription_id), change)

    async def callback(self, root: str, subscription_id: str, token: str, body: dict) -> bool:
        """A webhook receiver's callback: acks, lease extension, `done`. Returns next_wake."""
        return await self._finish(root, subscription_id, token, body, kind="callback", releases=False)

    async def ack(self, root: str, subscription_id: str, token: str, body: dict) -> bool:
        """A pull-wake worker's ack (a heartbeat without `done`). Returns next_wake."""
        return await self._finish(root, subscription_id, token, body, kind="claim", releases=False)

    async def release(self, root: str, subscription_id: str, token: str, body: dict) -> None:
        await self._finish(root, subscription_id, token, body, kind="claim", releases=True)

    async def claim(self, root: str, subscription_id: str, worker: str) -> dict:
        key = document_name(root, subscription_id)

        async def change(sub: Subscription, tails: Tails) -> None:
            if sub.config.type != "pull-wake":
                raise invalid("only pull-wake subscriptions are claimed")
            now = self.engine.clock()
            self._expire_lease(sub, now)
            wake = sub.wake
            if wake is not None and wake.holder is not None:
                self.events.wake_claim("already_claimed")
                raise SubscriptionError(409, "ALREADY_CLAIMED", "another worker holds the claim",
                                        current_holder=wake.holder, generation=sub.generation)
            if wake is None:
                if not self._pending(sub, tails):
                    self.events.wake_claim("no_pending_work")
                    raise SubscriptionError(409, "NO_PENDING_WORK", "the subscription has no pending work")
                wake = self._new_wake(sub, tails)
            wake.holder = worker
            wake.lease_expires_at = now + sub.config.lease_ttl_ms / 1000

        sub = await self._change(key, change)
        self.events.wake_claim("claimed")
        wake = sub.wake
        return {
            "wake_id": wake.id, "generation": sub.generation,
            "token": self._token(sub, "claim"),
            "streams": self._stream_infos(sub, wake.snapshot), "lease_ttl_ms": sub.config.lease_ttl_ms,
        }

    # ---------------------------------------------------------------- views

    def describe(self, sub: Subscription) -> dict:
        config = sub.config
        webhook = None
        if config.type == "webhook":
            key = self.keys.active
            webhook = {"url": config.webhook_url,
                       "signing": {"alg": "ed25519", "kid": key.kid, "jwks_url": sub.base_url + "__ds/jwks.json"}}
        return {
            "id": sub.id, "subscription_id": sub.id, "type": config.type, "pattern": config.pattern,
            "streams": [{"path": path, "link_type": link.link_type, "acked_offset": show_offset(link.acked)}
                        for path, link in sorted(sub.links.items())],
            "webhook": webhook, "wake_stream": config.wake_stream, "lease_ttl_ms": config.lease_ttl_ms,
            "created_at": sub.created_at, "status": sub.status, "description": config.description,
        }

    def _stream_infos(self, sub: Subscription, tails: dict[str, int]) -> list[dict]:
        infos = []
        for path, link in sorted(sub.links.items()):
            tail = tails.get(path)
            if tail is None:
                continue
            infos.append({"path": path, "link_type": link.link_type, "acked_offset": show_offset(link.acked),
                          "tail_offset": format_offset(tail), "has_pending": tail > link.acked and tail > 0})
        return infos

    def _token(self, sub: Subscription, kind: str) -> str:
        return self.keys.token({"s": sub.key, "g": sub.generation, "w": sub.wake.id, "k": kind})

    # ---------------------------------------------------------------- following streams (StreamWatcher)

    def appended(self, path: str, tail: int) -> None:
        if not self._subs or self._stopping:
            return
        for key in self._interested(path):
            sub = self._subs.get(key)
            if sub is None:
                continue
            relative = path[len(sub.root):]
            if relative not in sub.links:
                self._appeared.setdefault(key, set()).add(relative)
            elif sub.wake is not None:
                lock = self._locks.get(key)
                if lock is None or not lock.locked():
                    continue  # busy: the end of its wake reads the tails again
                # a change in progress may have read the tails before this append and end
                # the wake without seeing it: settle once more after it
            self._kick(key)

    def removed(self, path: str) -> None:
        if not self._subs or self._stopping:
            return
        for key in list(self._linked.get(path, ())):
            sub = self._subs.get(key)
            if sub is None:
                continue
            relative = path[len(sub.root):]

            async def change(sub: Subscription, tails: Tails, relative=relative) -> None:
                link = sub.links.get(relative)
                if link is None:
                    return
                if link.explicit:
                    link.acked, link.glob = BEFORE_FIRST, False
                else:
                    del sub.links[relative]
            self._spawn(self._change(key, change))

    def _interested(self, path: str) -> tuple[str, ...]:
        by_pattern = self._by_pattern.get(path)
        if by_pattern is None:
            found = []
            for key, sub in self._subs.items():
                pattern = sub.config.pattern
                if pattern is not None and path.startswith(sub.root):
                    relative = self._relative(sub.root, path)
                    if relative is not None and matches(pattern, relative):
                        found.append(key)
            by_pattern = tuple(found)
            if len(self._by_pattern) >= _MATCH_CACHE_LIMIT:
                self._by_pattern.clear()
            self._by_pattern[path] = by_pattern
        linked = self._linked.get(path)
        if not linked:
            return by_pattern
        return tuple(set(by_pattern) | linked)

    @staticmethod
    def _relative(root: str, path: str) -> str | None:
        if not path.startswith(root):
            return None
        relative = path[len(root):]
        if not relative or relative == "__ds" or relative.startswith("__ds/"):
            return None
        return relative

    # ---------------------------------------------------------------- settling

    def _kick(self, key: str, *, scan: bool = False) -> None:
        """Settle `key` soon; requests while one runs make it run once more."""
        if self._stopping:
            return
        if key in self._settling:
            self._again.add(key)
            return
        self._settling[key] = asyncio.create_task(self._settle_loop(key, scan))

    async def _settle_loop(self, key: str, scan: bool) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    await self._settle(key, scan)
                except SubscriptionError as exc:
                    if exc.code != "SUBSCRIPTION_NOT_FOUND":
                        log.warning("subscription %s could not settle: %s", key, exc.message)
                except StreamError as exc:
                    log.warning("subscription %s could not settle: %s", key, exc)
                except Exception:
                    if self._stopping:
                        return
                    log.exception("subscription %s could not settle", key)
                    self._arm(key, self.engine.clock() + RETRY_FIRST)  # try again later
                scan = False
                if key not in self._again:
                    return
        finally:
            self._settling.pop(key, None)

    async def _settle(self, key: str, scan: bool = False) -> None:
        appeared = self._appeared.pop(key, ())
        act = {}  # what to do once written: set by the last run of `change` (it may rerun)

        async def change(sub: Subscription, tails: Tails) -> None:
            act.update(announce=False, send=False)
            if scan and sub.config.pattern is not None:
                await self._link_unlinked(sub, tails)
            for relative in appeared:  # a new stream: its first append is pending
                if relative not in sub.links:
                    tail = await self._tail(sub.absolute(relative))
                    if tail is not None:
                        sub.link(relative, glob=True, acked=BEFORE_FIRST)
                        tails[relative] = tail
            now = self.engine.clock()
            self._expire_lease(sub, now)
            if sub.wake is None and self._pending(sub, tails):
                self._new_wake(sub, tails)
                act["announce"] = sub.config.type == "pull-wake"
            elif scan and sub.wake is not None and sub.config.type == "pull-wake" and sub.wake.holder is None:
                act["announce"] = True  # it may not have reached the wake stream before a crash
            wake = sub.wake
            if sub.config.type == "webhook" and wake is not None and not wake.delivered:
                # A local store has one process: after a restart nobody is sending an attempt
                # it had claimed (a retry's back-off is honoured all the same).
                abandoned = scan and wake.sending and not self.engine.store.shared
                if wake.next_attempt_at is None or wake.next_attempt_at <= now or abandoned:
                    # Claim the attempt in the store first: of the nodes that see it due,
                    # only the one whose write lands sends it; if that node dies, the claim
                    # runs out and another node sends it.
                    wake.next_attempt_at, wake.sending = now + ATTEMPT_HOLD, True
                    act["send"] = True

        sub = await self._change(key, change)
        if act["announce"]:
            await self._announce(sub)
        if act["send"]:
            self._deliver_soon(key)

    def _after(self, sub: Subscription) -> None:
        """Arm the next deadline of a subscription's written state (a webhook attempt that
        is due or whose claim runs out, a lease); a wake due now is settled at once."""
        wake = sub.wake
        deadline = None
        if wake is not None:
            if sub.config.type == "webhook" and not wake.delivered:
                if wake.next_attempt_at is None:
                    self._kick(sub.key)  # a new wake: settling claims and sends it
                else:
                    deadline = wake.next_attempt_at
            if wake.lease_expires_at is not None:
                deadline = wake.lease_expires_at if deadline is None else min(deadline, wake.lease_expires_at)
        self._arm(sub.key, deadline)

    def _arm(self, key: str, deadline: float | None) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if deadline is None or self._stopping:
            return
        delay = max(0.0, deadline - self.engine.clock())
        self._timers[key] = asyncio.get_running_loop().call_later(delay + 0.001, self._deadline, key)

    def _deadline(self, key: str) -> None:
        self._timers.pop(key, None)
        self._kick(key)

    @staticmethod
    def _expire_lease(sub: Subscription, now: float) -> None:
        wake = sub.wake
        if wake is not None and wake.lease_expires_at is not None and wake.lease_expires_at <= now:
            sub.wake = None  # its holder is gone: pending work makes a new generation

    @staticmethod
    def _pending(sub: Subscription, tails: Tails) -> bool:
        for path, link in sub.links.items():
            tail = tails.get(path)
            if tail is not None and tail > link.acked and tail > 0:
                return True
        return False

    @staticmethod
    def _new_wake(sub: Subscription, tails: Tails) -> Wake:
        sub.generation += 1
        snapshot = {path: tail for path, tail in tails.items() if tail is not None and path in sub.links}
        trigger = next((p for p, link in sorted(sub.links.items())
                        if snapshot.get(p) is not None and snapshot[p] > link.acked), "")
        sub.wake = Wake("w_" + secrets.token_urlsafe(12), snapshot, trigger)
        return sub.wake

    async def _link_unlinked(self, sub: Subscription, tails: Tails) -> None:
        """After a restart (or on first sight on a shared store): a matching stream that is
        not linked appeared after the subscription was made, so it links at its start."""
        async for path in self.engine.paths():
            relative = self._relative(sub.root, path)
            if relative is None or relative in sub.links or not matches(sub.config.pattern, relative):
                continue
            tail = await self._tail(path)
            if tail is not None:
                sub.link(relative, glob=True, acked=BEFORE_FIRST)
                tails[relative] = tail

    async def _announce(self, sub: Subscription) -> None:
        """Append the pull-wake event to the subscription's wake stream."""
        wake = sub.wake
        if wake is None:
            return
        path = sub.absolute(sub.config.wake_stream)
        event = {"type": "wake", "subscription_id": sub.id, "stream": wake.trigger,
                 "generation": sub.generation, "ts": int(time.time() * 1000)}
        try:
            stream = await self.engine.require(path)
            await self.engine.append(path, AppendRequest(stream.config.content_type, json.dumps(event).encode()))
        except StreamError as exc:
            log.warning("subscription %s: cannot append its wake event to %s: %s", sub.key, path, exc)

    # ---------------------------------------------------------------- webhook delivery

    def _deliver_soon(self, key: str) -> None:
        if key not in self._delivering and not self._stopping:
            self._delivering[key] = asyncio.create_task(self._deliver(key))

    async def _deliver(self, key: str) -> None:
        try:
            sub = self._subs.get(key)
            if sub is None or sub.wake is None or sub.wake.delivered:
                return
            wake_id = sub.wake.id
            body = json.dumps({
                "subscription_id": sub.id, "wake_id": wake_id, "generation": sub.generation,
                "streams": self._stream_infos(sub, sub.wake.snapshot),
                "callback_url": sub.base_url + f"__ds/subscriptions/{_quote(sub.id)}/callback",
                "callback_token": self._token(sub, "callback"),
            }, separators=(",", ":")).encode()
            outcome = await self.sender.post(sub.config.webhook_url, body, self.keys.sign(body))
            self.events.webhook_delivery(outcome.label)
            if not outcome.ok:
                log.warning("webhook delivery for subscription %s failed: %s", key, outcome.reason)
            await self._delivered(key, wake_id, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            if not self._stopping:
                log.exception("webhook delivery for subscription %s failed", key)
                self._arm(key, self.engine.clock() + RETRY_FIRST)
        finally:
            self._delivering.pop(key, None)

    async def _delivered(self, key: str, wake_id: str, outcome: Outcome) -> None:
        async def change(sub: Subscription, tails: Tails) -> None:
            wake = sub.wake
            if wake is None or wake.id != wake_id or wake.delivered:
                return  # ended meanwhile (a callback came first, a lease ran out)
            now = self.engine.clock()
            if outcome.ok:
                sub.status = "active"
                wake.delivered, wake.attempts, wake.next_attempt_at, wake.sending = True, 0, None, False
                wake.lease_expires_at = now + sub.config.lease_ttl_ms / 1000
                if outcome.done:
                    self._ack_snapshot(sub)
                    sub.wake = None
                    if self._pending(sub, tails):
                        self._new_wake(sub, tails)
            else:
                sub.status = "failed"
                wake.attempts += 1
                wake.next_attempt_at, wake.sending = now + retry_delay(wake.attempts), False

        await self._change(key, change)

    @staticmethod
    def _ack_snapshot(sub: Subscription) -> None:
        for path, tail in sub.wake.snapshot.items():
            link = sub.links.get(path)
            if link is not None and tail > link.acked:
                link.acked = tail

    # ---------------------------------------------------------------- callbacks, acks, releases

    async def _finish(self, root: str, subscription_id: str, token: str, body: dict, *,
                      kind: str, releases: bool) -> bool:
        key = document_name(root, subscription_id)
        claims = self.keys.read_token(token) if token else None
        wanted_type = "webhook" if kind == "callback" else "pull-wake"
        acks = _parse_acks(body.get("acks")) if not releases else []
        done = releases or body.get("done") is True
        result = {}  # set by the last run of `change` (it may rerun)

        async def change(sub: Subscription, tails: Tails) -> None:
            result.update(next_wake=False, announce=False)
            if sub.config.type != wanted_type:
                raise invalid(f"this endpoint is for {wanted_type} subscriptions")
            if claims is None or claims.get("s") != key or claims.get("k") != kind:
                raise SubscriptionError(401, "TOKEN_INVALID", "the bearer token is not valid for this subscription")
            now = self.engine.clock()
            self._expire_lease(sub, now)
            wake = sub.wake
            if (wake is None or claims.get("g") != sub.generation or claims.get("w") != wake.id
                    or body.get("generation") != sub.generation or body.get("wake_id") != wake.id):
                raise fenced()
            for path, offset in acks:
                link = sub.links.get(path)
                if link is None:
                    raise invalid_offset(f"ack names {path!r}, which the subscription does not follow")
                tail = tails.get(path)
                if offset < link.acked:
                    raise invalid_offset(f"ack for {path!r} goes back before its acked offset")
                if tail is None or offset > tail:
                    raise invalid_offset(f"ack for {path!r} is beyond the stream's tail")
            for path, offset in acks:
                sub.links[path].acked = offset
            if kind == "callback":
                wake.delivered = True  # a callback proves the receiver has it
                wake.next_attempt_at, sub.status = None, "active"
            if done:
                sub.wake = None
                if self._pending(sub, tails):
                    self._new_wake(sub, tails)
                    result["next_wake"] = True
                    result["announce"] = sub.config.type == "pull-wake"
            else:
                wake.lease_expires_at = now + sub.config.lease_ttl_ms / 1000

        sub = await self._change(key, change)
        if result["announce"]:
            await self._announce(sub)
        return result["next_wake"]

    # ---------------------------------------------------------------- one change, written

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _change(self, key: str, change: Callable[[Subscription, Tails], Awaitable[None]], *,
                      extra: list[str] = ()) -> Subscription:
        """Apply `change` to a copy of the subscription and write it; then act on it.
        SubscriptionError from `change` leaves everything as it was."""
        for _attempt in range(MAX_CONFLICTS):
            async with self._lock(key):
                if self.engine.store.shared:
                    # decide on the database's copy: a refusal (FENCED, ALREADY_CLAIMED)
                    # writes nothing, so a stale copy would never be caught by the write
                    await self._reload(key)
                current = self._subs.get(key)
                if current is None:
                    raise not_found()
                before = current.to_document()
                sub = Subscription.from_document(before, current.version)  # a copy to change
                tails = await self._current_tails(sub.root, [*sub.links, *extra])
                await change(sub, tails)
                after = sub.to_document()
                if after != before:
                    try:
                        await self._write(sub, after)
                    except _Conflict:
                        continue
            self._after(sub)
            return sub
        raise SubscriptionError(503, "UNAVAILABLE", "the subscription kept changing; retry")

    async def _write(self, sub: Subscription, document: bytes | None = None) -> None:
        """Write the new state (`document`: `sub` encoded, if the caller has it), durable
        when this returns, then make it the current one."""
        if document is None:
            document = sub.to_document()
        try:
            sub.version = await self.engine.put_document(KIND, sub.key, document, replaces=sub.version)
        except StaleDocument:
            await self._reload(sub.key)
            raise _Conflict() from None
        old = self._subs.get(sub.key)
        self._subs[sub.key] = sub
        self._index(sub.key, old, sub)

    def _index(self, key: str, old: Subscription | None, new: Subscription | None) -> None:
        if old is not None:
            for path in old.links:
                keys = self._linked.get(old.root + path)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._linked[old.root + path]
        if new is not None:
            for path in new.links:
                self._linked.setdefault(new.root + path, set()).add(key)

    def _forget(self, key: str) -> None:
        old = self._subs.pop(key, None)
        self._index(key, old, None)
        self._by_pattern.clear()
        self._arm(key, None)
        self._appeared.pop(key, None)
        task = self._delivering.pop(key, None)
        if task is not None:
            task.cancel()

    async def _current_tails(self, root: str, paths) -> Tails:
        return {path: await self._tail(root + path) for path in paths}

    async def _tail(self, path: str) -> int | None:
        try:
            stream = await self.engine.require(path, fresh=self.engine.store.shared)
        except StreamError:
            return None
        return stream.state.tail

    # ---------------------------------------------------------------- loading, other nodes

    async def _load_all(self) -> tuple[set[str], set[str]]:
        """Take in the store's subscriptions: (keys new to this node, keys changed)."""
        loaded = {name: Subscription.from_document(doc.body, doc.version)
                  for name, doc in (await self.engine.documents(KIND)).items()}
        for key in set(self._subs) - set(loaded):
            self._forget(key)
        fresh, changed = set(), set()
        for key, sub in loaded.items():
            old = self._subs.get(key)
            if old is None or sub.version > old.version:  # never back to an older copy
                (fresh if old is None else changed).add(key)
                self._subs[key] = sub
                self._index(key, old, sub)
        if fresh or changed:
            self._by_pattern.clear()
        return fresh, changed

    async def _reload(self, key: str) -> None:
        document = await self.engine.document(KIND, key)
        old = self._subs.get(key)
        if document is None:
            self._forget(key)
            return
        if old is not None and old.version >= document.version:
            return
        sub = Subscription.from_document(document.body, document.version)
        self._subs[key] = sub
        self._index(key, old, sub)
        self._by_pattern.clear()

    async def _reconcile_loop(self) -> None:
        """Shared stores: take in what other nodes changed. A subscription new to this
        node is settled with a scan (streams this node made before it knew of it); a
        changed one is settled (its links may now cover streams appended to here) and its
        deadlines armed here too, so a lease or a delivery claim of a node that is gone
        runs out on the others. The rest waits for appends and timers: an append is
        followed by the node that made it. Compare-and-set lets one node win each change."""
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            try:
                fresh, changed = await self._load_all()
            except Exception as exc:  # the database is down: the next round tries again
                log.warning("subscriptions: cannot reload: %s", exc)
                continue
            for key in fresh | changed:
                self._kick(key, scan=key in fresh)

    def _spawn(self, operation: Awaitable) -> None:
        task = asyncio.ensure_future(operation)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if not isinstance(error, SubscriptionError):
                log.warning("subscription update failed: %s", error)


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _parse_acks(raw) -> list[tuple[str, int]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid("acks must be an array")
    acks = []
    for item in raw:
        if not isinstance(item, dict):
            raise invalid("each ack must be an object with stream and offset")
        path = relative_path(item.get("stream", item.get("path")), "ack stream")
        offset = item.get("offset")
        if not isinstance(offset, str) or offset == "-1":
            raise invalid_offset("an ack's offset must be an offset the stream returned (not -1)")
        try:
            acks.append((path, parse_position(offset)))
        except InvalidRequest:
            raise invalid_offset(f"malformed offset {offset!r}") from None
    return acks
