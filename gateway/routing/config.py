"""Routing configuration per tenant: strategy, skill groups and how conversations match them.

Loaded from a JSON file (``--routing-file``); a tenant without an entry gets ``TenantRouting()``:
least-loaded over one ``default`` group, with the built-in bot answering first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("least_loaded", "round_robin", "sticky", "manual")
BOT_MODES = ("builtin", "external", "none")
MATCH_KEYS = ("channel", "language", "category", "intent")


@dataclass(frozen=True)
class SkillGroup:
    """A team of agents. A conversation joins the first group whose every rule matches (a rule is
    a list of accepted values for one of MATCH_KEYS); a group with no rules matches everything."""

    name: str
    match: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def matches(self, facts: dict[str, str]) -> bool:
        return all(facts.get(key) in values for key, values in self.match.items())


@dataclass(frozen=True)
class TenantRouting:
    strategy: str = "least_loaded"
    fallback: str = "least_loaded"  # what sticky falls back to
    sticky_wait_s: float = 60.0
    groups: tuple[SkillGroup, ...] = (SkillGroup("default"),)
    default_max_active: int = 5
    grace_s: float = 30.0  # an agent who disconnects keeps their conversations this long
    reopen_window_s: float = 24 * 3600.0  # a resolved conversation reopens if the shopper writes within it
    average_handle_s: float = 180.0  # for queue wait estimates before any wait was measured
    bot: str = "builtin"
    bot_user: str = "kefu-bot"
    bot_name: str = "小客"
    knowledge_base: str = ""  # path; empty: the shipped sample knowledge base

    def group_for(self, facts: dict[str, str]) -> str:
        for group in self.groups:
            if group.matches(facts):
                return group.name
        return self.groups[-1].name


def parse_tenant(raw: dict[str, Any], where: str) -> TenantRouting:
    known = set(TenantRouting.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
    values = dict(raw)
    if "groups" in values:
        groups = []
        for i, g in enumerate(values["groups"]):
            if "name" not in g:
                raise ValueError(f"{where}.groups[{i}]: missing `name`")
            match = {k: tuple(v) for k, v in g.get("match", {}).items()}
            bad = set(match) - set(MATCH_KEYS)
            if bad:
                raise ValueError(f"{where}.groups[{i}]: unknown match keys {sorted(bad)} (use {', '.join(MATCH_KEYS)})")
            groups.append(SkillGroup(g["name"], match))
        if not groups:
            raise ValueError(f"{where}.groups: at least one group")
        values["groups"] = tuple(groups)
    routing = TenantRouting(**values)
    if routing.strategy not in STRATEGIES or routing.fallback not in STRATEGIES or routing.fallback == "sticky":
        raise ValueError(f"{where}: strategy must be one of {', '.join(STRATEGIES)} (fallback not sticky)")
    if routing.bot not in BOT_MODES:
        raise ValueError(f"{where}: bot must be one of {', '.join(BOT_MODES)}")
    return routing


@dataclass(frozen=True)
class RoutingConfig:
    tenants: dict[str, TenantRouting] = field(default_factory=dict)
    default: TenantRouting = TenantRouting()

    def for_tenant(self, tenant: str) -> TenantRouting:
        return self.tenants.get(tenant, self.default)

    def with_tenant(self, tenant: str, routing: TenantRouting) -> RoutingConfig:
        """This configuration with ``tenant``'s settings replaced."""
        return RoutingConfig({**self.tenants, tenant: routing}, self.default)

    @classmethod
    def load(cls, path: str | Path) -> RoutingConfig:
        """``{"default": {...}, "tenants": {"shop1": {...}}}``; errors name the setting."""
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        default = parse_tenant(raw.get("default", {}), "default")
        tenants = {name: parse_tenant(t, f"tenants.{name}") for name, t in raw.get("tenants", {}).items()}
        return cls(tenants, default)
