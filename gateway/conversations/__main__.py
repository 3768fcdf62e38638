"""``python -m gateway.conversations``: print docs/authorization.md, rendered from the authz table."""

from .authz import markdown

print(markdown(), end="")
