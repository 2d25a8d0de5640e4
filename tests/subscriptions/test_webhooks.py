"""Webhook subscriptions (PROTOCOL.md §6–7) against real server processes on the memory
and file stores, with a real receiver on loopback that verifies every signature against
the JWK Set the server publishes: create / confirm / conflict / delete, validation and
the webhook URL checks, the JWK Set, delivery (pattern matching, links at the tail of
streams that existed before, the body's fields), `{"done": true}` auto-acks, callbacks
(fencing, tokens, offsets, lease extension and expiry), retries with back-off, the
delivery-time refusal of a name that resolves to an internal address, explicit stream
membership, the reserved `__ds` namespace, and servers without subscriptions."""

from __future__ import annotations

import ipaddress
import itertools
import re
import select
import socket
import time
from urllib.parse import quote

import httpx
import pytest

from durable_streams.server.engine.offsets import format_offset, parse_position

from receiver import Receiver
from retention_servers import Server, serving
from subscription_api import NEXT, SUBSCRIPTIONS, sub_url


STORES = ["memory", "file"]
TEXT = "text/plain"
WAIT = 10.0  # longest wait for something the server does in the background (a guard)
_names = itertools.count()


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module", params=STORES)
def server(request, tmp_path_factory):
    with serving(Server(tmp_path_factory.mktemp(f"wh-{request.param}"), request.param,
                        settings=SUBSCRIPTIONS)) as srv:
        yield srv


@pytest.fixture
def receivers(server):
    """Start receivers with `receivers(**options)`; all are stopped after the test."""
    started: list[Receiver] = []

    def start(**options) -> Receiver:
        rec = Receiver(jwks_url=server.url("__ds/jwks.json"), **options).start()
        started.append(rec)
        return rec

    yield start
    for rec in started:
        rec.stop()


@pytest.fixture
def uid(http, server):
    """A unique prefix for this test's subscription ids and stream names; the test's
    subscriptions are deleted after it, so no later test sees their deliveries."""
    prefix = f"t{next(_names)}x{time.monotonic_ns() % 10**6}"
    yield prefix
    for sub_id in _made.pop(prefix, []):
        http.delete(sub_url(server, sub_id))


_made: dict[str, list[str]] = {}


def webhook_body(url: str, *, pattern: str | None = None, streams: list[str] | None = None,
                 **extra) -> dict:
    body: dict = {"type": "webhook", "webhook": {"url": url}, **extra}
    if pattern is not None:
        body["pattern"] = pattern
    if streams is not None:
        body["streams"] = streams
    return body


def subscribe(http: httpx.Client, server: Server, sub_id: str, body: dict, status: int = 201) -> dict:
    r = http.put(sub_url(server, sub_id), json=body)
    assert r.status_code == status, (r.status_code, r.text)
    prefix = sub_id.split("-", 1)[0]
    _made.setdefault(prefix, []).append(sub_id)
    return r.json()


def describe(http: httpx.Client, server: Server, sub_id: str) -> dict:
    r = http.get(sub_url(server, sub_id))
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def links(info: dict) -> dict[str, dict]:
    return {entry["path"]: entry for entry in info["streams"]}


def create_stream(http: httpx.Client, server: Server, name: str, body: bytes = b"") -> str:
    """PUT a text stream (with a first body, if given); its Stream-Next-Offset."""
    r = http.put(server.url(name), content=body, headers={"Content-Type": TEXT})
    assert r.status_code == 201, (r.status_code, r.text)
    return r.headers[NEXT]


def append(http: httpx.Client, server: Server, name: str, body: bytes) -> str:
    r = http.post(server.url(name), content=body, headers={"Content-Type": TEXT})
    assert r.status_code == 204, (r.status_code, r.text)
    return r.headers[NEXT]


def error_of(r: httpx.Response, status: int, code: str) -> str:
    """Assert a JSON error answer; its message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["code"] == code, r.text
    assert isinstance(error["message"], str) and error["message"], r.text
    return error["message"]


def eventually(check, timeout: float = WAIT, interval: float = 0.05):
    """Call `check` until it returns something truthy (that value) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {check.__doc__ or check}")
        time.sleep(interval)


def callback(http: httpx.Client, delivery_body: dict, token: str | None = None, **fields) -> httpx.Response:
    token = delivery_body["callback_token"] if token is None else token
    body = {"wake_id": delivery_body["wake_id"], "generation": delivery_body["generation"], **fields}
    return http.post(delivery_body["callback_url"], json=body, headers={"Authorization": f"Bearer {token}"})


