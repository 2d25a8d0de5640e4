"""Checks run with the official `durable-streams` client from PyPI, in the separate client
venv (see conftest.py). Not collected by pytest: run as
`python official_client_checks.py CHECK BASE_URL [ARGS...]`, or `... coexistence -` to start our
server from the installed wheel inside the same interpreter. Exit status 0 = passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import sys
import threading
import uuid

from durable_streams import (
    AsyncDurableStream,
    DurableStream,
    DurableStreamError,
    SeqConflictError,
    StreamExistsError,
    StreamNotFoundError,
    astream,
    stream,
)


def fresh(base_url: str, name: str) -> str:
    return f"{base_url}/client/{name}-{uuid.uuid4().hex[:8]}"


def check_create_append_read(base_url: str) -> None:
    url = fresh(base_url, "json")
    with DurableStream.create(url, content_type="application/json") as handle:
        handle.append({"a": 1})
        handle.append([1, 2])  # one message that is an array
        handle.append("text")
        head = handle.head()
        assert head.content_type == "application/json", head
    with stream(url, live=False) as res:
        assert res.read_json() == [{"a": 1}, [1, 2], "text"]

    text_url = fresh(base_url, "text")
    with DurableStream.create(text_url, content_type="text/plain", body="hello ") as handle:
        result = handle.append("world")
        with stream(text_url, live=False) as res:
            assert res.read_text() == "hello world"
            assert res.offset == result.next_offset
        # Resume from an offset: only what came after it.
        handle.append("!")
        with stream(text_url, offset=result.next_offset, live=False) as res:
            assert res.read_text() == "!"

    connected = DurableStream.connect(text_url)
    assert connected.content_type == "text/plain"
    connected.delete()
    try:
        DurableStream.connect(text_url)
    except StreamNotFoundError:
        pass
    else:
        raise AssertionError("connect() to a deleted stream must raise StreamNotFoundError")

    try:
        DurableStream.create(url, content_type="text/plain")
    except StreamExistsError:
        pass
    else:
        raise AssertionError("re-creating with another content type must raise StreamExistsError")


def _live_read(url: str, live: str, offset: str) -> None:
    received: queue.Queue = queue.Queue()

    def follow() -> None:
        try:
            with stream(url, live=live, offset=offset) as res:
                for item in res.iter_json():
                    received.put(item)
                    if item == {"n": 2}:
                        return
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            received.put(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    with DurableStream.connect(url) as handle:
        handle.append({"n": 1})
        assert received.get(timeout=20) == {"n": 1}
        handle.append({"n": 2})
        assert received.get(timeout=20) == {"n": 2}
    thread.join(20)
    assert not thread.is_alive()


def check_live_long_poll(base_url: str) -> None:
    url = fresh(base_url, "lp")
    with DurableStream.create(url, content_type="application/json") as handle:
        offset = handle.head().offset
    _live_read(url, "long-poll", offset)


def check_live_sse(base_url: str) -> None:
    url = fresh(base_url, "sse")
    with DurableStream.create(url, content_type="application/json") as handle:
        offset = handle.head().offset
    _live_read(url, "sse", offset)


def check_idempotent_producer(base_url: str) -> None:
    url = fresh(base_url, "producer")
    seq = {"value": 0}
    producer_headers = {
        "Producer-Id": "client-check",
        "Producer-Epoch": "0",
        "Producer-Seq": lambda: str(seq["value"]),
    }
    with DurableStream.create(url, content_type="text/plain", headers=producer_headers, batching=False) as handle:
        handle.append("a")
        seq["value"] = 1
        handle.append("b")
        handle.append("b")  # a retry of seq 1 (say after a timeout): deduplicated
        seq["value"] = 2
        handle.append("c")
    with stream(url, live=False) as res:
        assert res.read_text() == "abc"

    stale = DurableStream(url, content_type="text/plain", batching=False,
                          headers={"Producer-Id": "client-check", "Producer-Epoch": "0", "Producer-Seq": "3"})
    newer = DurableStream(url, content_type="text/plain", batching=False,
                          headers={"Producer-Id": "client-check", "Producer-Epoch": "1", "Producer-Seq": "0"})
    newer.append("d")
    try:
        stale.append("zombie")
    except DurableStreamError as error:
        assert error.status == 403, error
    else:
        raise AssertionError("an append from a fenced epoch must fail")

    with DurableStream.connect(url) as handle:
        handle.append("e", seq="0002")
        try:
            handle.append("f", seq="0001")
        except SeqConflictError:
            pass
        else:
            raise AssertionError("a Stream-Seq regression must raise SeqConflictError")
    with stream(url, live=False) as res:
        assert res.read_text() == "abcde"


def check_async_api(base_url: str) -> None:
    async def main() -> None:
        url = fresh(base_url, "async")
        handle = await AsyncDurableStream.create(url, content_type="application/json")
        try:
            await handle.append({"x": 1})
            await handle.append({"x": 2})
        finally:
            await handle.aclose()
        async with astream(url, live=False) as res:
            assert [item async for item in res.iter_json()] == [{"x": 1}, {"x": 2}]

    asyncio.run(main())


def check_coexistence(_: str) -> None:
    """Both distributions in one environment: our server package and the client package."""
    import durable_streams
    import durable_streams.server
    from durable_streams.server.testing import BlockingDurableStreamTestServer

    assert DurableStream.__module__.startswith("durable_streams.")
    assert durable_streams.server.__version__
    with BlockingDurableStreamTestServer() as server:
        check_create_append_read(server.url)


def check_read_bytes(url: str, length: str, sha256: str) -> None:
    """A catch-up read of a whole binary stream: `stream(url, live=False).read_bytes()`."""
    with stream(url, live=False) as res:
        data = res.read_bytes()
    got = (len(data), hashlib.sha256(data).hexdigest())
    assert got == (int(length), sha256), f"got {got}, expected {(int(length), sha256)}"


def check_read_json(url: str, count: str, sha256: str) -> None:
    """A catch-up read of a whole JSON stream: `stream(url, live=False).read_json()`; the
    hash is of the items rendered compactly (as JSON.stringify does)."""
    with stream(url, live=False) as res:
        items = res.read_json()
    rendered = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    got = (len(items), hashlib.sha256(rendered).hexdigest())
    assert got == (int(count), sha256), f"got {got}, expected {(int(count), sha256)}"


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}

if __name__ == "__main__":
    CHECKS[sys.argv[1]](*sys.argv[2:])
    print("ok")
