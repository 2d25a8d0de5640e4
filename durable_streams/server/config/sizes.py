"""Byte sizes as Caddy reads them (go-humanize's ParseBytes): `10MB`, `10MiB`, `1048576`."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*([0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """go-humanize's ParseBytes: `10MB` = 10_000_000, `10MiB` = 10_485_760."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax')
    unit = m.group(2).lower()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unhandled size name: {unit}")
    return int(float(m.group(1).replace(",", "")) * _SIZE_UNITS[unit])