# ---------------------------------------------------------------- 1. create, confirm, conflict, delete


def test_create_confirm_conflict_delete(server, http, uid, receivers):
    rec = receivers()
    sub_id = f"{uid}-main"
    body = webhook_body(rec.url, pattern=f"{uid}/events/*", streams=[f"{uid}/b", f"{uid}/a"],
                        lease_ttl_ms=5000, description="first")
    created = subscribe(http, server, sub_id, body)
    assert created["id"] == sub_id and created["subscription_id"] == sub_id
    assert created["type"] == "webhook"
    assert created["pattern"] == f"{uid}/events/*"
    assert [s["path"] for s in created["streams"]] == [f"{uid}/a", f"{uid}/b"]
    assert all(s["link_type"] == "explicit" and s["acked_offset"] == "-1" for s in created["streams"])
    assert created["webhook"]["url"] == rec.url
    signing = created["webhook"]["signing"]
    assert signing["alg"] == "ed25519"
    assert signing["kid"].startswith("ds_") and len(signing["kid"]) > 10
    assert signing["jwks_url"] == server.url("__ds/jwks.json")
    assert created["lease_ttl_ms"] == 5000
    assert created["status"] == "active"
    assert created["description"] == "first"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created["created_at"]), created["created_at"]

    # the same configuration again, streams reordered and duplicated: 200, the same subscription
    again = dict(body, streams=[f"{uid}/a", f"{uid}/b", f"{uid}/a", f"/{uid}/b/"])
    r = http.put(sub_url(server, sub_id), json=again)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json() == created

    # a different configuration: 409, and the original is untouched
    for changed in (dict(body, lease_ttl_ms=6000), dict(body, streams=[f"{uid}/a"]),
                    dict(body, pattern=f"{uid}/other/*"), dict(body, description="second"),
                    webhook_body(rec.url + "2", pattern=f"{uid}/events/*", streams=[f"{uid}/a", f"{uid}/b"],
                                 lease_ttl_ms=5000, description="first")):
        r = http.put(sub_url(server, sub_id), json=changed)
        error_of(r, 409, "SUBSCRIPTION_ALREADY_EXISTS")
    assert describe(http, server, sub_id) == created

    r = http.delete(sub_url(server, sub_id))
    assert r.status_code == 204, (r.status_code, r.text)
    error_of(http.get(sub_url(server, sub_id)), 404, "SUBSCRIPTION_NOT_FOUND")
    error_of(http.delete(sub_url(server, sub_id)), 404, "SUBSCRIPTION_NOT_FOUND")

    # the id is free again: a different configuration is a new subscription
    recreated = subscribe(http, server, sub_id, dict(body, lease_ttl_ms=6000))
    assert recreated["lease_ttl_ms"] == 6000


# ---------------------------------------------------------------- 2. validation


INVALID_BODIES = {
    "missing type": ({"pattern": "a/*", "webhook": {"url": "http://localhost/h"}}, "type"),
    "bad type": ({"type": "carrier-pigeon", "pattern": "a/*", "webhook": {"url": "http://localhost/h"}}, "type"),
    "no pattern or streams": ({"type": "webhook", "webhook": {"url": "http://localhost/h"}}, "pattern"),
    "empty streams only": ({"type": "webhook", "streams": [], "webhook": {"url": "http://localhost/h"}},
                           "pattern"),
    "lease too short": ({"type": "webhook", "pattern": "a/*", "webhook": {"url": "http://localhost/h"},
                         "lease_ttl_ms": 999}, "lease_ttl_ms"),
    "lease too long": ({"type": "webhook", "pattern": "a/*", "webhook": {"url": "http://localhost/h"},
                        "lease_ttl_ms": 600001}, "lease_ttl_ms"),
    "lease not an integer": ({"type": "webhook", "pattern": "a/*", "webhook": {"url": "http://localhost/h"},
                              "lease_ttl_ms": "5000"}, "lease_ttl_ms"),
    "webhook without url": ({"type": "webhook", "pattern": "a/*", "webhook": {}}, "webhook.url"),
    "webhook missing": ({"type": "webhook", "pattern": "a/*"}, "webhook.url"),
    "pull-wake without wake_stream": ({"type": "pull-wake", "pattern": "a/*"}, "wake_stream"),
    "dot-dot stream": ({"type": "webhook", "streams": ["a/../b"], "webhook": {"url": "http://localhost/h"}},
                       ".."),
    "dot-dot pattern": ({"type": "webhook", "pattern": "../*", "webhook": {"url": "http://localhost/h"}}, ".."),
    "reserved stream": ({"type": "webhook", "streams": ["__ds/x"], "webhook": {"url": "http://localhost/h"}},
                        "__ds"),
    "unknown field": ({"type": "webhook", "pattern": "a/*", "webhook": {"url": "http://localhost/h"},
                       "colour": "blue"}, "colour"),
    "not an object": (["type", "webhook"], "object"),
}


