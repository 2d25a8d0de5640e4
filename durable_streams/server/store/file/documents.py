"""The file store's documents (store/base.py): one file per document under
`data_dir/documents/<kind>/`, replaced atomically.

A write goes to a temporary file that is fsynced, renamed over the old one, and the
directory is fsynced: after a crash the document is the old version or the new one,
never a mix. File names are a hash of the document's name (any string is a valid name;
the name is in the file's first line), so no name can climb out of the directory.
Writes are rare next to appends (one per subscription state change), so they bypass the
group-commit log; they run in a thread and never block the event loop."""

from __future__ import annotations

import hashlib
import json
import os

from ..base import Document
from .fsutil import fsync_dir

DIRECTORY = "documents"
_SUFFIX = ".doc"


class DocumentFiles:
    """Documents of one data_dir. The caller serialises writes to one document (the
    layer that owns it decides its changes one at a time); the data_dir's lock keeps
    other processes out."""

    def __init__(self, data_dir: str) -> None:
        self.root = os.path.join(data_dir, DIRECTORY)

    def _dir(self, kind: str) -> str:
        if not kind.isidentifier():
            raise ValueError(f"document kind must be an identifier, got {kind!r}")
        return os.path.join(self.root, kind)

    @staticmethod
    def _file_name(name: str) -> str:
        return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40] + _SUFFIX

    def load(self, kind: str) -> dict[str, Document]:
        directory = self._dir(kind)
        found: dict[str, Document] = {}
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            return found
        for entry in entries:
            full = os.path.join(directory, entry)
            if not entry.endswith(_SUFFIX):
                if entry.endswith(".tmp"):
                    os.unlink(full)  # a write that a crash cut short: the old file stands
                continue
            with open(full, "rb") as f:
                raw = f.read()
            header, _, body = raw.partition(b"\n")
            version, _, name = header.partition(b" ")
            found[json.loads(name)] = Document(body, int(version))
        return found

    def put(self, kind: str, name: str, body: bytes, replaces: int) -> int:
        directory = self._dir(kind)
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            fsync_dir(self.root)
            fsync_dir(os.path.dirname(self.root))
        version = replaces + 1
        final = os.path.join(directory, self._file_name(name))
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:  # a header line "<version> <name as JSON>", then the body
            f.write(f"{version} {json.dumps(name)}\n".encode() + body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(directory)
        return version

    def delete(self, kind: str, name: str) -> None:
        directory = self._dir(kind)
        try:
            os.unlink(os.path.join(directory, self._file_name(name)))
        except FileNotFoundError:
            return
        fsync_dir(directory)
