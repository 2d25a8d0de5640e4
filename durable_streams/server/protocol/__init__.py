"""HTTP layer of the Durable Streams protocol: parse and validate requests, format responses."""
