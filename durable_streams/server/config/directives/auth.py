"""`basic_auth` (and its deprecated name `basicauth`), as Caddy 2.11's caddyauth parses it:

    basic_auth [<matcher>] [<hash_algorithm> [<realm>]] {
        <username> <hashed_password>
        ...
    }

Checks Caddy makes only when it provisions the handler (unique user names, decodable
hashes) are made here, so a bad account list fails `adapt`/`validate` with file:line.
"""

from __future__ import annotations

import base64
import binascii
import re

from ...caddyfile.tree import Directive, Token
from ..errors import arg_error, errf
from ..model import Account, BasicAuth, Handler
from .base import Scope, handler_directive

_KNOWN_ALGORITHMS = ("bcrypt", "argon2id")
# What bcrypt.checkpw accepts: $2a$/$2b$/$2y$, a two-digit cost, 53 characters of salt+hash
_BCRYPT_HASH = re.compile(rb"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")


def _basic_auth(d: Directive, args: list[Token], scope: Scope) -> Handler:
    if d.name.text == "basicauth":
        scope.warn(d.name, "the 'basicauth' directive is deprecated, please use 'basic_auth' instead!")
    if len(args) > 2:
        raise arg_error(args[-1])
    algorithm = args[0].text if args else "bcrypt"
    realm = args[1].text if len(args) == 2 else ""
    if algorithm not in _KNOWN_ALGORITHMS:
        raise errf(args[0], f"unrecognized hash algorithm: {algorithm}")
    if algorithm != "bcrypt":
        raise errf(args[0], f"hash algorithm {algorithm} is not supported by durable-streams-server; use bcrypt")
    accounts: list[Account] = []
    for line in d.block or ():
        if len(line.args) > 1:
            raise arg_error(line.args[-1])
        if not line.args or line.block is not None:
            raise errf(line.name, "username and password cannot be empty or missing")
        username, written = line.name.text, line.args[0].text
        if any(a.username == username for a in accounts):
            raise errf(line.name, f"account {len(accounts)}: username is not unique: {username}")
        accounts.append(Account(username, _password_hash(line.args[0]), written))
    return BasicAuth(accounts=tuple(accounts), realm=realm, algorithm=algorithm)


def _password_hash(token: Token) -> bytes:
    """Caddy takes a hash in Modular Crypt Format ($...) as is and base64-decodes anything
    else (its older, redundantly encoded form)."""
    text = token.text
    if text.startswith("$"):
        hashed = text.encode()
    else:
        try:
            hashed = base64.b64decode(text.encode(), validate=True)
        except (binascii.Error, ValueError):
            raise errf(token, f"base64-decoding password: illegal base64 data at input byte {_bad_base64_at(text)}") from None
    if not _BCRYPT_HASH.match(hashed):
        raise errf(token, "password is not a bcrypt hash; make one with 'caddy hash-password'")
    return hashed


def _bad_base64_at(text: str) -> int:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for i, ch in enumerate(text.rstrip("=")):
        if ch not in alphabet:
            return i
    return len(text)


handler_directive("basic_auth")(_basic_auth)
handler_directive("basicauth")(_basic_auth)  # Caddy's deprecated name
