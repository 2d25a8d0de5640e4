"""Subscriptions (PROTOCOL.md §6–7): a layer between the protocol handler and the engine.
It follows streams through the engine (StreamWatcher), keeps its state in the store's
documents through the engine, and sends webhooks with aiohttp's client."""
