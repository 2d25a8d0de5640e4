"""Authentication the Caddy way, over real sockets against the real protocol handler:
`basic_auth` (bcrypt hashes made by the real `caddy hash-password`) and the documented
`@unauthorized not header Authorization "Bearer ..."` + `respond @unauthorized 401`."""

from __future__ import annotations

import base64
import subprocess

import aiohttp
import pytest

from durable_streams.server.caddyfile import CaddyfileError
from durable_streams.server.config import load_config
from durable_streams.server.runtime import auth

from config.oracle import CADDY, caddy_adapt  # tests/ is on sys.path (rootdir packages)
from .helpers import port_of, serve

METHODS = ["PUT", "POST", "GET", "HEAD", "DELETE", "OPTIONS"]
PASSWORD = "correct horse"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def password_hash() -> str:
    # cost 4 keeps the suite quick; the format is exactly what operators paste in
    done = subprocess.run(
        [str(CADDY), "hash-password", "--bcrypt-cost", "4", "--plaintext", PASSWORD],
        capture_output=True, text=True, check=True, timeout=30,
    )
    return done.stdout.strip()


def _basic_auth_site(password_hash: str, head: str = "basic_auth") -> str:
    return (
        ":0 {\n\tbind 127.0.0.1\n"
        f"\t{head} {{\n\t\talice {password_hash}\n\t}}\n"
        "\troute /v1/stream/* {\n\t\tdurable_streams\n\t}\n}\n"
    )


BEARER_SITE = (
    ":0 {\n\tbind 127.0.0.1\n\troute /v1/stream/* {\n"
    '\t\t@unauthorized not header Authorization "Bearer s3cret"\n'
    "\t\trespond @unauthorized 401\n\t\tdurable_streams\n\t}\n}\n"
)

# pattern -> (right Authorization, wrong ones)
WRONG = {
    "basic": [_basic("alice", "nope"), _basic("mallory", PASSWORD), "Bearer s3cret", "Basic !!!", _basic("alice", "")],
    "bearer": ["Bearer wrong", "Bearer s3cret2", "bearer s3cret", _basic("alice", PASSWORD)],
}


def _site(pattern: str, password_hash: str) -> str:
    return _basic_auth_site(password_hash) if pattern == "basic" else BEARER_SITE


def _right(pattern: str) -> str:
    return _basic("alice", PASSWORD) if pattern == "basic" else "Bearer s3cret"


@pytest.mark.asyncio
@pytest.mark.parametrize("pattern", ["basic", "bearer"])
async def test_missing_and_wrong_credentials_get_401_on_every_method(pattern: str, password_hash: str) -> None:
    async with serve(_site(pattern, password_hash), echo=False) as app:
        url = f"http://127.0.0.1:{port_of(app)}/v1/stream/s"
        async with aiohttp.ClientSession() as session:
            for method in METHODS:
                for authorization in [None, *WRONG[pattern]]:
                    headers = {"Authorization": authorization} if authorization else {}
                    async with session.request(method, url, headers=headers, data=b"x" if method in ("PUT", "POST") else None) as r:
                        assert r.status == 401, (method, authorization)
                        if pattern == "basic":
                            assert r.headers["WWW-Authenticate"] == 'Basic realm="restricted"'
            # nothing was created behind the 401s
            async with session.head(url, headers={"Authorization": _right(pattern)}) as r:
                assert r.status == 404


@pytest.mark.asyncio
@pytest.mark.parametrize("pattern", ["basic", "bearer"])
async def test_right_credentials_reach_the_stream_on_every_method(pattern: str, password_hash: str) -> None:
    headers = {"Authorization": _right(pattern)}
    async with serve(_site(pattern, password_hash), echo=False) as app:
        url = f"http://127.0.0.1:{port_of(app)}/v1/stream/s"
        async with aiohttp.ClientSession(headers=headers) as session:
            async with session.put(url, headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 201
            async with session.post(url, data=b"hello", headers={"Content-Type": "text/plain"}) as r:
                assert r.status in (200, 204)
            async with session.get(url, params={"offset": "-1"}) as r:
                assert r.status == 200 and await r.read() == b"hello"
            async with session.head(url) as r:
                assert r.status == 200
            async with session.options(url, headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}) as r:
                assert r.status == 204
            async with session.delete(url) as r:
                assert r.status == 204
            async with session.head(url) as r:
                assert r.status == 404


@pytest.mark.asyncio
async def test_realm_and_deprecated_name(password_hash: str) -> None:
    text = _basic_auth_site(password_hash, head='basicauth bcrypt "Durable Streams"')
    assert any("'basicauth' directive is deprecated" in w for w in load_config(text).warnings)
    async with serve(text, echo=False) as app:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port_of(app)}/v1/stream/s") as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == 'Basic realm="Durable Streams"'


@pytest.mark.asyncio
async def test_base64_wrapped_hash_is_accepted(password_hash: str) -> None:
    # Caddy's older form: the bcrypt hash, base64-encoded once more
    wrapped = base64.b64encode(password_hash.encode()).decode()
    async with serve(_basic_auth_site(wrapped), echo=False) as app:
        async with aiohttp.ClientSession(headers={"Authorization": _basic("alice", PASSWORD)}) as session:
            async with session.put(f"http://127.0.0.1:{port_of(app)}/v1/stream/w") as r:
                assert r.status == 201