@pytest.mark.parametrize("case", sorted(INVALID_BODIES))
def test_invalid_requests(server, http, uid, case):
    body, mentions = INVALID_BODIES[case]
    sub_id = f"{uid}-bad"
    r = http.put(sub_url(server, sub_id), json=body)
    message = error_of(r, 400, "INVALID_REQUEST")
    assert mentions in message, message
    error_of(http.get(sub_url(server, sub_id)), 404, "SUBSCRIPTION_NOT_FOUND")  # nothing was made


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe"], ids=["garbage", "empty", "not-utf8"])
def test_non_json_body(server, http, uid, raw):
    r = http.put(sub_url(server, f"{uid}-raw"), content=raw, headers={"Content-Type": "application/json"})
    message = error_of(r, 400, "INVALID_REQUEST")
    assert "JSON" in message, message


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/hook", "https://10.0.0.1/hook", "https://192.168.1.1/", "https://169.254.169.254/",
    "https://[::1]/", "https://[fd00::1]/", "https://100.64.0.1/", "https://127.0.0.1/", "ftp://x",
    "http://example.com", "https://localhost/", "http://127.0.1.1/", "https://user:pw@example.com/",
    "https:///nohost", "",
])
def test_webhook_url_rejected(server, http, uid, url):
    r = http.put(sub_url(server, f"{uid}-url"), json=webhook_body(url, pattern="a/*"))
    error_of(r, 400, "WEBHOOK_URL_REJECTED")


@pytest.mark.parametrize("url", ["http://localhost:1/hook", "http://127.0.0.1:1/hook", "http://127.0.0.7/",
                                 "https://example.com/hook", "https://93.184.216.34/hook"])
def test_webhook_url_accepted(server, http, uid, url):
    """The positive side of the URL checks (nothing matches the pattern: nothing is sent)."""
    info = subscribe(http, server, f"{uid}-ok", webhook_body(url, pattern=f"{uid}/never/*"))
    assert info["webhook"]["url"] == url


# ---------------------------------------------------------------- 3. JWKS


def test_jwks(server, http, uid, receivers):
    r = http.get(server.url("__ds/jwks.json"))
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/jwk-set+json"
    assert r.headers["Cache-Control"] == "public, max-age=300"
    keys = r.json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA", key
        assert key["kid"].startswith("ds_"), key
        assert "d" not in key, "the private key is published"
    info = subscribe(http, server, f"{uid}-jwks", webhook_body(receivers().url, pattern=f"{uid}/*"))
    assert info["webhook"]["signing"]["kid"] in {key["kid"] for key in keys}
    head = http.head(server.url("__ds/jwks.json"))
    assert head.status_code == 200 and head.content == b""


# ---------------------------------------------------------------- 4. delivery


