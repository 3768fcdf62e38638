"""The product catalog: its file/REST shape, errors that name the product and field, the memory store."""

from __future__ import annotations

import pytest

from gateway.bot import Bilingual, CatalogError, MemoryCatalog, Product
from gateway.bot.catalog import Catalog
from gateway.bot.bot import DEFAULT_KNOWLEDGE_BASE

SAMPLE = DEFAULT_KNOWLEDGE_BASE.parent / "sample_catalog.yaml"

COAT = {
    "id": "P1", "title": {"zh": "大衣", "en": "Coat"}, "price": 899, "material": "70%羊毛",
    "sizes": ["S", "M"], "stock": {"S": 2, "M": 0}, "size_chart": {"S": {"衣长": "98cm"}},
}


def test_from_dict_reads_both_text_shapes():
    coat = Product.from_dict(COAT)
    assert coat.title == Bilingual("大衣", "Coat") and coat.material == Bilingual("70%羊毛", "70%羊毛")
    assert (coat.price, coat.currency, coat.sizes) == (899.0, "CNY", ("S", "M"))
    assert coat.in_stock("S") == 2 and coat.in_stock("M") == 0 and coat.in_stock("XL") is None
    assert Product.from_dict({"id": "x", "title": "T", "stock": {"M": 1}}).sizes == ("M",)  # sizes from stock


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": ""}, "a product needs a text 'id'"),
        ({"title": None}, "product 'P1': field 'title' is missing"),
        ({"price": -1}, "product 'P1': field 'price' must be a non-negative number"),
        ({"price": "cheap"}, "product 'P1': field 'price' must be a non-negative number"),
        ({"stock": {"S": 1.5}}, "product 'P1': field 'stock' must map sizes to whole numbers"),
        ({"size_chart": {"S": "98"}}, "product 'P1': field 'size_chart' must map sizes"),
        ({"material": 3}, "product 'P1': field 'material' must be a text or {zh, en} texts"),
        ({"colour": ["red"]}, "product 'P1': unknown field 'colour'"),
        ({"sizes": "S,M"}, "product 'P1': field 'sizes' must be a list of texts"),
    ],
)
def test_errors_name_the_product_and_field(change, message):
    data = {**COAT, **change}
    if data.get("title") is None:
        data.pop("title")
    with pytest.raises(CatalogError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Product.from_dict(data)


def test_memory_catalog_keeps_tenants_apart():
    catalog: Catalog = MemoryCatalog({"shop1": [Product.from_dict(COAT)]})
    assert catalog.get("shop1", "P1").title.zh == "大衣"
    assert catalog.get("shop2", "P1") is None and catalog.get("shop1", "P2") is None
    catalog.put("shop2", Product.from_dict({**COAT, "price": 1}))
    assert catalog.get("shop2", "P1").price == 1.0 and catalog.get("shop1", "P1").price == 899.0
    catalog.remove("shop2", "P1")
    assert catalog.get("shop2", "P1") is None


def test_sample_catalog_loads(tmp_path):
    catalog = MemoryCatalog.load(SAMPLE)
    coat = catalog.get("shop1", "P1001")
    assert coat is not None and coat.stock["M"] == 0 and coat.size_chart["L"]["胸围"] == "108cm"
    bad = tmp_path / "bad.yaml"
    bad.write_text("shop1: {id: P1}\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="tenant 'shop1' must have a list"):
        MemoryCatalog.load(bad)
