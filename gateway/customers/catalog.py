"""The shop's product catalog, as pushed over ``PUT /v1/ingest/products/{id}``.

``CatalogStore.get(tenant, product_id)`` is the bot's catalog interface (``gateway.bot.catalog.
Catalog``): synchronous, from memory, so the bot's turn never waits on the store. Products are
durable as workspace records (kind ``product``) and read back into memory per tenant on first use
(``load``) and kept current by ``put``. Memory is bounded by ``MAX_PRODUCTS`` per tenant.

``on_product(tenant, product)``, when set, hears of each product loaded or put: the gateway hands
them to the built-in bot's catalog (``BotDirectory.add_product`` in gateway/bots.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..protocol.errors import RequestError
from .book import RecordBook

MAX_PRODUCTS = 10_000


@dataclass(frozen=True, slots=True)
class CatalogProduct:
    id: str
    title: str
    price: float | None = None
    currency: str = "CNY"
    image: str = ""
    material: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)  # material, colour, fit, …
    sizes: tuple[str, ...] = ()
    size_chart: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # size -> {measure: value}
    stock: Mapping[str, int] = field(default_factory=dict)  # size -> units

    @classmethod
    def from_record(cls, product_id: str, value: Mapping[str, Any]) -> CatalogProduct:
        attributes = dict(value.get("attributes") or {})
        return cls(
            id=product_id, title=value["title"], price=value.get("price"), currency=value.get("currency", "CNY"),
            image=value.get("image", ""), material=attributes.get("material", ""), attributes=attributes,
            sizes=tuple(value.get("sizes") or ()), size_chart=dict(value.get("size_chart") or {}), stock=dict(value.get("stock") or {}),
        )

    def bot_fields(self) -> dict[str, Any]:
        """The product in the bot catalog's file/REST shape (``gateway.bot.catalog.Product.from_dict``)."""
        fields: dict[str, Any] = {"id": self.id, "title": self.title, "currency": self.currency, "sizes": list(self.sizes)}
        if self.price is not None:
            fields["price"] = self.price
        if self.material:
            fields["material"] = self.material
        if self.attributes.get("colour"):
            fields["colours"] = [self.attributes["colour"]]
        if self.size_chart:
            fields["size_chart"] = {k: dict(v) for k, v in self.size_chart.items()}
        if self.stock:
            fields["stock"] = dict(self.stock)
        return fields

    def as_map(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "price": self.price, "currency": self.currency, "image": self.image,
            "attributes": dict(self.attributes), "sizes": list(self.sizes), "size_chart": {k: dict(v) for k, v in self.size_chart.items()},
            "stock": dict(self.stock),
        }


class CatalogStore:
    def __init__(self, book: RecordBook) -> None:
        self.book = book
        self._products: dict[str, dict[str, CatalogProduct]] = {}
        self.on_product: Callable[[str, CatalogProduct], None] | None = None

    def get(self, tenant: str, product_id: str) -> CatalogProduct | None:
        """The product, if the tenant's catalog is loaded and has it (the bot's interface)."""
        return self._products.get(tenant, {}).get(product_id)

    async def load(self, tenant: str) -> None:
        if tenant in self._products:
            return
        products = {key: CatalogProduct.from_record(key, value) for key, value in await self.book.list(tenant, "product", limit=MAX_PRODUCTS)}
        if tenant in self._products:  # loaded meanwhile by another task
            return
        self._products[tenant] = products
        if self.on_product is not None:
            for product in products.values():
                self.on_product(tenant, product)

    async def find(self, tenant: str, product_id: str) -> CatalogProduct | None:
        await self.load(tenant)
        return self.get(tenant, product_id)

    async def put(self, tenant: str, product_id: str, value: dict[str, Any]) -> CatalogProduct:
        await self.load(tenant)
        products = self._products[tenant]
        if product_id not in products and len(products) >= MAX_PRODUCTS:
            raise RequestError("too_large", f"a catalog holds at most {MAX_PRODUCTS} products")
        product = CatalogProduct.from_record(product_id, value)
        await self.book.put(tenant, "product", product_id, value)
        products[product_id] = product
        if self.on_product is not None:
            self.on_product(tenant, product)
        return product
