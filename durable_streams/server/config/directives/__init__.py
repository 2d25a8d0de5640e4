"""Directive families; importing this package registers every directive."""

from . import durable_streams, global_options, site  # noqa: F401  (registration side effects)
from .base import DEFAULT_ORDER, DIRECTIVES, GroupCounter, Scope, Value, build_subroute, lookup_directive

__all__ = ["DEFAULT_ORDER", "DIRECTIVES", "GroupCounter", "Scope", "Value", "build_subroute", "lookup_directive"]
