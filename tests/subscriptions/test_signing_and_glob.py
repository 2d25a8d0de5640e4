"""The signing keyring (rotation keeps the old key published through the replay window)
and the pattern matcher, on their own: no HTTP is involved in either."""

from __future__ import annotations

import asyncio

import pytest

from durable_streams.server.engine.streams import StreamEngine
from durable_streams.server.store.memory import MemoryStore
from durable_streams.server.subscriptions.glob import matches
from durable_streams.server.subscriptions.signing import REPLAY_WINDOW, Keyring
from receiver import verify


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_rotation_keeps_the_old_key_through_the_replay_window():
    async def scenario():
        clock = Clock()
        store = MemoryStore()
        engine = StreamEngine(store, clock=clock)
        keys = Keyring(engine)
        await keys.open()
        old = keys.active
        signed_before = keys.sign(b"{}")
        new = await keys.rotate()
        assert new.kid != old.kid and keys.active.kid == new.kid
        kids = [k["kid"] for k in keys.jwks()["keys"]]
        assert kids == [new.kid, old.kid]
        assert verify(b"{}", signed_before, keys.jwks())  # a delivery signed before the switch
        assert f"kid={new.kid}," in keys.sign(b"{}")
        # a second keyring on the same store (a restart, another node) sees the same
        again = Keyring(engine)
        await again.open()
        assert again.active.kid == new.kid
        assert [k["kid"] for k in again.jwks()["keys"]] == kids
        clock.now += REPLAY_WINDOW + 1
        assert [k["kid"] for k in keys.jwks()["keys"]] == [new.kid]  # no longer published
        await keys.prune()
        assert set(await store.documents("signing")) == {"callback-token-key", "signing-key"}

    asyncio.run(scenario())


def test_tokens_are_bound_to_their_key():
    async def scenario():
        a, b = Keyring(StreamEngine(MemoryStore())), Keyring(StreamEngine(MemoryStore()))
        await a.open()
        await b.open()
        token = a.token({"s": "/v1/stream/x", "g": 3})
        assert a.read_token(token) == {"s": "/v1/stream/x", "g": 3}
        assert b.read_token(token) is None  # another store's key
        payload, mac = token.split(".")
        # tamper with the first character: the last one of unpadded base64url carries two
        # padding bits, so changing it may decode to the very same MAC
        assert a.read_token(payload + "." + ("A" if mac[0] != "A" else "B") + mac[1:]) is None
        assert a.read_token("garbage") is None and a.read_token("") is None

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("**", "anything/at/all", True),
        ("**/logs", "a/b/logs", True),
        ("**/logs", "logs", True),
        ("**/logs", "a/logs/b", False),
        ("a/**/b/*", "a/x/y/b/z", True),
        ("a/**/b/*", "a/b/z", True),
        ("a/**/b/*", "a/b", False),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/d", False),
        ("events-*", "events-1", False),  # `*` is a whole segment, not a wildcard inside one
        ("/events/*/", "events/a", True),  # slashes at the ends do not count
    ],
)
def test_glob(pattern, path, expected):
    assert matches(pattern, path) is expected
