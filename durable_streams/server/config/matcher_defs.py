"""Named matcher definitions (`@name ...` lines and blocks) -> MatcherSet, with Caddy's errors.

Keys of the definitions map are the full token text (`@name`), as matcher tokens are
looked up by their text.
"""

from __future__ import annotations

from collections.abc import Callable

from ..caddyfile.tree import Directive, Token
from .errors import AdaptError, arg_error, errf
from .matchers import (
    PRIVATE_RANGES,
    ClientIPMatcher,
    HeaderMatcher,
    HeaderRegexpMatcher,
    HostMatcher,
    Matcher,
    MatcherError,
    MatcherSet,
    MethodMatcher,
    NotMatcher,
    PathMatcher,
    PathRegexpMatcher,
    ProtocolMatcher,
    QueryMatcher,
    RemoteIPMatcher,
    check_regex,
    parse_ip_range,
)

# Caddy matcher modules that exist but that this daemon does not evaluate.
UNSUPPORTED_MATCHERS = {"expression", "file", "vars", "vars_regexp", "tls"}


def collect_matcher_definitions(lines: list[Directive], defs: dict[str, MatcherSet]) -> None:
    """Parse every `@name` line of one scope into `defs` (mutated)."""
    for line in lines:
        name = line.name.text
        if name in defs_defined_here(defs, lines, line):
            raise AdaptError(f"matcher is defined more than once: {name}", line.file, line.line)
        defs[name] = parse_matcher_definition(line)


def defs_defined_here(defs: dict[str, MatcherSet], lines: list[Directive], current: Directive) -> set[str]:
    # a scope may shadow its parent's definitions, but not repeat its own
    seen: set[str] = set()
    for line in lines:
        if line is current:
            break
        seen.add(line.name.text)
    return seen


def parse_matcher_definition(line: Directive) -> MatcherSet:
    """`@name <matcher> args...` or `@name { <matcher> args... }` or `@name "<CEL>"`."""
    if line.args and line.args[0].quoted:
        raise _unsupported(line.args[0], "expression")
    # the one-line form and every block line are matcher lines: (type token, args, block)
    return matcher_set_from_lines(_entries(line.args, line.block), line.name.text[1:])


def _entries(args: tuple[Token, ...], block: tuple[Directive, ...] | None) -> "Lines":
    # one-line form: the block (if any) belongs to that matcher; else each block line is one
    if args:
        return [(args[0], list(args[1:]), block)]
    return [(sub.name, list(sub.args), sub.block) for sub in block or ()]


def matcher_set_from_lines(entries: "Lines", definition: str = "") -> MatcherSet:
    """Group lines by matcher type (repeated types concatenate, like Caddy) and build each."""
    by_type: dict[str, Lines] = {}
    for entry in entries:
        by_type.setdefault(entry[0].text, []).append(entry)
    matchers: list[Matcher] = []
    for kind, lines in by_type.items():
        builder = _BUILDERS.get(kind)
        if builder is None:
            if kind in UNSUPPORTED_MATCHERS:
                raise _unsupported(lines[0][0], kind)
            raise AdaptError(
                f"getting matcher module '{kind}': module not registered: http.matchers.{kind}",
                lines[0][0].file,
                lines[0][0].line,
            )
        try:
            matchers.append(builder(lines, definition))
        except MatcherError as exc:
            raise errf(lines[0][0], str(exc)) from None
    return MatcherSet(tuple(matchers))


def _unsupported(token: Token, kind: str) -> AdaptError:
    return errf(token, f"matcher '{kind}' is not supported by durable-streams-server")


Lines = list[tuple[Token, list[Token], tuple[Directive, ...] | None]]


def _no_blocks(lines: Lines, kind: str) -> None:
    for _token, _args, block in lines:
        if block:
            raise errf(block[0].name, f"malformed {kind} matcher: blocks are not supported")


def _path(lines: Lines, definition: str) -> Matcher:
    _no_blocks(lines, "path")
    return PathMatcher(tuple(a.text for _t, args, _d in lines for a in args))


def _path_regexp(lines: Lines, definition: str) -> Matcher:
    token, args, _ = lines[-1]
    if len(args) == 1:
        # like Caddy, an unnamed regexp takes the matcher definition's name
        name, pattern = definition, args[0].text
    elif len(args) == 2:
        name, pattern = args[0].text, args[1].text
    else:
        raise arg_error(args[-1] if args else token)
    check_regex(pattern)
    return PathRegexpMatcher(pattern, name)


