"""Certificate subjects and storage paths, as Caddy (certmagic) names them.

- Which site hosts can get a certificate at all, and which only from the local CA
  (certmagic's SubjectQualifiesForCert / SubjectIsInternal).
- Where certificates live: the storage root (`storage file_system <path>`, else Caddy's
  default `$XDG_DATA_HOME/caddy` or `$HOME/.local/share/caddy`) and certmagic's keys
  under it (`certificates/<issuer>/<name>/<name>.crt|.key|.json`, `pki/authorities/local/`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping

INTERNAL_ISSUER = "internal"
ACME_ISSUER = "acme"
# certmagic's storage key of Caddy's internal issuer ("local" is the default CA's id)
INTERNAL_ISSUER_KEY = "local"
LOCAL_CA_ID = "local"

_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def qualifies_for_cert(subject: str) -> bool:
    """certmagic.SubjectQualifiesForCert: a name (or IP) a certificate can be made for."""
    s = subject.strip()
    if not s or "{" in s or "}" in s:
        return False
    if s.startswith(".") or s.endswith(".") or ".." in s:
        return False
    if any(c in s for c in "()[]; ,'\"") and not is_ip(s):
        return False
    return s.count("*") <= 1 and (s.count("*") == 0 or (s.startswith("*.") and len(s) > 2))


# certmagic's isInternalIP ("::1/7" there is the network ::/7, which holds ::1)
_INTERNAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "0.0.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "::/7", "fe80::/10", "fc00::/7",
))


def _internal_ip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in _INTERNAL_NETWORKS)


def is_internal(subject: str) -> bool:
    """Served by the local CA automatically: certmagic's `!SubjectQualifiesForPublicCert`.

    That is SubjectIsInternal (localhost, *.localhost, *.local, *.internal, *.home.arpa,
    loopback, private and link-local IP addresses), or a wildcard that is not one
    left-most label of a name with 3+ labels. Public IP addresses go to ACME, as in Caddy."""
    s = subject.lower().rstrip(".")
    if s == "localhost" or s.endswith(_INTERNAL_SUFFIXES) or _internal_ip(s):
        return True
    return "*" in s and not (s.count("*") == 1 and s.count(".") > 1 and len(s) > 2 and s.startswith("*."))


def match_wildcard(subject: str, wildcard: str) -> bool:
    """certmagic.MatchWildcard: `wildcard` is `subject` with leading labels replaced by `*`."""
    subject, wildcard = subject.lower(), wildcard.lower()
    if subject == wildcard:
        return True
    if "*" not in wildcard:
        return False
    labels = subject.split(".")
    for i, label in enumerate(labels):
        if label == "":
            continue
        labels[i] = "*"
        if ".".join(labels) == wildcard:
            return True
    return False


def default_storage_root(env: Mapping[str, str] | None = None) -> str:
    """Caddy's default file storage: $XDG_DATA_HOME/caddy, else $HOME/.local/share/caddy."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_DATA_HOME")
    if xdg:
        return os.path.join(xdg, "caddy")
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".local", "share", "caddy")


_UNSAFE = re.compile(r"[^\w@.-]")


def safe_key(name: str) -> str:
    """certmagic's KeyBuilder.Safe: a subject as one storage path component."""
    s = name.lower().strip()
    for old, new in ((" ", "_"), ("+", "_plus_"), ("*", "wildcard_"), (":", "-"), ("..", "")):
        s = s.replace(old, new)
    return _UNSAFE.sub("", s)


def leaf_paths(storage_root: str, subject: str, issuer_key: str = INTERNAL_ISSUER_KEY) -> tuple[str, str, str]:
    """(cert, key, metadata) paths of a managed certificate for `subject`."""
    name = safe_key(subject)
    base = os.path.join(storage_root, "certificates", safe_key(issuer_key), name, name)
    return base + ".crt", base + ".key", base + ".json"


def authority_dir(storage_root: str, ca_id: str = LOCAL_CA_ID) -> str:
    return os.path.join(storage_root, "pki", "authorities", ca_id)


def acme_issuer_key(directory: str) -> str:
    """certmagic's ACMEIssuer.IssuerKey: the CA's host, then its path with '/' -> '-'
    ("https://acme-v02.api.letsencrypt.org/directory" -> "acme-v02.api.letsencrypt.org-directory")."""
    try:
        url = urllib.parse.urlsplit(directory)
    except ValueError:
        return directory
    key = url.netloc
    path = url.path.replace("/", "-").replace("\\", "-").strip("-")
    return key + "-" + path if path else key
