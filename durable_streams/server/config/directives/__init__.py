"""Directive families; importing this package registers every directive."""

from . import auth, durable_streams, global_options, site
from .base import DEFAULT_ORDER, DIRECTIVES, GroupCounter, Scope, Value, build_subroute, lookup_directive

__all__ = ["DEFAULT_ORDER", "DIRECTIVES", "GroupCounter", "Scope", "Value", "build_subroute", "lookup_directive"]

# imported for their side effect: each module registers its directives
_FAMILIES = (auth, durable_streams, global_options, site)
