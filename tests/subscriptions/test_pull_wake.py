"""Pull-wake subscriptions (PROTOCOL.md §7.2–7.3) against real server processes on the
memory and file stores: a worker loop that tails the wake stream, claims, reads each
pending stream from its acked offset to the snapshot's tail and acks `done` (every
message processed exactly once, in order); two workers racing for one claim; release,
stale tokens and fencing; lease expiry and heartbeats; `next_wake` when data arrived
during a claim."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from durable_streams.server.engine.offsets import format_offset

from retention_servers import Server, client, serving
from subscription_api import BINARY, JSON, NEXT, SUBSCRIPTIONS, append, position, uniq


RECORD = 32  # bytes: fixed-size records, so offsets are record boundaries
WAIT = 15.0  # longest wait for something the server does in the background (a guard)
@pytest.fixture(scope="module", params=["memory", "file"])
def server(request, tmp_path_factory):
    with serving(Server(tmp_path_factory.mktemp(f"pull-{request.param}"), request.param,
                        settings=SUBSCRIPTIONS)) as srv:
        yield srv


# ---------------------------------------------------------------- helpers

def record(stream: str, n: int) -> bytes:
    return f"{stream}#{n:05d}".encode().ljust(RECORD - 1, b".") + b"\n"


class Sub:
    """One pull-wake subscription and its wake stream on `srv`."""

    def __init__(self, srv: Server, c: httpx.Client, pattern: str, lease_ttl_ms: int = 1000) -> None:
        self.srv, self.c = srv, c
        self.id = uniq("sub")
        self.wake_stream = uniq("wake")
        r = c.put(srv.url(self.wake_stream), content=b"[]", headers=JSON)
        assert r.status_code == 201, (r.status_code, r.text)
        r = c.put(self.url(), json={"type": "pull-wake", "pattern": pattern, "wake_stream": self.wake_stream,
                                    "lease_ttl_ms": lease_ttl_ms})
        assert r.status_code == 201, (r.status_code, r.text)
        assert r.json()["type"] == "pull-wake" and r.json()["wake_stream"] == self.wake_stream

    def url(self, action: str = "") -> str:
        return self.srv.url(f"__ds/subscriptions/{self.id}") + (f"/{action}" if action else "")

    def claim(self, worker: str, c: httpx.Client | None = None) -> httpx.Response:
        return (c or self.c).post(self.url("claim"), json={"worker": worker})

    def ack(self, token: str, body: dict, action: str = "ack") -> httpx.Response:
        return self.c.post(self.url(action), headers={"Authorization": f"Bearer {token}"}, json=body)

    def ack_claim(self, claim: dict, done: bool, *, acks: list | None = None) -> httpx.Response:
        if acks is None:
            acks = [{"stream": s["path"], "offset": s["tail_offset"]} for s in claim["streams"] if s["has_pending"]]
        return self.ack(claim["token"], {"wake_id": claim["wake_id"], "generation": claim["generation"],
                                         "acks": acks, "done": done})

    def release(self, claim: dict) -> httpx.Response:
        return self.ack(claim["token"], {"wake_id": claim["wake_id"], "generation": claim["generation"]},
                        action="release")

    def state(self) -> dict:
        r = self.c.get(self.url())
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def acked(self) -> dict[str, str]:
        return {s["path"]: s["acked_offset"] for s in self.state()["streams"]}

    def wakes(self) -> list[dict]:
        r = self.c.get(self.srv.url(self.wake_stream), params={"offset": "-1"})
        assert r.status_code == 200, (r.status_code, r.text)
        return [e for e in r.json() if e.get("subscription_id") == self.id]

    def wait_wake(self, generation: int, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.wakes() if e["generation"] == generation]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no wake event for generation {generation}: {self.wakes()}"
            time.sleep(0.05)


def create(c: httpx.Client, url: str) -> None:
    r = c.put(url, headers=BINARY)
    assert r.status_code == 201, (r.status_code, r.text)


def error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()["error"]
    assert body["code"] == code, body
    return body


def claimed(r: httpx.Response) -> dict:
    assert r.status_code == 200, (r.status_code, r.text)
    body = r.json()
    assert set(body) >= {"wake_id", "generation", "token", "streams", "lease_ttl_ms"}, body
    return body


# ---------------------------------------------------------------- the worker loop

def test_worker_loop_processes_every_message_once_in_order(server, http):
    prefix = uniq("jobs")
    sub = Sub(server, http, f"{prefix}/*")
    streams = [f"{prefix}/s{i}" for i in range(3)]
    for name in streams:
        create(http, server.url(name))
    other = uniq("other")  # not matched: never pending, never processed
    create(http, server.url(other))
    per_stream = 15
    written: dict[str, list[bytes]] = {name: [] for name in streams}
    processed: dict[str, list[bytes]] = {name: [] for name in streams}
    tails: dict[str, str] = {}
    writer_error: list[BaseException] = []

    def writer() -> None:
        try:
            with client() as wc:
                for n in range(per_stream):
                    for name in streams:
                        piece = record(name, n)
                        tails[name] = append(wc, server.url(name), piece)
                        written[name].append(piece)
                    append(wc, server.url(other), record(other, n))
                    time.sleep(0.01)
        except BaseException as exc:  # reported by the test thread
            writer_error.append(exc)

    writing = threading.Thread(target=writer)
    writing.start()
    claims = 0
    generations: list[int] = []
    wake_offset = "-1"
    deadline = time.monotonic() + 45
    with client() as worker:
        while True:
            total = sum(len(v) for v in processed.values())
            if not writing.is_alive() and total == per_stream * len(streams):
                break
            assert time.monotonic() < deadline, f"worker stalled at {total} messages"
            params = {"offset": wake_offset} if wake_offset == "-1" else {"offset": wake_offset, "live": "long-poll"}
            r = worker.get(server.url(sub.wake_stream), params=params)
            assert r.status_code in (200, 204), (r.status_code, r.text)
            wake_offset = r.headers[NEXT]
            events = r.json() if r.status_code == 200 and r.content else []
            if not any(e.get("subscription_id") == sub.id and e["type"] == "wake" for e in events):
                continue
            while True:  # claim while there is work; next_wake says there is more
                r = sub.claim("loop", worker)
                if r.status_code == 409:
                    error(r, 409, "NO_PENDING_WORK")
                    break
                claim = claimed(r)
                claims += 1
                generations.append(claim["generation"])
                acks = []
                for info in claim["streams"]:
                    assert info["path"] in streams, info  # the unmatched stream never shows up
                    start, end = max(position(info["acked_offset"]), 0), position(info["tail_offset"])
                    assert info["has_pending"] == (end > start)
                    if end <= start:
                        continue
                    got = b""
                    while len(got) < end - start:  # read from acked_offset up to the snapshot's tail
                        offset = format_offset(start + len(got)) if start + len(got) else "-1"
                        rr = worker.get(server.url(info["path"]), params={"offset": offset})
                        assert rr.status_code == 200, (rr.status_code, rr.text)
                        got += rr.content
                    got = got[: end - start]
                    assert len(got) % RECORD == 0
                    processed[info["path"]] += [got[i:i + RECORD] for i in range(0, len(got), RECORD)]
                    acks.append({"stream": info["path"], "offset": info["tail_offset"]})
                r = sub.ack_claim(claim, True, acks=acks)
                assert r.status_code == 200, (r.status_code, r.text)
                assert r.json()["ok"] is True
                if not r.json()["next_wake"]:
                    break
    writing.join()
    assert not writer_error, writer_error
    for name in streams:
        assert processed[name] == written[name], name  # each exactly once, in order
    assert generations == sorted(set(generations)), generations  # every claim a new, higher generation
    assert claims >= 1
    acked = sub.acked()
    assert set(acked) == set(streams)
    for name in streams:
        assert acked[name] == tails[name], (name, acked[name], tails[name])
        assert position(tails[name]) == per_stream * RECORD
    error(sub.claim("late"), 409, "NO_PENDING_WORK")


# ---------------------------------------------------------------- competing workers, fencing

def test_two_workers_race_for_one_claim(server, http):
    prefix = uniq("race")
    sub = Sub(server, http, f"{prefix}/*", lease_ttl_ms=30_000)
    name = f"{prefix}/a"
    create(http, server.url(name))
    tail = append(http, server.url(name), record(name, 0))
    sub.wait_wake(1)
    barrier = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def compete(worker: str) -> None:
        with client() as wc:
            barrier.wait()
            answers[worker] = sub.claim(worker, wc)

    threads = [threading.Thread(target=compete, args=(w,)) for w in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses == [200, 409], {w: (r.status_code, r.text) for w, r in answers.items()}
    winner = next(w for w, r in answers.items() if r.status_code == 200)
    loser = next(w for w in answers if w != winner)
    claim = claimed(answers[winner])
    assert claim["generation"] == 1
    assert claim["streams"] == [{"path": name, "link_type": "glob", "acked_offset": "-1",
                                 "tail_offset": tail, "has_pending": True}]
    lost = error(answers[loser], 409, "ALREADY_CLAIMED")
    assert lost["current_holder"] == winner and lost["generation"] == claim["generation"], lost

    # the wrong wake_id or generation with the right token: fenced, and the claim stays
    body = {"wake_id": claim["wake_id"], "generation": claim["generation"], "acks": []}
    error(sub.ack(claim["token"], {**body, "wake_id": "w_not-this-one"}), 409, "FENCED")
    error(sub.ack(claim["token"], {**body, "generation": claim["generation"] + 1}), 409, "FENCED")
    error(sub.ack(claim["token"], {**body, "generation": claim["generation"] - 1}), 409, "FENCED")
    error(sub.release({**claim, "wake_id": "w_not-this-one"}), 409, "FENCED")
    # tokens that are not this server's, or not for this subscription: 401
    error(sub.ack("garbage", body), 401, "TOKEN_INVALID")
    error(sub.ack(claim["token"][:-4] + "AAAA", body), 401, "TOKEN_INVALID")
    r = http.post(sub.url("ack"), json=body)
    error(r, 401, "TOKEN_INVALID")
    other = Sub(server, http, f"{uniq('elsewhere')}/*")
    error(other.ack(claim["token"], body), 401, "TOKEN_INVALID")
    assert sub.acked() == {name: "-1"}  # nothing above moved a cursor
    error(sub.claim(loser), 409, "ALREADY_CLAIMED")

    # release with work pending: 204, and a new wake (generation 2) is announced
    r = sub.release(claim)
    assert r.status_code == 204, (r.status_code, r.text)
    assert sub.wait_wake(2)["stream"] == name
    error(sub.ack_claim(claim, True), 409, "FENCED")  # the old token is stale now
    error(sub.release(claim), 409, "FENCED")
    second = claimed(sub.claim(loser))
    assert second["generation"] == 2 and second["wake_id"] != claim["wake_id"]
    error(sub.ack_claim(claim, False), 409, "FENCED")
    error(sub.ack(claim["token"], {"wake_id": second["wake_id"], "generation": second["generation"],
                                   "acks": []}), 409, "FENCED")  # old token, current ids

    # ack everything without done (a heartbeat), then release: no work left, no new wake
    r = sub.ack_claim(second, False)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    assert sub.acked() == {name: tail}
    r = sub.release(second)
    assert r.status_code == 204, (r.status_code, r.text)
    error(sub.claim(winner), 409, "NO_PENDING_WORK")
    time.sleep(0.5)
    assert max(e["generation"] for e in sub.wakes()) == 2, sub.wakes()
    assert sub.state()["streams"][0]["acked_offset"] == tail


# ---------------------------------------------------------------- leases

def test_lease_expiry_hands_the_work_to_another_worker(server, http):
    prefix = uniq("lease")
    sub = Sub(server, http, f"{prefix}/*", lease_ttl_ms=1000)
    name = f"{prefix}/a"
    create(http, server.url(name))
    append(http, server.url(name), record(name, 0))
    sub.wait_wake(1)
    first = claimed(sub.claim("sleepy"))
    assert first["lease_ttl_ms"] == 1000
    error(sub.claim("eager"), 409, "ALREADY_CLAIMED")
    time.sleep(1.5)  # the lease runs out; nothing was acked
    second = claimed(sub.claim("eager"))
    assert second["generation"] > first["generation"], (first, second)
    assert second["wake_id"] != first["wake_id"]
    assert second["streams"][0]["acked_offset"] == "-1"  # the first worker's work is redone
    error(sub.ack_claim(first, True), 409, "FENCED")
    error(sub.ack_claim(first, False), 409, "FENCED")
    error(sub.release(first), 409, "FENCED")
    r = sub.ack_claim(second, True)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text


def test_lease_expiry_announces_a_new_wake(server, http):
    """§7.3: when a lease expires with work pending, another wake is scheduled: workers
    that only tail the wake stream hear of it."""
    prefix = uniq("expire")
    sub = Sub(server, http, f"{prefix}/*", lease_ttl_ms=1000)
    name = f"{prefix}/a"
    create(http, server.url(name))
    append(http, server.url(name), record(name, 0))
    sub.wait_wake(1)
    first = claimed(sub.claim("gone"))
    event = sub.wait_wake(first["generation"] + 1, timeout=WAIT)  # no claim call: the timer does it
    assert event["stream"] == name and event["type"] == "wake"
    error(sub.ack_claim(first, True), 409, "FENCED")


def test_heartbeats_keep_the_claim(server, http):
    prefix = uniq("beat")
    sub = Sub(server, http, f"{prefix}/*", lease_ttl_ms=1000)
    name = f"{prefix}/a"
    create(http, server.url(name))
    append(http, server.url(name), record(name, 0))
    sub.wait_wake(1)
    claim = claimed(sub.claim("steady"))
    started = time.monotonic()
    competitor = []
    while time.monotonic() - started < 3.0:  # three lease lengths
        time.sleep(0.4)
        r = sub.ack_claim(claim, False, acks=[])
        assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
        competitor.append(sub.claim("eager"))
    assert competitor
    for r in competitor:
        lost = error(r, 409, "ALREADY_CLAIMED")
        assert lost["current_holder"] == "steady" and lost["generation"] == claim["generation"]
    r = sub.ack_claim(claim, True)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    assert [e["generation"] for e in sub.wakes()] == [claim["generation"]]  # no other wake meanwhile
    error(sub.claim("eager"), 409, "NO_PENDING_WORK")


# ---------------------------------------------------------------- next_wake

def test_next_wake_when_data_arrived_during_the_claim(server, http):
    prefix = uniq("next")
    sub = Sub(server, http, f"{prefix}/*", lease_ttl_ms=30_000)
    a, b = f"{prefix}/a", f"{prefix}/b"
    create(http, server.url(a))
    create(http, server.url(b))
    first_tail = append(http, server.url(a), record(a, 0))
    sub.wait_wake(1)
    claim = claimed(sub.claim("w"))
    assert [s["path"] for s in claim["streams"] if s["has_pending"]] == [a]
    later_a = append(http, server.url(a), record(a, 1))  # after the claim's snapshot
    later_b = append(http, server.url(b), record(b, 0))
    time.sleep(0.3)
    assert [e["generation"] for e in sub.wakes()] == [1]  # busy: no wake while claimed
    r = sub.ack_claim(claim, True)  # acks the snapshot's tail only
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": True}, r.text
    assert sub.acked() == {a: first_tail, b: "-1"}
    event = sub.wait_wake(2)
    assert event["type"] == "wake" and event["stream"] in (a, b)
    again = claimed(sub.claim("w"))
    assert again["generation"] == 2
    pending = {s["path"]: (s["acked_offset"], s["tail_offset"]) for s in again["streams"] if s["has_pending"]}
    assert pending == {a: (first_tail, later_a), b: ("-1", later_b)}
    r = sub.ack_claim(again, True)
    assert r.status_code == 200 and r.json() == {"ok": True, "next_wake": False}, r.text
    assert sub.acked() == {a: later_a, b: later_b}
    error(sub.claim("w"), 409, "NO_PENDING_WORK")