def test_delivery(server, http, uid, receivers):
    rec = receivers(reply={"done": True})
    pre = f"{uid}/events/pre"
    pre_tail = create_stream(http, server, pre, b"before the subscription")
    sub_id = f"{uid}-deliver"
    info = subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/events/*"))
    # a stream that existed before is linked at its tail: nothing pending
    assert links(info)[pre] == {"path": pre, "link_type": "glob", "acked_offset": pre_tail}

    create_stream(http, server, f"{uid}/other/y", b"not matching")
    append(http, server, f"{uid}/other/y", b"still not matching")
    create_stream(http, server, f"{uid}/events/x/deeper", b"one segment too many for *")
    time.sleep(1.0)
    assert rec.deliveries == [], rec.deliveries

    tail = create_stream(http, server, f"{uid}/events/x", b"hello")
    (first,) = rec.wait_for(1)
    assert first.verified, first.signature
    assert first.answered == 200
    body = first.body
    assert body["subscription_id"] == sub_id
    assert isinstance(body["wake_id"], str) and body["wake_id"]
    assert isinstance(body["generation"], int) and not isinstance(body["generation"], bool)
    assert body["generation"] >= 1
    streams = links(body)
    assert streams[f"{uid}/events/x"]["has_pending"] is True
    assert streams[f"{uid}/events/x"]["tail_offset"] == tail
    assert streams[f"{uid}/events/x"]["acked_offset"] == "-1"
    assert streams.get(pre, {"has_pending": False})["has_pending"] is False
    assert f"{uid}/other/y" not in streams and f"{uid}/events/x/deeper" not in streams
    assert body["callback_url"].endswith(f"/v1/stream/__ds/subscriptions/{sub_id}/callback")
    assert body["callback_url"].startswith(server.base)
    assert isinstance(body["callback_token"], str) and body["callback_token"]

    # the pre-existing stream wakes the subscription when it is appended to
    pre_new = append(http, server, pre, b" and after")
    second = rec.wait_for(2)[1]
    assert second.verified
    assert second.body["generation"] > body["generation"]
    assert links(second.body)[pre]["has_pending"] is True
    assert links(second.body)[pre]["tail_offset"] == pre_new
    assert links(second.body)[pre]["acked_offset"] == pre_tail
    time.sleep(0.5)
    assert len(rec.deliveries) == 2, [d.body for d in rec.deliveries]


def test_tampered_signature_is_detected(server, http, uid, receivers):
    """The receivers' check is real: a changed body, time or kid does not verify."""
    from receiver import verify
    rec = receivers(reply={"done": True})
    subscribe(http, server, f"{uid}-sig", webhook_body(rec.url, pattern=f"{uid}/events/*"))
    create_stream(http, server, f"{uid}/events/sig", b"signed")
    (delivery,) = rec.wait_for(1)
    jwks = http.get(server.url("__ds/jwks.json")).json()
    assert verify(delivery.raw, delivery.signature, jwks)
    assert not verify(delivery.raw.replace(b'"generation":', b'"generation": '), delivery.signature, jwks)
    fields = dict(part.split("=", 1) for part in delivery.signature.split(","))
    later = f"t={int(fields['t']) + 1},kid={fields['kid']},ed25519={fields['ed25519']}"
    assert not verify(delivery.raw, later, jwks)
    assert not verify(delivery.raw, delivery.signature, {"keys": []})
    assert not verify(delivery.raw, None, jwks)


# ---------------------------------------------------------------- 5. done auto-acks


def test_done_reply_auto_acks(server, http, uid, receivers):
    rec = receivers(reply={"done": True})
    sub_id = f"{uid}-done"
    stream = f"{uid}/events/d"
    subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/events/*"))
    tail = create_stream(http, server, stream, b"one")
    (first,) = rec.wait_for(1)
    assert links(first.body)[stream]["tail_offset"] == tail

    def acked():
        """the done reply acks the snapshot's tail"""
        return links(describe(http, server, sub_id)).get(stream, {}).get("acked_offset") == tail
    eventually(acked)

    tail2 = append(http, server, stream, b"two")
    second = rec.wait_for(2)[1]
    assert second.verified
    assert second.body["generation"] == first.body["generation"] + 1
    assert second.body["wake_id"] != first.body["wake_id"]
    assert second.body["callback_token"] != first.body["callback_token"]
    entry = links(second.body)[stream]
    assert entry["acked_offset"] == tail and entry["tail_offset"] == tail2 and entry["has_pending"] is True

    def acked2():
        """the second done reply acks the new tail"""
        return links(describe(http, server, sub_id))[stream]["acked_offset"] == tail2
    eventually(acked2)
    time.sleep(0.5)
    assert len(rec.deliveries) == 2


def test_append_while_a_wake_ends_is_not_lost(server, http, uid, receivers):
    """An append that lands while the server is ending a wake (here: right as the receiver
    answers done) must still wake the subscription. (It was lost, on the file store most
    of the time, when appends to a busy subscription were left to the wake's end, which
    could have read the tails already.)"""
    rec = receivers(reply={"done": True})
    sub_id = f"{uid}-race"
    stream = f"{uid}/events/race"
    subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/events/*"))
    tail = create_stream(http, server, stream, b"0")
    rounds = 6
    for n in range(1, rounds + 1):
        rec.wait_for(n)
        tail = append(http, server, stream, b"%d" % n)  # as soon as the receiver has it
    last = rec.wait_for(rounds + 1)[-1]
    assert links(last.body)[stream]["tail_offset"] == tail
    generations = [d.body["generation"] for d in rec.wait_for(rounds + 1)]
    assert generations == sorted(set(generations)), generations

    def acked():
        """the last done acks the last tail"""
        return links(describe(http, server, sub_id))[stream]["acked_offset"] == tail
    eventually(acked)


# ---------------------------------------------------------------- 6. callbacks


def test_callback_acks_fencing_tokens_offsets(server, http, uid, receivers):
    rec = receivers()  # answers 200 {}: the work stays with the receiver, which calls back
    sub_id = f"{uid}-cb"
    stream = f"{uid}/events/c"
    subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/events/*", lease_ttl_ms=60000))
    tail = create_stream(http, server, stream, b"work")
    (first,) = rec.wait_for(1)
    wake = first.body

    # no token, a wrong token, a token with a flipped character: 401, nothing changes
    r = http.post(wake["callback_url"], json={"wake_id": wake["wake_id"], "generation": wake["generation"],
                                             "done": True})
    error_of(r, 401, "TOKEN_INVALID")
    error_of(callback(http, wake, token="not-a-token", done=True), 401, "TOKEN_INVALID")
    token = wake["callback_token"]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    error_of(callback(http, wake, token=flipped, done=True), 401, "TOKEN_INVALID")

    # an ack beyond the tail, or of a stream the subscription does not follow: 409 INVALID_OFFSET
    beyond = format_offset(parse_position(tail) + 1000)
    error_of(callback(http, wake, acks=[{"stream": stream, "offset": beyond}], done=True), 409, "INVALID_OFFSET")
    error_of(callback(http, wake, acks=[{"stream": f"{uid}/elsewhere", "offset": tail}]), 409, "INVALID_OFFSET")
    error_of(callback(http, wake, acks=[{"stream": stream, "offset": "-1"}]), 409, "INVALID_OFFSET")
    error_of(callback(http, wake, acks=[{"stream": stream, "offset": "garbage"}]), 409, "INVALID_OFFSET")
    # a stale generation or another wake_id in the body: fenced
    stale = dict(wake, generation=wake["generation"] - 1)
    error_of(callback(http, stale, token=token, done=True), 409, "FENCED")
    error_of(callback(http, dict(wake, wake_id="w_other"), token=token, done=True), 409, "FENCED")
    assert links(describe(http, server, sub_id))[stream]["acked_offset"] == "-1"

    r = callback(http, wake, acks=[{"stream": stream, "offset": tail}], done=True)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json() == {"ok": True, "next_wake": False}
    assert links(describe(http, server, sub_id))[stream]["acked_offset"] == tail

    # the same callback again: the wake is over
    error_of(callback(http, wake, acks=[{"stream": stream, "offset": tail}], done=True), 409, "FENCED")
    time.sleep(0.5)
    assert len(rec.deliveries) == 1  # nothing pending: no new wake

    # work that arrived during a wake: done answers next_wake true, and it is delivered
    tail2 = append(http, server, stream, b"more")
    second = rec.wait_for(2)[1]
    append(http, server, stream, b"and more while the receiver works")
    r = callback(http, second.body, acks=[{"stream": stream, "offset": tail2}], done=True)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": True}, r.text
    third = rec.wait_for(3)[2]
    assert third.body["generation"] == second.body["generation"] + 1
    assert links(third.body)[stream]["acked_offset"] == tail2
    # the old wake's token does not open the new one
    error_of(callback(http, dict(third.body, callback_token=second.body["callback_token"])), 409, "FENCED")


def test_callback_extends_the_lease(server, http, uid, receivers):
    rec = receivers()
    sub_id = f"{uid}-lease"
    stream = f"{uid}/events/l"
    subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/events/*", lease_ttl_ms=1000))
    create_stream(http, server, stream, b"slow work")
    (first,) = rec.wait_for(1)
    wake = first.body
    end = time.monotonic() + 2.0
    last = time.monotonic()
    while time.monotonic() < end:
        last = time.monotonic()
        r = callback(http, wake)  # a heartbeat: no acks, not done
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.json() == {"ok": True, "next_wake": False}
        time.sleep(0.4)
    assert len(rec.deliveries) == 1, "re-delivered while the lease was being extended"

    # no more callbacks: the lease runs out, the work is still pending, a new wake comes
    second = rec.wait_for(2, timeout=WAIT)[1]
    assert second.at - last >= 0.9, second.at - last
    assert second.verified
    assert second.body["generation"] > wake["generation"]
    assert second.body["wake_id"] != wake["wake_id"]
    assert links(second.body)[stream]["has_pending"] is True
    # the expired wake is fenced
    error_of(callback(http, wake, done=True), 409, "FENCED")


def test_lease_runs_out_without_callbacks(server, http, uid, receivers):
    """Without a callback the 1 s lease ends ~1 s after the receiver took the wake."""
    rec = receivers()
    subscribe(http, server, f"{uid}-expire", webhook_body(rec.url, pattern=f"{uid}/events/*", lease_ttl_ms=1000))
    create_stream(http, server, f"{uid}/events/e", b"abandoned")
    first, second = rec.wait_for(2, timeout=WAIT)
    assert 0.9 <= second.at - first.at <= 1.0 + 2.0, second.at - first.at
    assert second.body["generation"] == first.body["generation"] + 1


# ---------------------------------------------------------------- 7. retries with back-off


def test_retries_back_off(server, http, uid, receivers):
    rec = receivers(fail_first=3, reply={"done": True})
    sub_id = f"{uid}-retry"
    subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/events/*"))
    create_stream(http, server, f"{uid}/events/r", b"retry me")
    rec.wait_for(1)

    def failed():
        """status failed after the first failed attempt"""
        return describe(http, server, sub_id)["status"] == "failed"
    eventually(failed, timeout=0.8, interval=0.02)

    deliveries = rec.wait_for(4, timeout=20)
    assert [d.answered for d in deliveries] == [503, 503, 503, 200]
    assert all(d.verified for d in deliveries)
    assert len({d.body["wake_id"] for d in deliveries}) == 1
    assert len({d.body["generation"] for d in deliveries}) == 1
    gaps = [b.at - a.at for a, b in zip(deliveries, deliveries[1:])]
    for gap, base in zip(gaps, (1.0, 2.0, 4.0)):
        assert 0.8 * base - 0.05 <= gap <= 1.2 * base + 0.5, (gaps, base)

    def active():
        """status active after the successful attempt"""
        return describe(http, server, sub_id)["status"] == "active"
    eventually(active)
    time.sleep(0.3)
    assert len(rec.deliveries) == 4


# ---------------------------------------------------------------- 8. delivery-time SSRF refusal


def test_name_resolving_to_internal_address_is_refused_at_delivery(server, http, uid):
    hostname = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(hostname, 443, proto=socket.IPPROTO_TCP)}
    except socket.gaierror as exc:
        pytest.skip(f"this machine's hostname {hostname!r} does not resolve: {exc}")
    internal = sorted(a for a in addresses if ":" not in a and not ipaddress.ip_address(a).is_global)
    if not internal:
        pytest.skip(f"{hostname!r} resolves to {addresses}, no internal IPv4 address here")
    try:
        ipaddress.ip_address(hostname)
        pytest.skip("the hostname is an IP literal")
    except ValueError:
        pass

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((internal[0], 0))  # where the name leads
        listener.listen(16)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        sub_id = f"{uid}-ssrf"
        # a name is not resolved at creation: accepted
        info = subscribe(http, server, sub_id, webhook_body(f"https://{hostname}:{port}/hook",
                                                            pattern=f"{uid}/events/*"))
        assert info["status"] == "active"
        started = time.monotonic()
        create_stream(http, server, f"{uid}/events/s", b"for an internal address")

        def failed():
            """the refused delivery marks the subscription failed"""
            return describe(http, server, sub_id)["status"] == "failed"
        eventually(failed)
        time.sleep(max(0.0, 2.2 - (time.monotonic() - started)))  # the first retry (~1 s) too
        readable, _, _ = select.select([listener], [], [], 0)
        assert not readable, "the server connected to an internal address"
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert describe(http, server, sub_id)["status"] == "failed"
    finally:
        listener.close()


def test_listener_check_can_see_a_connection():
    """The SSRF test's check is real: a connection to the listener is seen."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.setblocking(False)
        with socket.create_connection(listener.getsockname(), timeout=5):
            readable, _, _ = select.select([listener], [], [], 2)
            assert readable
    finally:
        listener.close()


# ---------------------------------------------------------------- 9. explicit streams


def test_explicit_streams(server, http, uid, receivers):
    rec = receivers(reply={"done": True})
    sub_id = f"{uid}-explicit"
    both = f"{uid}/g/both"
    both_tail = create_stream(http, server, both, b"exists first")
    info = subscribe(http, server, sub_id, webhook_body(rec.url, pattern=f"{uid}/g/*"))
    assert links(info)[both]["link_type"] == "glob"

    manual = f"{uid}/manual/b"
    for _ in range(2):  # idempotent
        r = http.post(sub_url(server, sub_id, "streams"), json={"streams": [manual]})
        assert r.status_code == 204, (r.status_code, r.text)
    assert links(describe(http, server, sub_id))[manual] == {"path": manual, "link_type": "explicit",
                                                             "acked_offset": "-1"}

    # an explicitly linked stream is followed: it is delivered when it appears
    tail = create_stream(http, server, manual, b"explicit")
    (first,) = rec.wait_for(1)
    assert links(first.body)[manual]["tail_offset"] == tail and links(first.body)[manual]["has_pending"]

    for _ in range(2):  # idempotent
        r = http.delete(sub_url(server, sub_id, "streams", quote(manual, safe="")))
        assert r.status_code == 204, (r.status_code, r.text)
    assert manual not in links(describe(http, server, sub_id))
    append(http, server, manual, b"no longer followed")
    time.sleep(0.7)
    assert len(rec.deliveries) == 1

    # linked by the pattern and explicitly: removing the explicit link keeps the glob link
    r = http.post(sub_url(server, sub_id, "streams"), json={"streams": [both]})
    assert r.status_code == 204, (r.status_code, r.text)
    assert links(describe(http, server, sub_id))[both]["link_type"] == "explicit"
    r = http.delete(sub_url(server, sub_id, "streams", quote(both, safe="")))
    assert r.status_code == 204, (r.status_code, r.text)
    assert links(describe(http, server, sub_id))[both] == {"path": both, "link_type": "glob",
                                                           "acked_offset": both_tail}
    # ... and it still wakes the subscription
    append(http, server, both, b"still followed")
    second = rec.wait_for(2)[1]
    assert links(second.body)[both]["has_pending"] is True

    # the stream path may also be given as several segments
    r = http.post(sub_url(server, sub_id, "streams"), json={"streams": [manual]})
    assert r.status_code == 204
    r = http.delete(sub_url(server, sub_id, "streams", *manual.split("/")))
    assert r.status_code == 204, (r.status_code, r.text)
    assert manual not in links(describe(http, server, sub_id))

    # bad bodies and paths
    error_of(http.post(sub_url(server, sub_id, "streams"), json={"streams": []}), 400, "INVALID_REQUEST")
    error_of(http.post(sub_url(server, sub_id, "streams"), json={"streams": ["a/../b"]}), 400, "INVALID_REQUEST")
    error_of(http.post(sub_url(server, sub_id, "streams"), json=["x"]), 400, "INVALID_REQUEST")

    # unknown subscriptions
    error_of(http.post(sub_url(server, f"{uid}-nobody", "streams"), json={"streams": [manual]}),
             404, "SUBSCRIPTION_NOT_FOUND")
    error_of(http.delete(sub_url(server, f"{uid}-nobody", "streams", quote(manual, safe=""))),
             404, "SUBSCRIPTION_NOT_FOUND")


# ---------------------------------------------------------------- 10. the reserved namespace


def test_unknown_control_routes_and_methods(server, http, uid, receivers):
    for path in ("__ds/nope", "__ds", "__ds/subscriptions", f"__ds/subscriptions/{uid}-x/unknown",
                 f"__ds/subscriptions/{uid}-x/callback/more"):
        r = http.get(server.url(path))
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json"), (path, r.headers)
        assert r.json()["error"]["code"], r.text

    subscribe(http, server, f"{uid}-m", webhook_body(receivers().url, pattern=f"{uid}/*"))
    for method, path, allowed in (("POST", "__ds/jwks.json", {"GET", "HEAD"}),
                                  ("DELETE", "__ds/jwks.json", {"GET", "HEAD"}),
                                  ("POST", f"__ds/subscriptions/{uid}-m", {"GET", "PUT", "DELETE"}),
                                  ("GET", f"__ds/subscriptions/{uid}-m/callback", {"POST"}),
                                  ("PUT", f"__ds/subscriptions/{uid}-m/streams", {"POST"}),
                                  ("GET", f"__ds/subscriptions/{uid}-m/streams/a", {"DELETE"})):
        r = http.request(method, server.url(path))
        error_of(r, 405, "METHOD_NOT_ALLOWED")
        assert {m.strip() for m in r.headers.get("Allow", "").split(",")} == allowed, (method, path, r.headers)
    # a method no route has is refused before routing, also with Allow
    r = http.request("PATCH", server.url(f"__ds/subscriptions/{uid}-m"))
    assert r.status_code == 405 and "GET" in r.headers["Allow"], (r.status_code, r.headers)
    assert describe(http, server, f"{uid}-m")["status"] == "active"


def test_no_app_stream_in_the_reserved_namespace(server, http):
    for name in ("__ds/foo", "__ds/subscriptions", "a/__ds/b"):
        r = http.put(server.url(name), content=b"x", headers={"Content-Type": TEXT})
        assert r.status_code == 404, (name, r.status_code, r.text)
        assert NEXT not in r.headers
        r = http.get(server.url(name) + "?offset=-1")
        assert r.status_code == 404, (name, r.status_code, r.text)
        assert NEXT not in r.headers and r.headers["Content-Type"].startswith("application/json")
        r = http.post(server.url(name), content=b"x", headers={"Content-Type": TEXT})
        assert r.status_code in (404, 405) and NEXT not in r.headers, (name, r.status_code, r.text)
    # an ordinary stream is still a stream (the checks above can tell)
    r = http.put(server.url(f"plain{time.monotonic_ns()}"), content=b"x", headers={"Content-Type": TEXT})
    assert r.status_code == 201 and NEXT in r.headers


# ---------------------------------------------------------------- 11. not enabled


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("wh-plain"), "memory").start()
    yield srv
    srv.stop()
    assert not srv.errors(), srv.errors()


def test_not_enabled(plain_server, http):
    for method, path, body in (("GET", "__ds/jwks.json", None),
                               ("PUT", "__ds/subscriptions/s1", {"type": "webhook", "pattern": "a/*",
                                                                  "webhook": {"url": "http://localhost/h"}}),
                               ("GET", "__ds/subscriptions/s1", None),
                               ("POST", "__ds/subscriptions/s1/callback", {}),
                               ("GET", "__ds/nope", None)):
        r = http.request(method, plain_server.url(path), json=body)
        error_of(r, 404, "NOT_ENABLED")
    r = http.put(plain_server.url("__ds/foo"), content=b"x", headers={"Content-Type": TEXT})
    error_of(r, 404, "NOT_ENABLED")


# ---------------------------------------------------------------- metrics (a site with `metrics /metrics`)


class MetricsServer(Server):
    """The same server with `route /metrics { metrics }` on its site (a bare `metrics
    /metrics` would sort after the site's catch-all `respond`)."""

    def _spawn(self) -> None:
        import retention_servers
        original = retention_servers.CADDYFILE
        retention_servers.CADDYFILE = original.replace("\troute {prefix}/* {{", "\troute /metrics {{\n\t\tmetrics\n\t}}\n\troute {prefix}/* {{")
        try:
            super()._spawn()
        finally:
            retention_servers.CADDYFILE = original


def hostname_is_internal() -> bool:
    try:
        return not ipaddress.ip_address(socket.gethostbyname(socket.gethostname())).is_global
    except (OSError, ValueError):
        return False


def delivery_counts(http: httpx.Client, srv: Server) -> dict[str, float]:
    r = http.get(srv.base + "/metrics")
    assert r.status_code == 200, (r.status_code, r.text[:500])
    counts = {}
    for line in r.text.splitlines():
        found = re.fullmatch(r'durable_streams_webhook_deliveries_total\{outcome="([a-z_]+)"\} (\S+)', line)
        if found:
            counts[found.group(1)] = float(found.group(2))
    return counts


def test_delivery_metrics(tmp_path, http):
    srv = MetricsServer(tmp_path, "memory", settings=SUBSCRIPTIONS).start()
    rec = Receiver(jwks_url=srv.url("__ds/jwks.json"), fail_first=1, reply={"done": True}).start()
    try:
        r = http.put(srv.url("__ds/subscriptions/m1"), json=webhook_body(rec.url, pattern="mx/*"))
        assert r.status_code == 201, r.text
        r = http.put(srv.url("__ds/subscriptions/m2"),
                     json=webhook_body(f"https://{socket.gethostname()}:9/hook", pattern="my/*"))
        assert r.status_code == 201, r.text
        before = delivery_counts(http, srv)
        create_stream(http, srv, "mx/a", b"counted")
        create_stream(http, srv, "my/a", b"refused")
        rec.wait_for(2, timeout=WAIT)

        def counted():
            """a rejected (503) and a delivered attempt counted"""
            now = delivery_counts(http, srv)
            return (now.get("rejected", 0) - before.get("rejected", 0) >= 1
                    and now.get("delivered", 0) - before.get("delivered", 0) >= 1 and now)
        now = eventually(counted)
        assert now["rejected"] - before.get("rejected", 0) == 1
        assert now["delivered"] - before.get("delivered", 0) == 1
        if hostname_is_internal():  # the refused delivery (see the SSRF test) is counted too
            assert now.get("refused", 0) - before.get("refused", 0) >= 1, now
    finally:
        rec.stop()
        srv.stop()
    assert not srv.errors(), srv.errors()
