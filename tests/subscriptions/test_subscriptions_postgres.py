"""Subscriptions on a shared store: two server nodes on one PostgreSQL database. A wake
is made and delivered once however many nodes see the append (compare-and-set on the
subscription's document); either node answers for a subscription the other made;
fencing and claims hold across nodes, also when the request reaches a node that has not
yet reconciled (it decides again on the stored state); and a restart of both nodes keeps
everything."""

from __future__ import annotations

import time

import httpx
import pytest

from receiver import Receiver
from retention_servers import Server
from subscription_api import BINARY, SUBSCRIPTIONS, append, pull_wake_subscription, sub_url, uniq

WAIT = 15.0  # a guard for the nodes' reconciliation (every second), not a benchmark
@pytest.fixture(scope="module")
def nodes(tmp_path_factory, make_dsn):
    dsn = make_dsn()
    workdir = tmp_path_factory.mktemp("subs-pg")
    a = Server(workdir, "postgres", settings=SUBSCRIPTIONS, dsn=dsn, name="a").start()
    b = Server(workdir, "postgres", settings=SUBSCRIPTIONS, dsn=dsn, name="b").start()
    yield a, b
    a.stop()
    b.stop()
    assert not a.errors(), a.errors()
    assert not b.errors(), b.errors()


def code(r: httpx.Response) -> str | None:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def callback(c: httpx.Client, srv: Server, delivery: dict, acks: list, done: bool = True) -> httpx.Response:
    body = {"wake_id": delivery["wake_id"], "generation": delivery["generation"], "acks": acks, "done": done}
    return c.post(sub_url(srv, delivery["subscription_id"], "callback"), json=body,
                  headers={"Authorization": f"Bearer {delivery['callback_token']}"})


def ack(c: httpx.Client, srv: Server, sub_id: str, claim: dict, acks: list, done: bool = True) -> httpx.Response:
    return c.post(sub_url(srv, sub_id, "ack"), headers={"Authorization": f"Bearer {claim['token']}"},
                  json={"wake_id": claim["wake_id"], "generation": claim["generation"], "acks": acks, "done": done})


def wait_state(c: httpx.Client, srv: Server, sub_id: str, check, timeout: float = WAIT) -> dict:
    """GET the subscription on `srv` until `check(body)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(sub_url(srv, sub_id))
        if r.status_code == 200 and check(r.json()):
            return r.json()
        assert time.monotonic() < deadline, (srv.name, r.status_code, r.text)
        time.sleep(0.1)


def acked_is(expected: dict):
    return lambda body: {s["path"]: s["acked_offset"] for s in body["streams"]} == expected


def test_webhook_made_on_one_node_is_woken_once_by_an_append_on_the_other(nodes, http):
    a, b = nodes
    receiver = Receiver(jwks_url=a.url("__ds/jwks.json")).start()  # answers {}: callbacks finish
    try:
        prefix = uniq("jobs")
        sub_id = uniq("hook")
        r = http.put(sub_url(a, sub_id), json={"type": "webhook", "pattern": f"{prefix}/*",
                                              "webhook": {"url": receiver.url}, "lease_ttl_ms": 30_000})
        assert r.status_code == 201, r.text
        kid = r.json()["webhook"]["signing"]["kid"]
        name = f"{prefix}/a"
        assert http.put(b.url(name), headers=BINARY).status_code == 201  # on B, before B heard of it
        first = append(http, b.url(name), b"one")
        [delivery] = receiver.wait_for(1, timeout=WAIT)
        assert delivery.verified and f"kid={kid}," in delivery.signature
        wake = delivery.body
        assert wake["streams"] == [{"path": name, "link_type": "glob", "acked_offset": "-1",
                                    "tail_offset": first, "has_pending": True}]
        time.sleep(3.0)  # three reconcile rounds on each node: no second wake, no duplicate send
        assert len(receiver.deliveries) == 1, [d.body for d in receiver.deliveries]
        # both nodes publish the same key
        for node in (a, b):
            assert kid in [k["kid"] for k in http.get(node.url("__ds/jwks.json")).json()["keys"]]
        wait_state(http, b, sub_id, lambda body: [s["path"] for s in body["streams"]] == [name])

        # the callback goes to B; replaying it on A (which may not have reconciled) is fenced
        r = callback(http, b, wake, [{"stream": name, "offset": first}])
        assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
        r = callback(http, a, wake, [{"stream": name, "offset": first}])
        assert r.status_code == 409 and code(r) == "FENCED", r.text
        for node in (a, b):
            wait_state(http, node, sub_id, acked_is({name: first}))
        time.sleep(1.5)
        assert len(receiver.deliveries) == 1
    finally:
        receiver.stop()


def test_a_wake_made_on_one_node_is_accepted_at_once_by_the_other(nodes, http):
    """B ends a wake and makes the next one (data arrived meanwhile); its callback reaches
    A straight away, before A's next reconcile: A must not fence it on its old copy."""
    a, b = nodes
    receiver = Receiver(jwks_url=a.url("__ds/jwks.json")).start()
    try:
        prefix = uniq("jobs")
        sub_id = uniq("hook")
        r = http.put(sub_url(a, sub_id), json={"type": "webhook", "pattern": f"{prefix}/*",
                                              "webhook": {"url": receiver.url}, "lease_ttl_ms": 30_000})
        assert r.status_code == 201, r.text
        name = f"{prefix}/a"
        assert http.put(a.url(name), headers=BINARY).status_code == 201
        first = append(http, a.url(name), b"one")
        wake = receiver.wait_for(1, timeout=WAIT)[0].body
        wait_state(http, b, sub_id, lambda body: bool(body["streams"]))  # B knows the subscription
        for _ in range(3):
            time.sleep(1.2)  # let A reconcile, so its copy is the current one
            second = append(http, a.url(name), b"two")
            r = callback(http, b, wake, [{"stream": name, "offset": first}])  # B: ack, and wake again
            assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": True}, r.text
            deadline = time.monotonic() + WAIT
            while not (newer := [d.body for d in list(receiver.deliveries)
                                 if d.body["generation"] > wake["generation"]]):
                assert time.monotonic() < deadline, "no next wake"
                time.sleep(0.005)
            wake = newer[0]
            assert wake["streams"][0]["acked_offset"] == first and wake["streams"][0]["tail_offset"] == second
            r = callback(http, a, wake, [{"stream": name, "offset": second}], done=False)  # on A at once
            assert r.status_code == 200, (r.status_code, r.text)
            first = second
    finally:
        receiver.stop()


