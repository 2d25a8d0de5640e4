"""Server-Sent Events framing. `event: data` carries a batch: text as-is (one `data:`
line per payload line, split on CR, LF and CRLF so payload can never inject fields),
a JSON array for JSON streams, standard base64 for everything else. `event: control`
carries the flat JSON position record."""

from __future__ import annotations

import base64
import json
import re

from ..engine.framing import Framing, json_array

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_BASE64_LINE = 8192  # characters per data: line (a multiple of 4)


def needs_base64(framing: Framing) -> bool:
    return framing is Framing.BYTES


def data_event(framing: Framing, data: bytes) -> bytes:
    if framing is Framing.JSON:
        lines = [json_array(data)]
    elif framing is Framing.TEXT:
        lines = _LINE_BREAK.split(data)
    else:
        encoded = base64.b64encode(data)
        lines = [encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)] or [b""]
    return b"event: data\n" + b"".join(b"data:" + line + b"\n" for line in lines) + b"\n"


# json.dumps with its own separators builds an encoder per call; one event goes to every
# SSE reader per append, so the encoder is made once.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


def control_event(fields: dict) -> bytes:
    payload = _COMPACT_JSON.encode(fields).encode()
    return b"event: control\ndata:" + payload + b"\n\n"
