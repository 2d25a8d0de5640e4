"""HTTP/2 test tools: a throwaway CA and server certificate (cryptography), and a small
HTTP/2 client on the h2 library over a real TLS socket, which exposes what a higher-level
client hides: frames' effects per stream, flow-control windows (acknowledged by hand when
asked), resets and GOAWAY."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GUARD = 10.0  # against hangs only: every wait here normally ends in milliseconds


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path

    def server_context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(alpn)
        return ctx

    def client_context(self, alpn: list[str]) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.set_alpn_protocols(alpn)
        return ctx


def write_tls_files(directory: Path) -> TLSFiles:
    """A CA and a certificate it signed for localhost and 127.0.0.1, as PEM files."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h2 test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TLSFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


@dataclass
class StreamState:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    header_list: list[tuple[str, str]] = field(default_factory=list)
    informational: list[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    unacked: int = 0
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM from the server


class _ClientConnection(h2.connection.H2Connection):
    def _receive_goaway_frame(self, frame):
        # h2 refuses every frame after a GOAWAY, but the streams it lets finish (those
        # up to its last stream id, RFC 9113 §6.8) go on sending: keep the state open.
        state = self.state_machine.state
        events = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return events


class H2Client:
    """One HTTP/2 connection to the server. With `auto_ack=False` received DATA is not
    acknowledged until `ack()`: the server must then stop at the window."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 initial_window: int, auto_ack: bool, authority: str) -> None:
        self.reader, self.writer = reader, writer
        self.authority = authority
        self.auto_ack = auto_ack
        self.conn = _ClientConnection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })
        self.conn.initiate_connection()
        self.streams: dict[int, StreamState] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings_seen = False
        self.eof = False
        self._changed = asyncio.Event()
        self._flush()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(cls, port: int, tls: TLSFiles, *, initial_window: int = 65535, auto_ack: bool = True,
                      alpn: list[str] = ["h2"], authority: str = "localhost") -> "H2Client":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, ssl=tls.client_context(alpn), server_hostname="localhost"), GUARD)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        return cls(reader, writer, initial_window=initial_window, auto_ack=auto_ack, authority=authority)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read_loop(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.conn.receive_data(data):
                    self._on_event(event)
                self._flush()
                self._changed.set()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self.eof = True
            self._changed.set()

    def _on_event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        state = self.streams.get(sid)
        if isinstance(event, h2.events.ResponseReceived) and state is not None:
            state.header_list = list(event.headers)
            state.headers = dict(state.header_list)
            state.status = int(state.headers[":status"])
        elif isinstance(event, h2.events.InformationalResponseReceived) and state is not None:
            state.informational.append(int(dict(event.headers)[":status"]))
        elif isinstance(event, h2.events.DataReceived) and state is not None:
            state.data += event.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            else:
                state.unacked += event.flow_controlled_length
        elif isinstance(event, h2.events.StreamEnded) and state is not None:
            state.ended = True
        elif isinstance(event, h2.events.StreamReset) and state is not None:
            state.reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen = True

    async def until(self, condition, timeout: float = GUARD) -> None:
        async def wait() -> None:
            while not condition():
                if self.eof:
                    raise AssertionError("connection closed while waiting")
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(wait(), timeout)

    def start(self, method: str, path: str, headers: list[tuple[str, str]] = (), *, end: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = StreamState()
        self.conn.send_headers(sid, [(":method", method), (":path", path), (":scheme", "https"),
                                     (":authority", self.authority), *headers], end_stream=end)
        self._flush()
        return sid

    async def send_body(self, sid: int, data: bytes, *, end: bool = True) -> None:
        """Send as the server's windows allow (waiting for its WINDOW_UPDATEs)."""
        view = memoryview(data)
        while view:
            await self.until(lambda: self.conn.local_flow_control_window(sid) > 0 or self.streams[sid].reset is not None)
            if self.streams[sid].reset is not None:
                return
            size = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(sid, view[:size].tobytes())
            view = view[size:]
            self._flush()
            self._changed.set()  # what was sent may be what a waiter waits for
            await self.writer.drain()
        if end:
            self.conn.end_stream(sid)
            self._flush()

    async def request(self, method: str, path: str, headers: list[tuple[str, str]] = (),
                      body: bytes | None = None) -> StreamState:
        sid = self.start(method, path, headers, end=body is None)
        if body is not None:
            await self.send_body(sid, body)
        return await self.response(sid)

    async def response(self, sid: int, timeout: float = GUARD) -> StreamState:
        state = self.streams[sid]
        await self.until(lambda: state.ended or state.reset is not None, timeout)
        return state

    def ack(self, sid: int) -> None:
        state = self.streams[sid]
        if state.unacked:
            self.conn.acknowledge_received_data(state.unacked, sid)
            state.unacked = 0
            self._flush()

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid)
        self._flush()

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
