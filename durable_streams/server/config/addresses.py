"""Site addresses (`[scheme://][host][:port][/path]`) and how they map to listeners.

Follows Caddy's `ParseAddress`, `Address.Normalize` and `listenersForServerBlockAddress`,
including their error wording (the caller adds Caddy's "parsing key:" style prefixes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_HTTP_PORT = 80
DEFAULT_HTTPS_PORT = 443


class AddressError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SiteAddress:
    original: str
    scheme: str = ""
    host: str = ""
    port: str = ""
    path: str = ""

    def __str__(self) -> str:
        """Caddy's Address.String(): a filled-out URL-ish form used in messages."""
        if not self.host and not self.port:
            return ""
        scheme = self.scheme or ("https" if self.port == str(DEFAULT_HTTPS_PORT) else "http")
        text = scheme + "://"
        default_port = str(DEFAULT_HTTPS_PORT if scheme == "https" else DEFAULT_HTTP_PORT)
        if self.port and self.port != default_port:
            text += join_host_port(self.host, self.port)
        else:
            text += self.host
        return text + self.path

    @property
    def is_catch_all_host(self) -> bool:
        return self.host == ""


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort, returning None where Go returns an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            return None
        host, rest = hostport[1:end], hostport[end + 1 :]
        if not rest.startswith(":") or "[" in host or "]" in rest:
            return None
        return host, rest[1:]
    i = hostport.rfind(":")
    if i < 0:
        return None
    host, port = hostport[:i], hostport[i + 1 :]
    if ":" in host or "[" in host or "]" in host or "[" in port or "]" in port:
        return None
    return host, port


def _lower_except_placeholders(text: str) -> str:
    out = []
    depth = 0
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        out.append(ch if depth else ch.lower())
    return "".join(out)


def parse_address(text: str) -> SiteAddress:
    """ParseAddress + Normalize. Errors: `invalid port 'x': ...`, `port N is out of range`."""
    remaining = text[:4096].strip()
    original = remaining
    scheme = ""
    if "://" in remaining:
        scheme, remaining = remaining.split("://", 1)
    host_part, sep, path_rest = remaining.partition("/")
    split = _split_host_port(host_part) or _split_host_port(host_part + ":")
    host, port = split if split is not None else (host_part, "")
    path = "/" + path_rest if sep else ""
    if port:
        try:
            number = _go_atoi(port)
        except ValueError:
            raise AddressError(
                f"invalid port '{port}': strconv.Atoi: parsing \"{port}\": invalid syntax"
            ) from None
        if number < 0 or number > 65535:
            raise AddressError(f"port {number} is out of range")
    host = host.strip()
    try:
        ip = ipaddress.ip_address(host)
        if ip.version == 6 and ip.ipv4_mapped is None:
            host = str(ip)
    except ValueError:
        pass
    return SiteAddress(
        original=original,
        scheme=_lower_except_placeholders(scheme),
        host=_lower_except_placeholders(host),
        port=port,
        path=path,
    )


def _go_atoi(text: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        raise ValueError(text)
    return int(text)


def join_host_port(host: str, port: str | int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listener_port(address: SiteAddress, http_port: int, https_port: int) -> int:
    """The port a site key listens on; raises on ws/wss/unknown schemes or a convention clash."""
    if address.scheme == "wss":
        raise AddressError("the scheme wss:// is only supported in browsers; use https:// instead")
    if address.scheme == "ws":
        raise AddressError("the scheme ws:// is only supported in browsers; use http:// instead")
    if address.scheme not in ("", "http", "https"):
        raise AddressError(f"unsupported URL scheme {address.scheme}://")
    if address.port:
        port = int(address.port)
    elif address.scheme == "http":
        port = http_port
    else:
        port = https_port
    if (address.scheme == "http" and port == https_port) or (address.scheme == "https" and port == http_port):
        raise AddressError(f"[{address}] scheme and port violate convention")
    return port


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to bind: `host` empty means all interfaces; `network` tcp/tcp4/tcp6/unix."""

    network: str
    host: str
    port: int

    def __str__(self) -> str:
        if self.network == "unix":
            return f"unix/{self.host}"
        prefix = "" if self.network == "tcp" else f"{self.network}/"
        return prefix + join_host_port(self.host, self.port)


def parse_bind_host(text: str, port: int) -> ListenAddress:
    """A `bind`/`default_bind` value (`127.0.0.1`, `tcp6/::1`, `unix//run/x.sock`) at `port`."""
    network = "tcp"
    rest = text
    if "/" in text:
        network, _, rest = text.partition("/")
        network = network.lower()
        if network not in ("tcp", "tcp4", "tcp6", "unix"):
            raise AddressError(f"unsupported network type for binding: {network}")
    if network == "unix":
        return ListenAddress("unix", rest, 0)
    host = rest
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    split = _split_host_port(rest)
    if split is not None:
        host = split[0]  # like Caddy, a port in a bind address is ignored: the site decides it
    return ListenAddress(network, host, port)


def is_ip_or_local(host: str) -> bool:
    """Hosts that would get certificates from Caddy's internal CA rather than ACME."""
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def parse_network_address(text: str) -> ListenAddress:
    """An address with its port (`localhost:2019`, `:2019`, `tcp4/127.0.0.1:9000`, `unix//run/x.sock`)."""
    network, sep, rest = text.partition("/")
    if not sep or network.lower() not in ("tcp", "tcp4", "tcp6", "unix"):
        network, rest = "tcp", text
    network = network.lower()
    if network == "unix":
        return ListenAddress("unix", rest, 0)
    split = _split_host_port(rest)
    if split is None:
        raise AddressError("missing port in address")
    host, port = split
    try:
        number = _go_atoi(port)
    except ValueError:
        raise AddressError(f"invalid port '{port}'") from None
    if not 0 <= number <= 65535:
        raise AddressError(f"port {number} is out of range")
    return ListenAddress(network, host, number)
