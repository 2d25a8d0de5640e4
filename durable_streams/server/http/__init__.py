"""A small HTTP/1.1 and HTTP/2 server on asyncio protocols: the transport under the runtime's
listeners and the protocol handler (request and response objects, framing, keep-alive,
back-pressure, graceful shutdown)."""

from .messages import BodyReader, Request, Response, StreamResponse, as_chunk, json_response
from .framer import HttpVersion, ParseError
from .server import HTTPServer, alpn_protocols
from .settings import ServerSettings

__all__ = ["BodyReader", "HTTPServer", "HttpVersion", "ParseError", "Request", "Response", "ServerSettings",
           "StreamResponse", "alpn_protocols", "as_chunk", "json_response"]
