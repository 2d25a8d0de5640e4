"""The checkpoint interval knob the HTTP crash test relies on ($DURABLE_STREAMS_CHECKPOINT_BYTES)."""

from __future__ import annotations

import pytest

from durable_streams.server.store.file.store import (
    CHECKPOINT_BYTES_ENV, DEFAULT_CHECKPOINT_BYTES, FileStore,
)


def test_interval_comes_from_the_environment_unless_given(monkeypatch, tmp_path):
    monkeypatch.delenv(CHECKPOINT_BYTES_ENV, raising=False)
    assert FileStore(str(tmp_path)).checkpoint_bytes == DEFAULT_CHECKPOINT_BYTES
    monkeypatch.setenv(CHECKPOINT_BYTES_ENV, "131072")
    assert FileStore(str(tmp_path)).checkpoint_bytes == 131072
    assert FileStore(str(tmp_path), checkpoint_bytes=4096).checkpoint_bytes == 4096


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1e6", " 64", "٣"])
def test_bad_interval_is_refused_with_its_name(monkeypatch, tmp_path, raw):
    monkeypatch.setenv(CHECKPOINT_BYTES_ENV, raw)
    with pytest.raises(ValueError, match=CHECKPOINT_BYTES_ENV):
        FileStore(str(tmp_path))
