"""Subscription API errors: an HTTP status and the `error.code` of PROTOCOL.md §6–7."""

from __future__ import annotations


class SubscriptionError(Exception):
    def __init__(self, status: int, code: str, message: str, **details) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


def invalid(message: str) -> SubscriptionError:
    return SubscriptionError(400, "INVALID_REQUEST", message)


def not_found(what: str = "subscription not found") -> SubscriptionError:
    return SubscriptionError(404, "SUBSCRIPTION_NOT_FOUND", what)


def fenced() -> SubscriptionError:
    return SubscriptionError(409, "FENCED", "the wake is stale: its generation or wake_id is not the current one")


def invalid_offset(message: str) -> SubscriptionError:
    return SubscriptionError(409, "INVALID_OFFSET", message)
