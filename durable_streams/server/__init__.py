"""durable-streams-server: a Caddyfile-configured Durable Streams daemon.

`durable_streams` itself is a namespace package (no __init__.py) so that this
distribution installs beside the official `durable-streams` client.
"""

__version__ = "0.1.0"
