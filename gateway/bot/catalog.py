"""The product catalog the bot answers product questions from ("这件外套是什么面料").

A small interface (``Catalog``) so that where products come from stays someone else's concern: the
memory implementation here serves tests and a file-based setup, and the workspace's product ingest
(REST) fills a catalog of its own behind the same ``get``. Products belong to a tenant; ids are the
tenant's own (SKU or product id), opaque to the bot.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import yaml

from .knowledge import Bilingual


class CatalogError(ValueError):
    """A product description breaks the schema; the message names the product and the field."""


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    title: Bilingual
    price: float | None = None  # in `currency`; None: not published
    currency: str = "CNY"
    material: Bilingual | None = None  # "面料：95%棉 5%氨纶"
    care: Bilingual | None = None  # washing and care instructions
    colours: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()  # in the shop's order: S, M, L, …
    size_chart: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # size -> {measure: value}
    stock: Mapping[str, int] = field(default_factory=dict)  # size -> units available
    description: Bilingual | None = None

    def in_stock(self, size: str) -> int | None:
        """Units of ``size`` available (None: the catalog does not say)."""
        return self.stock.get(size) if self.stock else None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Product:
        """From the file/REST shape: ``{"id", "title": {zh, en} | str, "price", "material", …}``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data["id"]:
            raise CatalogError(f"a product needs a text 'id', got {data!r}"[:200])
        where = f"product '{data['id']}'"
        unknown = set(data) - _PRODUCT_FIELDS
        if unknown:
            raise CatalogError(f"{where}: unknown field '{sorted(unknown)[0]}'")

        def text(key: str, required: bool = False) -> Bilingual | None:
            value = data.get(key)
            if value is None:
                if required:
                    raise CatalogError(f"{where}: field '{key}' is missing")
                return None
            if isinstance(value, str) and value.strip():
                return Bilingual(value.strip(), value.strip())
            if isinstance(value, Mapping) and isinstance(value.get("zh"), str) and value["zh"].strip():
                en = value.get("en") or value["zh"]
                return Bilingual(value["zh"].strip(), str(en).strip())
            raise CatalogError(f"{where}: field '{key}' must be a text or {{zh, en}} texts")

        price = data.get("price")
        if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0):
            raise CatalogError(f"{where}: field 'price' must be a non-negative number")
        stock = data.get("stock", {})
        if not isinstance(stock, Mapping) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in stock.values()):
            raise CatalogError(f"{where}: field 'stock' must map sizes to whole numbers of units")
        chart = data.get("size_chart", {})
        if not isinstance(chart, Mapping) or not all(isinstance(row, Mapping) for row in chart.values()):
            raise CatalogError(f"{where}: field 'size_chart' must map sizes to {{measure: value}}")
        sizes = data.get("sizes") or list(stock) or list(chart)
        colours = data.get("colours", [])
        for key, value in (("sizes", sizes), ("colours", colours)):
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                raise CatalogError(f"{where}: field '{key}' must be a list of texts")
        return cls(
            id=data["id"],
            title=text("title", required=True),  # type: ignore[arg-type]
            price=float(price) if price is not None else None,
            currency=str(data.get("currency", "CNY")),
            material=text("material"),
            care=text("care"),
            colours=tuple(str(c) for c in colours),
            sizes=tuple(str(s) for s in sizes),
            size_chart={str(size): {str(k): str(v) for k, v in row.items()} for size, row in chart.items()},
            stock={str(size): units for size, units in stock.items()},
            description=text("description"),
        )


_PRODUCT_FIELDS = {"id", "title", "price", "currency", "material", "care", "colours", "sizes", "size_chart", "stock", "description"}


class Catalog(Protocol):
    """Where the bot looks products up. ``get`` is called on the event loop, once per product
    question: it must answer from memory, quickly (an implementation backed by a database keeps a
    cache filled in the background)."""

    def get(self, tenant: str, product_id: str) -> Product | None:
        """The tenant's product, or None when the catalog has no such product."""
        ...


class MemoryCatalog:
    """Products held in memory, per tenant. Safe to fill from a worker thread while the bot reads."""

    def __init__(self, products: Mapping[str, Iterable[Product]] | None = None) -> None:
        self._products: dict[tuple[str, str], Product] = {}
        self._lock = threading.Lock()
        for tenant, items in (products or {}).items():
            for product in items:
                self.put(tenant, product)

    def put(self, tenant: str, product: Product) -> None:
        with self._lock:
            self._products[(tenant, product.id)] = product

    def remove(self, tenant: str, product_id: str) -> None:
        with self._lock:
            self._products.pop((tenant, product_id), None)

    def get(self, tenant: str, product_id: str) -> Product | None:
        return self._products.get((tenant, product_id))

    @classmethod
    def load(cls, path: str | Path) -> MemoryCatalog:
        """A YAML file ``{tenant: [product, …]}`` (see ``data/sample_catalog.yaml``)."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, Mapping):
            raise CatalogError(f"{path}: must map tenants to lists of products")
        catalog = cls()
        for tenant, items in data.items():
            if not isinstance(items, list):
                raise CatalogError(f"{path}: tenant '{tenant}' must have a list of products")
            for item in items:
                catalog.put(str(tenant), Product.from_dict(item))
        return catalog