def test_pull_wake_claims_are_exclusive_across_nodes(nodes, http):
    a, b = nodes
    prefix, wake_stream, sub_id = pull_wake_subscription(http, a)
    name = f"{prefix}/a"
    assert http.put(b.url(name), headers=BINARY).status_code == 201
    first = append(http, b.url(name), b"one")

    def wakes(node: Server) -> list[dict]:
        r = http.get(node.url(wake_stream), params={"offset": "-1"})
        assert r.status_code == 200, r.text
        return [e for e in r.json() if e["subscription_id"] == sub_id]

    deadline = time.monotonic() + WAIT
    while not wakes(b):
        assert time.monotonic() < deadline, "no wake event"
        time.sleep(0.05)
    r = http.post(sub_url(a, sub_id, "claim"), json={"worker": "on-a"})
    assert r.status_code == 200, r.text
    claim = r.json()
    r = http.post(sub_url(b, sub_id, "claim"), json={"worker": "on-b"})
    assert r.status_code == 409 and code(r) == "ALREADY_CLAIMED", r.text
    assert r.json()["error"]["current_holder"] == "on-a"
    assert r.json()["error"]["generation"] == claim["generation"]
    time.sleep(0.5)
    assert len({e["generation"] for e in wakes(a)}) == 1, wakes(a)  # one wake, whoever saw the append

    # the claim's ack works on the other node (one token key); new data: next_wake, and the
    # next claim on A (which may not have reconciled yet) gets the new wake
    second = append(http, a.url(name), b"two")
    r = ack(http, b, sub_id, claim, [{"stream": name, "offset": first}])
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": True}, r.text
    r = http.post(sub_url(a, sub_id, "claim"), json={"worker": "on-a"})
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["generation"] == claim["generation"] + 1
    assert again["streams"][0]["acked_offset"] == first and again["streams"][0]["tail_offset"] == second
    r = ack(http, a, sub_id, claim, [{"stream": name, "offset": second}])
    assert r.status_code == 409 and code(r) == "FENCED", r.text
    r = ack(http, b, sub_id, again, [{"stream": name, "offset": second}])
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    for node in (a, b):
        r = http.post(sub_url(node, sub_id, "claim"), json={"worker": node.name})
        assert r.status_code == 409 and code(r) == "NO_PENDING_WORK", (node.name, r.text)


def test_both_nodes_restart_with_the_state(nodes, http):
    a, b = nodes
    prefix, wake_stream, sub_id = pull_wake_subscription(http, a)
    name = f"{prefix}/a"
    assert http.put(a.url(name), headers=BINARY).status_code == 201
    first = append(http, a.url(name), b"one")
    wait_state(http, b, sub_id, lambda body: bool(body["streams"]))
    r = http.post(sub_url(b, sub_id, "claim"), json={"worker": "w"})
    assert r.status_code == 200, r.text
    claim = r.json()
    r = ack(http, b, sub_id, claim, [{"stream": name, "offset": first}])
    assert r.status_code == 200, r.text
    second = append(http, b.url(name), b"two")
    wait_state(http, a, sub_id, acked_is({name: first}))

    a.kill()
    b.kill()
    a.start()
    b.start()
    for node in (a, b):
        body = wait_state(http, node, sub_id, acked_is({name: first}), timeout=5)
        assert body["type"] == "pull-wake" and body["wake_stream"] == wake_stream
    r = http.post(sub_url(b, sub_id, "claim"), json={"worker": "after"})
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["generation"] == claim["generation"] + 1
    assert after["streams"][0]["acked_offset"] == first and after["streams"][0]["tail_offset"] == second
    r = http.post(sub_url(a, sub_id, "claim"), json={"worker": "other"})
    assert r.status_code == 409 and code(r) == "ALREADY_CLAIMED", r.text
    r = ack(http, a, sub_id, after, [{"stream": name, "offset": second}])
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    for node in (a, b):
        wait_state(http, node, sub_id, acked_is({name: second}))
