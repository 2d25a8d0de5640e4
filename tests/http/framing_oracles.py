"""The three framings of a byte stream compared by the framing fuzz (test_framing_fuzz.py):
our RequestFramer, raw llhttp (httptools, none of our rules) and h11, each reduced to an
Outcome: the requests framed (method, target, body) and how the stream ended."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import h11
import httptools

from durable_streams.server.http.framer import Head, ParseError, RequestFramer

IDLE, PARTIAL, ERROR, CLOSE = "idle", "partial", "error", "close"


@dataclass
class Outcome:
    requests: list[tuple[bytes, bytes, bytes]]  # (method, target, body), complete requests only
    end: str  # IDLE: every byte used, between requests; PARTIAL: waits for more; ERROR; CLOSE
    detail: str = ""  # the error (ours: "status reason")
    status: int = 0  # ours: the error's status
    heads: list[dict] = field(default_factory=list)  # llhttp: every head parsed, for the reasons

    def key(self) -> tuple:
        return (self.requests, self.end)


# ---------------------------------------------------------------- ours


class _Sink:
    def __init__(self) -> None:
        self.requests: list[list] = []  # [method, target, body, keep_alive, complete]

    def on_head(self, head: Head) -> None:
        self.requests.append([head.method.encode(), head.target.encode("utf-8", "surrogateescape"), b"",
                              head.keep_alive, False])

    def on_body(self, data: bytes) -> None:
        self.requests[-1][2] += data

    def on_body_end(self) -> None:
        self.requests[-1][4] = True


def ours(data: bytes, splits: int = 0, rng: random.Random | None = None) -> Outcome:
    """Our framer, fed as the connection feeds it (in one piece, or cut at `splits`
    random points), up to the first error or the first request that ends the connection
    (keep_alive false: the connection answers it and closes, reading nothing more)."""
    sink = _Sink()
    framer = RequestFramer(sink)
    cuts = sorted(rng.sample(range(1, len(data)), min(splits, max(0, len(data) - 1)))) if splits and rng else []
    error: ParseError | None = None
    start = 0
    for cut in cuts + [len(data)]:
        try:
            framer.feed(data[start:cut])
        except ParseError as exc:
            error = exc
            break
        start = cut
        if framer.stopped:
            break
    done = []
    for method, target, body, keep_alive, complete in sink.requests:
        if not complete:
            break
        done.append((method, target, body))
        if not keep_alive:
            return Outcome(done, CLOSE)
    if error is not None:
        return Outcome(done, ERROR, f"{error.status} {error.reason}", error.status)
    if framer.stopped:  # after an upgrade request (whose keep_alive is false: it returned above)
        return Outcome(done, CLOSE)
    return Outcome(done, PARTIAL if framer.in_head or len(done) < len(sink.requests) else IDLE)


# ---------------------------------------------------------------- raw llhttp


class _Llhttp:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.heads: list[dict] = []
        self.done: list[tuple[bytes, bytes, bytes]] = []
        self.in_message = False
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.closed = False

    def on_message_begin(self) -> None:
        self.in_message = True
        self.url, self.fields, self.body = b"", [], b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))  # trailer fields too: dropped at the next head

    def on_headers_complete(self) -> None:
        p = self.parser
        self.heads.append({"method": p.get_method(), "url": self.url, "version": p.get_http_version(),
                           "fields": self.fields, "keep_alive": p.should_keep_alive(),
                           "upgrade": p.should_upgrade()})
        self.fields = []

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.in_message = False
        head = self.heads[-1]
        self.done.append((head["method"], head["url"], self.body))
        if not head["keep_alive"] or head["upgrade"]:  # the server answers it, then closes
            self.closed = True


def llhttp(data: bytes) -> Outcome:
    """llhttp as httptools gives it (strict: no leniency flags), without our rules."""
    parser = _Llhttp()
    try:
        parser.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return Outcome(parser.done, CLOSE, heads=parser.heads)
    except httptools.HttpParserError as exc:
        if parser.closed:  # "Data after `Connection: close`": never read by a server
            return Outcome(parser.done, CLOSE, heads=parser.heads)
        return Outcome(parser.done, ERROR, str(exc), heads=parser.heads)
    if parser.closed:
        return Outcome(parser.done, CLOSE, heads=parser.heads)
    return Outcome(parser.done, PARTIAL if parser.in_message else IDLE, heads=parser.heads)


# ---------------------------------------------------------------- h11


def h11_server(data: bytes) -> Outcome:
    """h11 as a server: each complete request is answered as ours would answer it (204,
    or 405 to CONNECT: a 2xx would switch protocols), so that the next one is read. A
    request asking for an upgrade is thereby refused, and h11 reads on after it."""
    conn = h11.Connection(h11.SERVER)
    if data:  # b"" would mean the end of the stream
        conn.receive_data(data)
    done: list[tuple[bytes, bytes, bytes]] = []
    request: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:  # PAUSED: never, each request is answered
                break
            if isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                done.append((bytes(request.method), bytes(request.target), body))
                if request.method == b"CONNECT":
                    conn.send(h11.Response(status_code=405, headers=[(b"Content-Length", b"0")]))
                else:
                    conn.send(h11.Response(status_code=204, headers=[]))
                conn.send(h11.EndOfMessage())
                if conn.their_state is h11.MUST_CLOSE or conn.our_state is h11.MUST_CLOSE:
                    return Outcome(done, CLOSE)
                conn.start_next_cycle()
                request = None
    except h11.RemoteProtocolError as exc:
        return Outcome(done, ERROR, str(exc))
    pending = request is not None or conn.trailing_data[0] != b""
    return Outcome(done, PARTIAL if pending else IDLE)
