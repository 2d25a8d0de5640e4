"""Subscriptions survive SIGKILL on the file store (state is store documents, written
before anything is sent or answered): a webhook wake in flight is sent again after a
restart (same wake, or a later generation once its lease ran out) with earlier acks
intact and the same signing key; an unclaimed pull-wake wake is announced again; and
no delivery names data the server never acknowledged to its writer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from durable_streams.server.engine.offsets import format_offset

from receiver import Receiver, verify
from retention_servers import Server
from subscription_api import BINARY, NEXT, SUBSCRIPTIONS, append, position, pull_wake_subscription, sub_url, uniq

RECORD = 32
WAIT = 20.0  # a guard for background work after a restart, not a performance expectation
def record(n: int) -> bytes:
    return f"rec#{n:06d}".encode().ljust(RECORD - 1, b".") + b"\n"


@pytest.fixture()
def server(tmp_path: Path):
    srv = Server(tmp_path, "file", settings=SUBSCRIPTIONS).start()
    yield srv
    srv.stop()
    assert not srv.errors(), srv.errors()


def acked(c: httpx.Client, srv: Server, sub_id: str) -> dict[str, str]:
    r = c.get(sub_url(srv, sub_id))
    assert r.status_code == 200, (r.status_code, r.text)
    return {s["path"]: s["acked_offset"] for s in r.json()["streams"]}


def callback(c: httpx.Client, srv: Server, delivery: dict, acks: list, done: bool) -> httpx.Response:
    body = {"wake_id": delivery["wake_id"], "generation": delivery["generation"], "acks": acks}
    if done:
        body["done"] = True
    return c.post(sub_url(srv, delivery["subscription_id"], "callback"), json=body,
                  headers={"Authorization": f"Bearer {delivery['callback_token']}"})


def kid_of(signature: str) -> str:
    return dict(part.split("=", 1) for part in signature.split(","))["kid"]


def restart(srv: Server) -> None:
    srv.kill()  # SIGKILL: no flush, no shutdown
    srv.start()  # same data_dir, another port


def make_webhook(c: httpx.Client, srv: Server, receiver: Receiver, pattern: str, lease_ttl_ms: int) -> str:
    sub_id = uniq("hook")
    r = c.put(sub_url(srv, sub_id), json={"type": "webhook", "pattern": pattern,
                                          "webhook": {"url": receiver.url}, "lease_ttl_ms": lease_ttl_ms})
    assert r.status_code == 201, (r.status_code, r.text)
    return sub_id


def test_webhook_wake_with_a_partial_ack_survives_sigkill(server, http):
    receiver = Receiver(jwks_url=server.url("__ds/jwks.json")).start()  # answers {}: not done
    try:
        prefix = uniq("jobs")
        sub_id = make_webhook(http, server, receiver, f"{prefix}/*", lease_ttl_ms=2000)
        kid = http.get(sub_url(server, sub_id)).json()["webhook"]["signing"]["kid"]
        name = f"{prefix}/a"
        assert http.put(server.url(name), headers=BINARY).status_code == 201
        first_offset = append(http, server.url(name), record(0))
        second_offset = append(http, server.url(name), record(1))
        first = receiver.wait_for(1)[0]
        assert first.verified and kid_of(first.signature) == kid
        wake = first.body
        assert wake["subscription_id"] == sub_id and wake["generation"] >= 1
        r = callback(http, server, wake, [{"stream": name, "offset": first_offset}], done=False)
        assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
        assert acked(http, server, sub_id) == {name: first_offset}
        seen = len(receiver.deliveries)

        restart(server)
        receiver.jwks_url = server.url("__ds/jwks.json")
        assert acked(http, server, sub_id) == {name: first_offset}  # the ack before the kill is there
        again = receiver.wait_for(seen + 1, timeout=WAIT)[seen]  # the lease ran out, or the wake is resent
        body = again.body
        assert body["generation"] >= wake["generation"], (body, wake)
        if body["generation"] == wake["generation"]:
            assert body["wake_id"] == wake["wake_id"]
        else:
            assert body["wake_id"] != wake["wake_id"]
        [info] = body["streams"]
        assert info["path"] == name and info["acked_offset"] == first_offset, info
        assert info["tail_offset"] == second_offset and info["has_pending"] is True, info
        # the same key signs after the restart, and the new process publishes it
        jwks = http.get(server.url("__ds/jwks.json")).json()
        assert kid in [k["kid"] for k in jwks["keys"]]
        assert kid_of(again.signature) == kid
        assert again.verified and verify(again.raw, again.signature, jwks)
        assert http.get(sub_url(server, sub_id)).json()["webhook"]["signing"]["kid"] == kid
        # the callback URL names the subscription's callback route (its origin is the
        # one the subscription was made through: without webhook_callback_url, the old port)
        assert body["callback_url"].endswith(f"/v1/stream/__ds/subscriptions/{sub_id}/callback")
        if body["generation"] != wake["generation"]:
            error = callback(http, server, wake, [], done=True)  # the pre-kill wake is fenced
            assert error.status_code == 409 and error.json()["error"]["code"] == "FENCED", error.text
        r = callback(http, server, body, [{"stream": name, "offset": second_offset}], done=True)
        assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
        assert acked(http, server, sub_id) == {name: second_offset}
        count = len(receiver.deliveries)
        time.sleep(1.0)
        assert len(receiver.deliveries) == count  # nothing pending: nothing more sent
    finally:
        receiver.stop()


def test_undelivered_webhook_wake_is_resent_with_the_same_wake_after_sigkill(server, http):
    receiver = Receiver(jwks_url=server.url("__ds/jwks.json"), fail_first=2).start()
    try:
        prefix = uniq("jobs")
        sub_id = make_webhook(http, server, receiver, f"{prefix}/*", lease_ttl_ms=30_000)
        name = f"{prefix}/a"
        assert http.put(server.url(name), headers=BINARY).status_code == 201
        tail = append(http, server.url(name), record(0))
        failed = receiver.wait_for(1)[0]  # answered 503: the wake stays in flight
        restart(server)
        receiver.jwks_url = server.url("__ds/jwks.json")
        deadline = time.monotonic() + WAIT
        while not any(d.answered == 200 for d in receiver.deliveries):
            assert time.monotonic() < deadline, [(d.answered, d.body["wake_id"]) for d in receiver.deliveries]
            time.sleep(0.05)
        taken = next(d for d in receiver.deliveries if d.answered == 200)
        for d in receiver.deliveries:  # every attempt: the same wake, the same generation
            assert (d.body["wake_id"], d.body["generation"]) == (failed.body["wake_id"], failed.body["generation"])
            assert d.verified and kid_of(d.signature) == kid_of(failed.signature)
        assert taken.body["streams"][0]["tail_offset"] == tail
        r = callback(http, server, taken.body, [{"stream": name, "offset": tail}], done=True)
        assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
        assert acked(http, server, sub_id) == {name: tail}
    finally:
        receiver.stop()


def test_pull_wake_is_announced_again_after_sigkill(server, http):
    prefix, wake_stream, sub_id = pull_wake_subscription(http, server)
    name = f"{prefix}/a"
    assert http.put(server.url(name), headers=BINARY).status_code == 201

    def wakes(generation: int) -> list[dict]:
        r = http.get(server.url(wake_stream), params={"offset": "-1"})
        assert r.status_code == 200, r.text
        return [e for e in r.json() if e["subscription_id"] == sub_id and e["generation"] == generation]

    def wait_wakes(generation: int, count: int) -> list[dict]:
        deadline = time.monotonic() + WAIT
        while len(found := wakes(generation)) < count:
            assert time.monotonic() < deadline, (generation, count, found)
            time.sleep(0.05)
        return found

    first_tail = append(http, server.url(name), record(0))
    wait_wakes(1, 1)
    r = http.post(sub_url(server, sub_id, "claim"), json={"worker": "w"})
    assert r.status_code == 200, r.text
    claim = r.json()
    r = http.post(sub_url(server, sub_id, "ack"), headers={"Authorization": f"Bearer {claim['token']}"},
                  json={"wake_id": claim["wake_id"], "generation": claim["generation"],
                        "acks": [{"stream": name, "offset": first_tail}], "done": True})
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    second_tail = append(http, server.url(name), record(1))
    third_tail = append(http, server.url(name), record(2))
    wait_wakes(2, 1)  # announced, not claimed

    restart(server)
    assert acked(http, server, sub_id) == {name: first_tail}
    announced = wait_wakes(2, 2)  # the unclaimed wake is announced again after the restart
    assert all(e["type"] == "wake" and e["stream"] == name for e in announced), announced
    r = http.post(sub_url(server, sub_id, "claim"), json={"worker": "after"})
    assert r.status_code == 200, r.text
    claim = r.json()
    assert claim["generation"] == 2
    [info] = claim["streams"]
    assert info["acked_offset"] == first_tail and position(info["tail_offset"]) in (
        position(second_tail), position(third_tail)), info
    r = http.post(sub_url(server, sub_id, "ack"), headers={"Authorization": f"Bearer {claim['token']}"},
                  json={"wake_id": claim["wake_id"], "generation": 2,
                        "acks": [{"stream": name, "offset": third_tail}], "done": True})
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    assert acked(http, server, sub_id) == {name: third_tail}
    r = http.post(sub_url(server, sub_id, "claim"), json={"worker": "after"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "NO_PENDING_WORK", r.text
    assert len(wakes(3)) == 0


def test_no_delivery_names_data_never_acknowledged_to_its_writer(server, http):
    """A writer appends while the server is SIGKILLed: after the restart the stream holds
    every acknowledged append (and at most the one in flight), and no delivery, before
    or after, names a tail beyond what the restarted server holds."""
    receiver = Receiver(jwks_url=server.url("__ds/jwks.json"), reply={"done": True}).start()
    try:
        prefix = uniq("jobs")
        sub_id = make_webhook(http, server, receiver, f"{prefix}/*", lease_ttl_ms=5000)
        name = f"{prefix}/a"
        assert http.put(server.url(name), headers=BINARY).status_code == 201
        url = server.url(name)
        acknowledged = [0]  # positions the writer was told
        stop = threading.Event()

        def writer() -> None:
            with httpx.Client(timeout=5.0) as wc:
                n = 0
                while not stop.is_set():
                    try:
                        r = wc.post(url, content=record(n), headers=BINARY)
                    except httpx.HTTPError:
                        return  # the server died under this append: it may or may not have landed
                    if r.status_code != 204:
                        return
                    acknowledged.append(position(r.headers[NEXT]))
                    n += 1

        writing = threading.Thread(target=writer)
        writing.start()
        receiver.wait_for(2, timeout=WAIT)
        time.sleep(0.3)
        server.kill()
        stop.set()
        writing.join(10)
        before = len(receiver.deliveries)
        last = acknowledged[-1]
        assert last > 0
        server.start()
        receiver.jwks_url = server.url("__ds/jwks.json")
        r = http.head(server.url(name))
        assert r.status_code == 200, r.status_code
        tail = position(r.headers[NEXT])
        assert last <= tail <= last + RECORD, (last, tail)  # acknowledged data survived; at most one more
        # the receiver answers done: the subscription catches up to the tail
        deadline = time.monotonic() + WAIT
        while acked(http, server, sub_id) != {name: format_offset(tail)}:
            assert time.monotonic() < deadline, (acked(http, server, sub_id), tail)
            time.sleep(0.1)
        for d in receiver.deliveries:
            for info in d.body["streams"]:
                assert position(info["tail_offset"]) <= tail, (info, tail)
                assert position(info["tail_offset"]) % RECORD == 0, info  # append boundaries only
        assert len(receiver.deliveries) > before  # what was pending at the kill was delivered after it
        assert all(d.verified for d in receiver.deliveries[before:])
        gens = [d.body["generation"] for d in receiver.deliveries if d.answered == 200]
        assert gens == sorted(gens), gens  # generations only move forward, across the restart too
    finally:
        receiver.stop()
