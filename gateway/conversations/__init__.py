"""Conversations: the service every interface calls (``service``) and who may do what (``authz``)."""

from .service import ConversationService, History, Joined, Listing, Opened, system

__all__ = ["ConversationService", "History", "Joined", "Listing", "Opened", "system"]
