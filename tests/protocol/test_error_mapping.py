"""Engine and store errors map to statuses by class, subclasses included: a new kind of
refusal gets its parent's status, never a 500."""

from __future__ import annotations

import pytest

from durable_streams.server.engine import errors as engine
from durable_streams.server.protocol.errors import from_engine, from_store
from durable_streams.server.store.base import StoreError, StoreFull


class NewConflict(engine.Conflict):
    pass


class NewNotFound(engine.StreamNotFound):
    pass


@pytest.mark.parametrize(("error", "status"), [
    (engine.InvalidRequest("x"), 400),
    (engine.StreamNotFound("x"), 404),
    (NewNotFound("x"), 404),
    (engine.StreamGone("x"), 410),
    (engine.Conflict("x"), 409),
    (NewConflict("x"), 409),
    (engine.ShuttingDown("x"), 503),
    (engine.StaleProducerEpoch(3), 403),
    (engine.ProducerSeqGap(2, 5), 409),
    (engine.StreamClosed("closed", 7), 409),
])
def test_engine_errors_by_class(error, status):
    assert from_engine(error).status == status


def test_store_errors_by_class():
    class DiskGone(StoreError):
        pass

    assert from_store(StoreFull("full")).status == 507
    assert from_store(StoreError("io")).status == 503
    assert from_store(StoreError("io")).headers["Retry-After"] == "1"
    assert from_store(DiskGone("io")).status == 503
    assert "retry" in from_store(StoreError("io")).reason
