"""Fixtures for the ACME tests: a Pebble factory (a real ACME CA on loopback; failure under
CI, skip elsewhere, when it cannot start) and tiny challenge servers that serve a
ChallengeBoard the way the listeners will: HTTP-01 over HTTP, TLS-ALPN-01 by SNI."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from challenge_servers import HTTP01Server, TLSALPNServer  # noqa: E402
from pebble_ca import Pebble, PebbleUnavailable, start_pebble  # noqa: E402

from durable_streams.server.runtime.tls.challenges import ChallengeBoard  # noqa: E402


@pytest.fixture
def pebble_factory() -> Iterator[Callable[..., Pebble]]:
    """`pebble_factory(http_port=..., tls_port=..., **options)` starts a Pebble (see
    pebble_ca.start_pebble); every one started is stopped after the test."""
    started: list[Pebble] = []

    def start(**options) -> Pebble:
        try:
            pebble = start_pebble(**options)
        except PebbleUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"Pebble is required in CI: {exc}")
            pytest.skip(f"Pebble unavailable: {exc}")
        started.append(pebble)
        return pebble

    yield start
    for pebble in started:
        pebble.stop()


@pytest.fixture
def board() -> ChallengeBoard:
    return ChallengeBoard()


@pytest.fixture
def http01_server(board: ChallengeBoard) -> Iterator[HTTP01Server]:
    server = HTTP01Server(board)
    yield server
    server.close()


@pytest.fixture
def tls_alpn_server(board: ChallengeBoard) -> Iterator[TLSALPNServer]:
    server = TLSALPNServer(board)
    yield server
    server.close()
