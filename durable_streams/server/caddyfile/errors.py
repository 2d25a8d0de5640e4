"""The one error type of the Caddyfile layers (syntax and config mapping)."""

from __future__ import annotations


class CaddyfileError(Exception):
    """A config error with Caddy's wording and the place it was found.

    `style` picks how the location is printed, following real Caddy:
    - "prefix":  ``Caddyfile:7: unrecognized directive: frobnicate`` (setup errors)
    - "suffix":  ``Unexpected '{' on a new line..., at Caddyfile:3`` (parser/dispenser errors)
    - "bare":    the message alone (no location known or Caddy prints none)
    - "wrap":    Caddy's dispenser wrapping: ``msg, at F:L`` plus
                 `` import chain ['a','b']`` when the token came through an import
    - "syntax":  Caddy's SyntaxErr: ``msg, at F:L import chain: ['a','b']`` (chain always printed)
    """

    def __init__(
        self,
        message: str,
        file: str | None = None,
        line: int | None = None,
        *,
        style: str = "suffix",
        import_chain: tuple[str, ...] = (),
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.style = style
        self.import_chain = import_chain
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.file is None or self.line is None or self.style == "bare":
            return self.message
        if self.style == "prefix":
            return f"{self.file}:{self.line}: {self.message}"
        if self.style == "wrap":
            chain = "','".join(self.import_chain)
            tail = f" import chain ['{chain}']" if self.import_chain else ""
            return f"{self.message}, at {self.file}:{self.line}{tail}"
        if self.style == "syntax":
            chain = "','".join(self.import_chain)
            return f"{self.message}, at {self.file}:{self.line} import chain: ['{chain}']"
        where = f"{self.file}:{self.line}"
        if self.import_chain:
            where += " import chain: [" + ", ".join(f"'{c}'" for c in self.import_chain) + "]"
        return f"{self.message}, at {where}"
