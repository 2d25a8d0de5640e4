"""`{$VAR}` / `{$VAR:default}` substitution on raw Caddyfile text, done before lexing.

Caddy replaces these spans textually (inside quotes and comments too), once, left to
right: a substituted value is never scanned again, so values cannot chain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

_OPEN = "{$"
_CLOSE = "}"


def substitute_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Return `text` with every `{$NAME}` / `{$NAME:default}` span replaced.

    - the default is everything after the first ':' and applies only when NAME is unset
      (a variable set to "" stays empty);
    - an unset variable without default becomes "";
    - `{$}` (no name) is left as is; an unclosed `{$` ends the scan.
    """
    if _OPEN not in text:
        return text
    lookup = os.environ if env is None else env
    out: list[str] = []
    pos = 0  # start of the not-yet-copied input
    while True:
        begin = text.find(_OPEN, pos)
        if begin < 0:
            break
        end = text.find(_CLOSE, begin + len(_OPEN))
        if end < 0:
            break
        spec = text[begin + len(_OPEN) : end]
        if not spec:
            # `{$}` stays literal; keep scanning after it
            out.append(text[pos : end + 1])
            pos = end + 1
            continue
        name, has_default, default = spec.partition(":")
        value = lookup.get(name)
        if value is None:
            value = default if has_default else ""
        out.append(text[pos:begin])
        out.append(value)
        pos = end + 1
    out.append(text[pos:])
    return "".join(out)
