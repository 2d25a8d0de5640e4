"""A seeded generator of HTTP/1.1 request byte streams for the framing differential fuzz
(test_framing_fuzz.py).

Each case starts from valid requests (a few methods, no body, Content-Length or chunked
bodies with extensions and trailers, pipelined, keep-alive or close) and gets mutations
that matter for framing and request smuggling: structural ones on the requests (Content-
Length and Transfer-Encoding variants, chunk and trailer grammar, header names, request
lines) and then byte-level ones on the whole stream (a bare CR, bare LF or NUL, a byte
deleted, inserted or a run duplicated). `case(seed, index)` depends on nothing else, so
every case can be rebuilt alone from its id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

METHODS = ["GET", "GET", "POST", "POST", "PUT", "HEAD", "DELETE"]
TARGETS = ["/", "/stream/a", "/s?offset=-1&live=long-poll", "/a%20b", "/x/y/z?q=1"]
BODIES = [b"hello", b"", b"x" * 17, b"a\r\nb", b"0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", b"\x00\xff;:"]

# Transfer-Encoding values: exact, case, whitespace, lists, other codings, look-alikes.
TE_VALUES = [
    b"chunked", b"Chunked", b"CHUNKED", b" chunked", b"chunked ", b"\tchunked\t", b"chunked,", b",chunked",
    b"chunked, identity", b"identity, chunked", b"gzip, chunked", b"chunked, chunked", b"identity",
    b"chunked;q=1", b"chunk", b"chunkedx", b"\"chunked\"", b"chunked\x0b", b"chunked\x0c",
    "chunked\u00a0".encode(), "\u3000chunked".encode(), "chun\u212aed".encode(),  # NBSP, ideographic space, Kelvin
    "chunk\u0435d".encode(), "\uff43hunked".encode(),  # Cyrillic e, fullwidth c
    b"chunked\xa0", b"\xffchunked",  # latin-1
]
CL_VALUES = [b"5", b"05", b"+5", b"-5", b" 5", b"5 ", b"5, 5", b"5,5", b"0x5", b"5.0", b"1e1", b"",
             b"99999999999999999999999", b"18446744073709551621", b"\xd9\xa5"]  # last: Arabic-Indic five
CHUNK_SIZES = [b" %x", b"%x ", b"\t%x", b"0%x", b"00000000000000000000%x", b"0x%x", b"-%x", b"+%x", b"%X",
               b"%x\x00", b"ffffffffffffffff%x", b"10000000000000000", b"%x%x"]
CHUNK_EXTS = [b";", b";a", b";a=b", b"; a=b", b" ;a=b", b";a=\"q d\"", b";a=\"unterminated", b";a=b;c",
              b";a\rb", b";a\nb", b";a\x00", b";\xc3\xa9", b";a=\"\\\"\"", b";=b", b";a =b", b"\t;a"]
BAD_TRAILERS = [b"not a header", b"X : y", b": y", b"X: a\x00b", b"X: a\rb", b"X: a\r\n b", b" X: y",
                b"X:\xc3\xa9", b"X", b"Content-Length: 5", b"Transfer-Encoding: chunked", b"X-\xff: y",
                b"X: a\nb", b"X:\r"]
NAME_TRICKS = [b"%s : %s", b"%s\t: %s", b" %s: %s", b"%s:%s", b"%s:\t%s\t", b"%s :%s", b"%s\x00: %s",
               b"X-%s: %s", b"%s-: %s", b"%s\r: %s", b"%s\x0b: %s"]
VERSIONS = [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1.", b"HTTP/11",
            b"HTTP/1.1\t", b"HTTP/3", b"HTTP /1.1", b""]
ODD_TARGETS = [b"http://b.example/x", b"https://b.example:443/", b"http://u@b.example/", b"*", b"b.example:443",
               b"/a b", b"/a\tb", b"/\xc3\xa9", b"/a#frag", b"//x", b"/a\x7fb", b"http://b.example", b"?q"]
INTERESTING = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b";", b",", b"0", b"a", b"\x80", b"\xff", b"\r\n", b"\x0b"]


@dataclass
class Req:
    method: bytes = b"GET"
    target: bytes = b"/"
    version: bytes = b"HTTP/1.1"
    sep: bytes = b" "  # between the parts of the request line
    headers: list[bytes] = field(default_factory=list)  # whole lines, without CRLF
    body: bytes = b""  # what follows the head, already framed (CL bytes or chunks)
    eol: bytes = b"\r\n"

    def encode(self) -> bytes:
        line = self.method + self.sep + self.target + (self.sep + self.version if self.version else b"")
        return self.eol.join([line, *self.headers, b""]) + self.eol + self.body


def chunk_body(pieces: list[bytes], exts: list[bytes] | None = None, trailers: tuple[bytes, ...] | list[bytes] = (),
               sizes: list[bytes] | None = None, last: bytes = b"0") -> bytes:
    out = []
    for i, piece in enumerate(pieces):
        size = sizes[i] if sizes else b"%x" % len(piece)
        out.append(size + (exts[i] if exts else b"") + b"\r\n" + piece + b"\r\n")
    out.append(last + b"\r\n" + b"".join(t + b"\r\n" for t in trailers) + b"\r\n")
    return b"".join(out)


def _pieces(rng: random.Random) -> list[bytes]:
    body = rng.choice(BODIES) + rng.choice([b"", b"abc", b"0123456789abcdef" * rng.randint(1, 3)])
    cuts = sorted(rng.sample(range(len(body) + 1), min(len(body) + 1, rng.randint(0, 3))))
    pieces, start = [], 0
    for cut in cuts + [len(body)]:
        pieces.append(body[start:cut])
        start = cut
    return [p for p in pieces if p]


def valid_request(rng: random.Random) -> tuple[Req, str]:
    method = rng.choice(METHODS).encode()
    req = Req(method=method, target=rng.choice(TARGETS).encode(), headers=[b"Host: test"])
    if rng.random() < 0.3:
        req.headers.append(rng.choice([b"User-Agent: fuzz/1", b"Accept: */*", b"X-Empty:", b"X-Sp:  a  b  "]))
    kind = "none" if method in (b"GET", b"HEAD", b"DELETE") and rng.random() < 0.7 else rng.choice(["cl", "chunked"])
    if kind == "cl":
        body = rng.choice(BODIES)
        req.headers.append(b"Content-Length: %d" % len(body))
        req.body = body
    elif kind == "chunked":
        pieces = _pieces(rng)
        exts = [rng.choice([b"", b"", b";a=b", b";name=\"v\"", b";x"]) for _ in pieces]
        trailers = rng.choice([[], [], [b"X-Trailer: t"], [b"A: 1", b"B: 2"]])
        req.headers.append(b"Transfer-Encoding: chunked")
        req.body = chunk_body(pieces, exts, trailers)
    if rng.random() < 0.15:
        req.headers.append(rng.choice([b"Connection: keep-alive", b"Expect: 100-continue", b"Connection: close"]))
    if rng.random() < 0.3:
        rng.shuffle(req.headers)
    return req, kind


# ---------------------------------------------------------------- structural mutations


def _set_header(req: Req, name: bytes, line: bytes) -> None:
    """Replace the first line of header `name` (or add one)."""
    for i, existing in enumerate(req.headers):
        if existing.lower().startswith(name.lower() + b":"):
            req.headers[i] = line
            return
    req.headers.append(line)


def m_content_length(rng, req, kind):
    body = req.body if kind == "cl" else rng.choice(BODIES)
    n = len(body)
    choice = rng.randrange(6)
    if choice == 0:  # duplicate, same or conflicting value
        req.headers = [h for h in req.headers if not h.lower().startswith(b"content-length")]
        req.headers += [b"Content-Length: %d" % n, b"Content-Length: %d" % rng.choice([n, n + 1, 0])]
    elif choice == 1:
        value = rng.choice(CL_VALUES)
        _set_header(req, b"Content-Length", b"Content-Length: " + value)
    elif choice == 2:  # CL and TE together, either order
        lines = [b"Content-Length: %d" % rng.choice([n, 0, 5]), b"Transfer-Encoding: chunked"]
        rng.shuffle(lines)
        req.headers = [h for h in req.headers if not h.lower().startswith((b"content-length", b"transfer-encoding"))]
        req.headers += lines
        req.body = chunk_body([body] if body else []) if rng.random() < 0.7 else body
    elif choice == 3:  # a Content-Length shorter or longer than the body
        _set_header(req, b"Content-Length", b"Content-Length: %d" % max(0, n + rng.choice([-3, -1, 1, 4])))
        req.body = body
    elif choice == 4:
        _set_header(req, b"Content-Length", b"Content-Length: " + rng.choice([b"%d" % n, b"0"]) + rng.choice(
            [b"\r\n\tx", b"\r\n 1", b"\x00", b"\r", b" ,", b", "]))
        req.body = body
    else:  # CL in HTTP/1.0
        req.version = b"HTTP/1.0"
        _set_header(req, b"Content-Length", b"Content-Length: %d" % n)
        req.body = body
    return "content-length"


def m_transfer_encoding(rng, req, kind):
    pieces = _pieces(rng)
    if kind != "chunked" or rng.random() < 0.3:
        req.body = chunk_body(pieces)
    req.headers = [h for h in req.headers if not h.lower().startswith((b"content-length", b"transfer-encoding"))]
    choice = rng.randrange(6)
    if choice <= 1:
        req.headers.append(b"Transfer-Encoding: " + rng.choice(TE_VALUES))
    elif choice == 2:  # two lines
        req.headers += [b"Transfer-Encoding: " + rng.choice(TE_VALUES[:4] + [b"identity", b"gzip"]),
                        b"Transfer-Encoding: " + rng.choice(TE_VALUES[:4] + [b"identity"])]
    elif choice == 3:  # obs-fold
        req.headers.append(rng.choice([b"Transfer-Encoding:\r\n chunked", b"Transfer-Encoding: chunked\r\n ,identity",
                                       b"Transfer-Encoding: identity\r\n\tchunked",
                                       b"X: y\r\n Transfer-Encoding: chunked"]))
    elif choice == 4:  # the name mangled
        name = rng.choice([b"Transfer-Encoding", b"transfer-encoding", b"TRANSFER-ENCODING", b"Transfer_Encoding",
                           b"Transfer-Encodin", b"Transfer-Encoding\xc2\xa0"])
        req.headers.append(rng.choice(NAME_TRICKS) % (name, b"chunked") if rng.random() < 0.5
                           else name + b": chunked")
    else:  # in HTTP/1.0, or with a Content-Length body behind
        req.headers.append(b"Transfer-Encoding: chunked")
        if rng.random() < 0.5:
            req.version = b"HTTP/1.0"
        else:
            req.body = rng.choice(BODIES)
    return "transfer-encoding"


def m_chunks(rng, req, kind):
    pieces = _pieces(rng) or [b"hello"]
    if kind != "chunked":
        req.headers = [h for h in req.headers if not h.lower().startswith((b"content-length", b"transfer-encoding"))]
        req.headers.append(b"Transfer-Encoding: chunked")
    choice = rng.randrange(7)
    i = rng.randrange(len(pieces))
    if choice == 0:  # chunk-size oddities
        sizes = [b"%x" % len(p) for p in pieces]
        fmt = rng.choice(CHUNK_SIZES)
        sizes[i] = fmt % ((len(pieces[i]),) * fmt.count(b"%")) if b"%" in fmt else fmt
        req.body = chunk_body(pieces, sizes=sizes)
    elif choice == 1:  # chunk extensions
        exts = [b""] * len(pieces)
        exts[i] = rng.choice(CHUNK_EXTS)
        req.body = chunk_body(pieces, exts)
    elif choice == 2:  # malformed trailers
        req.body = chunk_body(pieces, trailers=[rng.choice(BAD_TRAILERS)])
    elif choice == 3:  # the last chunk
        req.body = chunk_body(pieces, last=rng.choice([b"00", b"0;a=b", b"0 ", b"000000000000000000000", b" 0", b"0x0",
                                                       b"0\r\n", b"-0", b"0;a\rb", b"0\x00"]))
    elif choice == 4:  # data not matching its size, or its CRLF missing or wrong
        body = chunk_body(pieces)
        first = b"%x\r\n" % len(pieces[0])
        rest = body[len(first) + len(pieces[0]):]
        req.body = first + pieces[0] + rng.choice([b"", b"X", b"\n", b"\r", b"\n\r", b" \r\n"]) + rest[2:]
    elif choice == 5:  # a huge size: the rest is body
        req.body = rng.choice([b"ffffffff", b"7fffffffffffffff", b"8000000000000000", b"ffffffffffffffff"]) + b"\r\n" \
                   + chunk_body(pieces)
    else:  # the trailer section ended wrongly, or a request in it
        req.body = chunk_body(pieces)[:-2] + rng.choice([b"\n", b"\r", b"\rGET /x HTTP/1.1\r\n\r\n", b" \r\n", b""])
    return "chunks"


def m_header_names(rng, req, kind):
    victims = [i for i, h in enumerate(req.headers) if b":" in h]
    i = rng.choice(victims) if victims else None
    choice = rng.randrange(4)
    if choice <= 1 and i is not None:
        name, _, value = req.headers[i].partition(b":")
        req.headers[i] = rng.choice(NAME_TRICKS) % (name, value.strip())
    elif choice == 2:
        req.headers.insert(rng.randrange(len(req.headers) + 1), rng.choice(
            [b"No-Colon", b": novalue", b"Bad Name: v", b"X\xc3\xa9: v", b"X: \xc3\xa9", b"X: a\x00b", b"X: a\x7fb",
             b"X:", b" leading: space", b"X: a\rb", b"@: v", b"X-\x01: v"]))
    else:  # Host: none, two, empty, with odd bytes
        req.headers = [h for h in req.headers if not h.lower().startswith(b"host:")]
        req.headers += rng.choice([[], [b"Host: a", b"Host: b"], [b"Host:"], [b"Host: a b"], [b"Host: a", b"Host: a"],
                                   [b"Host: a\xc3\xa9"], [b"host: a"]])
    return "header-names"


def m_request_line(rng, req, kind):
    choice = rng.randrange(6)
    if choice == 0:
        req.version = rng.choice(VERSIONS)
    elif choice == 1:
        req.sep = rng.choice([b"  ", b"\t", b" \t", b"\x0b", b"\r"])
    elif choice == 2:
        req.target = rng.choice(ODD_TARGETS)
        if req.target == b"*" and rng.random() < 0.6:
            req.method = b"OPTIONS"
        elif req.target == b"b.example:443" and rng.random() < 0.6:
            req.method = b"CONNECT"
    elif choice == 3:
        req.method = rng.choice([b"get", b"FOO", b"CONNECT", b"OPTIONS", b"PRI", b"G\xc3\xa9T", b"GE T", b"PATCH",
                                 b"TRACE", b"M-SEARCH", b"PROPFIND", b"SOURCE", b"QUERY"])
    elif choice == 4:  # HTTP/1.0, with or without keep-alive
        req.version = b"HTTP/1.0"
        req.headers = [h for h in req.headers if not h.lower().startswith(b"host:")] if rng.random() < 0.5 \
            else req.headers
        if rng.random() < 0.6:
            req.headers.append(b"Connection: keep-alive")
    else:  # the line ending
        req.eol = rng.choice([b"\n", b"\r\r\n", b"\n\r"]) if rng.random() < 0.3 else req.eol
        if req.eol == b"\r\n":
            req.method = rng.choice([b"\r\n", b"\n", b"\r\n\r\n"]) + req.method  # empty lines before a request
    return "request-line"


def m_connection(rng, req, kind):
    req.headers.append(b"Connection: " + rng.choice(
        [b"close", b"keep-alive", b"Close", b"close, keep-alive", b"keep-alive, close", b"upgrade", b"clos\xc3\xa9",
         b"close\x0b", b" close ", b"te, close", b"Upgrade\r\nUpgrade: websocket", b"keep-alive\r\nConnection: close"]))
    return "connection"


STRUCTURAL = [(m_content_length, 3), (m_transfer_encoding, 4), (m_chunks, 4), (m_header_names, 2),
              (m_request_line, 2), (m_connection, 1)]


# ---------------------------------------------------------------- byte-level mutations


def _position(rng: random.Random, data: bytes) -> int:
    """A random position, often at a line boundary, a separator or inside the first head."""
    r = rng.random()
    if r < 0.4:
        marks = [i for i in range(len(data)) if data[i:i + 1] in (b"\r", b"\n", b":", b" ", b";")]
        if marks:
            return rng.choice(marks) + rng.choice([0, 0, 1])
    return rng.randrange(len(data) + 1)


def b_insert(rng, data):
    pos = _position(rng, data)
    return data[:pos] + rng.choice(INTERESTING) + data[pos:], "insert"


def b_delete(rng, data):
    if not data:
        return data, "delete"
    pos = min(_position(rng, data), len(data) - 1)
    return data[:pos] + data[pos + rng.choice([1, 1, 1, 2]):], "delete"


def b_duplicate(rng, data):
    start = _position(rng, data)
    end = min(len(data), start + rng.randint(1, 40))
    return data[:end] + data[start:end] + data[end:], "duplicate"


def b_line_ending(rng, data):
    """One CRLF becomes a bare LF, a bare CR, CR CR LF or LF CR."""
    ends = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
    if not ends:
        return data, "line-ending"
    pos = rng.choice(ends)
    return data[:pos] + rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\x00\n"]) + data[pos + 2:], "line-ending"


def b_truncate(rng, data):
    return data[:rng.randrange(len(data) + 1)], "truncate"


BYTE_LEVEL = [(b_insert, 3), (b_delete, 2), (b_duplicate, 1), (b_line_ending, 3), (b_truncate, 1)]


def _pick(rng, table):
    return rng.choices([f for f, _ in table], weights=[w for _, w in table])[0]


@dataclass
class Case:
    id: str
    data: bytes
    tags: tuple[str, ...]


def case(seed: int, index: int) -> Case:
    rng = random.Random(f"framing-fuzz:{seed}:{index}")
    n = rng.choices([1, 2, 3], weights=[3, 5, 2])[0]
    reqs = [valid_request(rng) for _ in range(n)]
    tags: list[str] = []
    # structural mutations (none in about one case in six): on any request of the stream
    for _ in range(rng.choices([0, 1, 2], weights=[1, 4, 1])[0]):
        req, kind = rng.choice(reqs)
        tags.append(_pick(rng, STRUCTURAL)(rng, req, kind))
    if rng.random() < 0.2:  # the stream ends with a request asking to close
        reqs[-1][0].headers.append(b"Connection: close")
    data = b"".join(req.encode() for req, _ in reqs)
    # byte-level mutations: none in about half the cases
    for _ in range(rng.choices([0, 1, 2], weights=[5, 4, 1])[0]):
        data, tag = _pick(rng, BYTE_LEVEL)(rng, data)
        tags.append(tag)
    return Case(f"{seed}:{index}", data, tuple(tags) or ("valid",))


def cases(seed: int, count: int) -> list[Case]:
    return [case(seed, i) for i in range(count)]
