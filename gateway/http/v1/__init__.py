"""REST API v1: one module per resource, each exporting ``OPERATIONS``; ``ALL`` lists them in the
order the OpenAPI document and docs/api.md describe them."""

from __future__ import annotations

from . import agents, apikeys, bot, conversations, customers, desk, ingest, reports, routing, tokens, webhooks

ALL = (*apikeys.OPERATIONS, *tokens.OPERATIONS, *agents.OPERATIONS, *routing.OPERATIONS, *bot.OPERATIONS, *conversations.OPERATIONS,
       *customers.OPERATIONS, *ingest.OPERATIONS, *desk.OPERATIONS, *reports.OPERATIONS, *webhooks.OPERATIONS)