def _method(lines: Lines, definition: str) -> Matcher:
    _no_blocks(lines, "method")
    return MethodMatcher(tuple(a.text.upper() for _t, args, _d in lines for a in args))


def _header(lines: Lines, definition: str) -> Matcher:
    fields: dict[str, list[str] | None] = {}
    order: list[str] = []
    for token, args, _d in lines:
        if not 1 <= len(args) <= 2:
            raise errf(token, "malformed header matcher: expected field")
        field = args[0].text
        value = args[1].text if len(args) == 2 else None
        if field.startswith("!"):
            if value is not None:
                raise errf(token, "malformed header matcher: null matching headers cannot have a field value")
            field = field[1:]
            fields[field] = None
        else:
            current = fields.get(field) or []
            fields[field] = current + ([value] if value is not None else [])
        if field not in order:
            order.append(field)
    return HeaderMatcher(tuple((f, None if fields[f] is None else tuple(fields[f])) for f in order))


def _header_regexp(lines: Lines, definition: str) -> Matcher:
    token, args, _ = lines[-1]
    if len(args) == 2:
        name, field, pattern = definition, args[0].text, args[1].text
    elif len(args) == 3:
        name, field, pattern = args[0].text, args[1].text, args[2].text
    else:
        raise arg_error(args[-1] if args else token)
    check_regex(pattern)
    return HeaderRegexpMatcher(field, pattern, name)


def _host(lines: Lines, definition: str) -> Matcher:
    return HostMatcher(tuple(a.text.lower() for _t, args, _d in lines for a in args))


def _query(lines: Lines, definition: str) -> Matcher:
    params: dict[str, list[str]] = {}
    for _token, args, _d in lines:
        for arg in args:
            key, sep, value = arg.text.partition("=")
            if not sep:
                raise errf(arg, f"malformed query matcher token: {arg.text}; must be in param=val format")
            params.setdefault(key, []).append(value)
    return QueryMatcher(tuple((k, tuple(v)) for k, v in params.items()))


def _ip_ranges(lines: Lines, kind: str) -> tuple[str, ...]:
    ranges: list[str] = []
    for _token, args, _d in lines:
        for arg in args:
            if arg.text == "forwarded":
                raise errf(arg, "the 'forwarded' option is no longer supported; use the 'client_ip' matcher instead")
            if arg.text == "private_ranges":
                ranges.extend(PRIVATE_RANGES)
                continue
            parse_ip_range(arg.text)  # validates; raises MatcherError
            ranges.append(arg.text)
    return tuple(ranges)


def _remote_ip(lines: Lines, definition: str) -> Matcher:
    return RemoteIPMatcher(_ip_ranges(lines, "remote_ip"))


def _client_ip(lines: Lines, definition: str) -> Matcher:
    return ClientIPMatcher(_ip_ranges(lines, "client_ip"))


_PROTOCOLS = {"http", "https", "grpc", "http/1.0", "http/1.0+", "http/1.1", "http/1.1+", "http/2", "http/2+", "http/3", "http/3+"}


def _protocol(lines: Lines, definition: str) -> Matcher:
    token, args, _ = lines[-1]
    if len(args) != 1:
        raise errf(token, "expected exactly one protocol")
    if args[0].text.lower() not in _PROTOCOLS:
        raise errf(args[0], f"unrecognized protocol: {args[0].text}")
    return ProtocolMatcher(args[0].text.lower())


def _not(lines: Lines, definition: str) -> Matcher:
    """Each `not` line is one negated set: inline (`not path /x`) or a block of matchers."""
    sets: list[MatcherSet] = []
    for _token, args, block in lines:
        # a bare `not` negates an empty set (which matches everything), as in Caddy
        sets.append(matcher_set_from_lines(_entries(tuple(args), block), definition))
    return NotMatcher(tuple(sets))


_BUILDERS: dict[str, Callable[[Lines, str], Matcher]] = {
    "path": _path,
    "path_regexp": _path_regexp,
    "method": _method,
    "header": _header,
    "header_regexp": _header_regexp,
    "host": _host,
    "query": _query,
    "remote_ip": _remote_ip,
    "client_ip": _client_ip,
    "protocol": _protocol,
    "not": _not,
}
