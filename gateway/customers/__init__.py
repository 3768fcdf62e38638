"""The agent workspace: one customer across channels, customer context, quick replies, private
notes, tags, the inbox, business hours and satisfaction (docs/workspace.md)."""

from .catalog import CatalogProduct, CatalogStore
from .context import BuiltinProvider, ContextProvider, ContextUnavailable
from .crm import HttpProvider
from .identity import CustomerDirectory
from .workspace import WorkspaceService

__all__ = [
    "BuiltinProvider",
    "CatalogProduct",
    "CatalogStore",
    "ContextProvider",
    "ContextUnavailable",
    "CustomerDirectory",
    "HttpProvider",
    "WorkspaceService",
]