@pytest.mark.asyncio
async def test_one_bcrypt_per_credential_and_unknown_users_cost_a_check(password_hash: str, monkeypatch) -> None:
    checked: list[bytes] = []
    real = auth._checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(auth, "_checkpw", counting)
    async with serve(_basic_auth_site(password_hash), echo=False) as app:
        url = f"http://127.0.0.1:{port_of(app)}/v1/stream/c"
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.head(url, headers={"Authorization": _basic("alice", PASSWORD)}) as r:
                    assert r.status == 404  # authenticated; the stream does not exist
            assert checked == [password_hash.encode()]  # verified once, then remembered
            async with session.head(url, headers={"Authorization": _basic("mallory", PASSWORD)}) as r:
                assert r.status == 401
            # the unknown user was checked too, against a fake hash of the same cost
            assert len(checked) == 2 and checked[1] != password_hash.encode()
            assert checked[1][4:7] == password_hash.encode()[4:7]  # same cost: "$2a$04$"
            for _ in range(2):  # failures are never remembered
                async with session.head(url, headers={"Authorization": _basic("alice", "nope")}) as r:
                    assert r.status == 401
            assert len(checked) == 4


def test_credential_cache_keys_do_not_collide_or_expire_late() -> None:
    cache = auth.VerifiedCredentials(ttl=-1)
    assert auth.VerifiedCredentials.key(b"ab", b"c") != auth.VerifiedCredentials.key(b"a", b"bc")
    key = auth.VerifiedCredentials.key(b"a", b"b")
    cache.add(key)
    assert key not in cache  # already expired
    small = auth.VerifiedCredentials(size=2)
    keys = [auth.VerifiedCredentials.key(b"u", bytes([i])) for i in range(3)]
    for k in keys:
        small.add(k)
    assert keys[0] not in small and keys[1] in small and keys[2] in small


def test_parse_basic_credentials_like_go() -> None:
    assert auth.parse_basic_credentials(_basic("a", "b:c")) == (b"a", b"b:c")
    assert auth.parse_basic_credentials("BASIC " + base64.b64encode(b"a:b").decode()) == (b"a", b"b")
    assert auth.parse_basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None
    assert auth.parse_basic_credentials("Bearer x") is None
    assert auth.parse_basic_credentials(None) is None


# (Caddyfile body inside the site, expected message, real Caddy says the same)
SYNTAX_ERRORS = [
    ("\tbasic_auth sha1 {\n\t\ta b\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': unrecognized hash algorithm: sha1, at Caddyfile:2", True),
    ("\tbasic_auth bcrypt realm extra {\n\t\ta b\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': wrong argument count or unexpected line ending after 'extra', at Caddyfile:2", True),
    ("\tbasic_auth {\n\t\talice\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': username and password cannot be empty or missing, at Caddyfile:3", True),
    ("\tbasic_auth {\n\t\talice HASH more\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': wrong argument count or unexpected line ending after 'more', at Caddyfile:3", True),
    ("\troute {\n\t\tbasic_auth {\n\t\t\n\t\t\tbob\n\t\t}\n\t}\n",
     "parsing caddyfile tokens for 'route': parsing caddyfile tokens for 'basic_auth': username and password"
     " cannot be empty or missing, at Caddyfile:5, at Caddyfile:7", True),
    # Caddy finds these only when it provisions the handler; we refuse them at adapt time
    ("\tbasic_auth {\n\t\talice HASH\n\t\talice HASH\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': account 1: username is not unique: alice, at Caddyfile:4", False),
    ("\tbasic_auth {\n\t\talice not-a-hash\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': base64-decoding password: illegal base64 data at input byte 3,"
     " at Caddyfile:3", False),
    ("\tbasic_auth argon2id {\n\t\talice HASH\n\t}\n",
     "parsing caddyfile tokens for 'basic_auth': hash algorithm argon2id is not supported by"
     " durable-streams-server; use bcrypt, at Caddyfile:2", False),
]


@pytest.mark.parametrize("body,expected,caddy_agrees", SYNTAX_ERRORS, ids=range(len(SYNTAX_ERRORS)))
def test_basic_auth_syntax_errors(body: str, expected: str, caddy_agrees: bool, password_hash: str, tmp_path) -> None:
    text = ":8080 {\n" + body.replace("HASH", password_hash) + "}\n"
    with pytest.raises(CaddyfileError) as info:
        load_config(text)
    assert str(info.value) == expected
    if caddy_agrees:
        assert caddy_adapt(text, tmp_path) == (False, expected)


def test_adapted_json_matches_caddy(password_hash: str, tmp_path) -> None:
    import json

    # written after `respond`, sorted before it by Caddy's directive order
    text = (
        f":8080 {{\n\trespond ok\n\theader X-A b\n\tbasic_auth /admin/* bcrypt realm1 {{\n\t\talice {password_hash}\n\t}}\n"
        "\tbasicauth {\n\t}\n}\n"
    )
    accepted, adapted = caddy_adapt(text, tmp_path)
    assert accepted
    assert load_config(text).to_json() == json.loads(adapted)
