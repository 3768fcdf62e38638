"""Answering a question about one product from its catalog entry.

The intent classifier only says "this is about the product"; which attribute the shopper asks for
(material, care, stock, price, sizes, colours) is read here from the words of the question, and the
answer is written from the product's entry in the shopper's language. A question that names no
attribute gets a short summary of the product.
"""

from __future__ import annotations

import re

from .catalog import Product
from .text import normalise

# Attribute -> words that ask for it (matched in normalised text; English as whole words).
ASPECTS: dict[str, tuple[str, ...]] = {
    "care": ("洗", "保养", "熨", "烘干", "缩水", "掉色", "wash", "washing", "care", "dry clean", "tumble", "iron", "shrink", "fade"),
    "material": ("面料", "材质", "成分", "料子", "布料", "纯棉", "棉", "羊毛", "真丝", "皮", "涤纶", "扎人", "透气",
                 "厚", "薄", "暖和", "mianliao", "material", "fabric", "made of", "made from", "cotton", "wool",
                 "leather", "silk", "itchy", "breathable", "thick", "warm"),
    "stock": ("有货", "现货", "库存", "还有", "补货", "断码", "缺货", "卖完", "stock", "available", "restock", "sold out"),
    "price": ("多少钱", "价格", "价钱", "啥价", "什么价", "售价", "几块", "price", "cost", "how much"),
    "sizes": ("尺码", "码数", "尺寸", "大小", "size", "sizes", "measurements"),
    "colours": ("颜色", "色", "colour", "colours", "color", "colors"),
}
_SIZE = re.compile(r"(?<![a-z0-9])(xxxl|xxl|xl|xs|s|m|l|[234]xl|均码|one size|3[4-9]|4[0-6])(?![a-z0-9])", re.IGNORECASE)
_SIZE_ZH = re.compile(r"(xxxl|xxl|xl|xs|s|m|l|[234]xl|3[4-9]|4[0-6])\s*(码|号)", re.IGNORECASE)


def aspects(question: str) -> list[str]:
    """The attributes ``question`` asks about, in ``ASPECTS`` order (empty: none named)."""
    text = normalise(question)
    found = []
    for aspect, words in ASPECTS.items():
        for word in words:
            if (re.search(rf"\b{re.escape(word)}\b", text) if word.isascii() else word in text):
                found.append(aspect)
                break
    return found


def asked_size(question: str, product: Product) -> str | None:
    """The product size the question names ("M码还有吗", "is the medium available"), if any."""
    text = normalise(question)
    text = text.replace("medium", "m").replace("large", "l").replace("small", "s")
    sizes = {size.lower(): size for size in product.sizes}
    for pattern in (_SIZE_ZH, _SIZE):
        for match in pattern.finditer(text):
            size = sizes.get(match.group(1).lower())
            if size:
                return size
    return None


def answer(product: Product, question: str, language: str) -> str:
    """The answer to ``question`` about ``product``, in ``language`` ("zh" or "en")."""
    return describe(product, aspects(question) or ["summary"], language, question)


def describe(product: Product, wanted: list[str], language: str, question: str = "") -> str:
    """``product``'s name and the attributes ``wanted`` (keys of ``ASPECTS``, or "summary")."""
    zh = language != "en"
    name = product.title.in_language(language)
    parts = [f"「{name}」" if zh else f"{name}:"]
    for aspect in wanted:
        parts.append(_ASPECT_WRITERS[aspect](product, question, zh))
    return ("" if zh else " ").join(parts)


def _material(product: Product, question: str, zh: bool) -> str:
    if product.material is None:
        return "的面料信息商品页暂未标注，可以转人工帮您确认哦。" if zh else "the material isn't listed yet; an agent can check for you."
    return f"面料：{product.material.zh}。" if zh else f"material: {product.material.en}."


def _care(product: Product, question: str, zh: bool) -> str:
    if product.care is None:
        return "洗涤方式请以吊牌上的洗标为准哦。" if zh else "please follow the care label inside."
    return f"洗涤保养：{product.care.zh}。" if zh else f"care: {product.care.en}."


def _stock(product: Product, question: str, zh: bool) -> str:
    if not product.stock:
        return "库存以商品页显示为准哦。" if zh else "stock is shown on the product page."
    size = asked_size(question, product)
    if size is not None:
        units = product.stock.get(size, 0)
        if zh:
            return f"{size}码现在有货（{units}件）。" if units else f"{size}码暂时缺货，可以点商品页「到货提醒」哦。"
        return f"size {size} is in stock ({units} left)." if units else f"size {size} is out of stock for now; tap \"Notify me\" on the product page."
    listing = " / ".join(f"{s} {'有货' if n else '缺货'}" if zh else f"{s} {'in stock' if n else 'sold out'}"
                         for s, n in ((s, product.stock.get(s, 0)) for s in (product.sizes or tuple(product.stock))))
    return f"库存：{listing}。" if zh else f"stock: {listing}."


def _price(product: Product, question: str, zh: bool) -> str:
    if product.price is None:
        return "价格以商品页显示为准哦。" if zh else "the price is shown on the product page."
    amount = f"¥{product.price:g}" if product.currency == "CNY" else f"{product.price:g} {product.currency}"
    return f"价格：{amount}（以结算页为准，可叠加优惠券）。" if zh else f"price: {amount} (checkout shows the final price after coupons)."


def _sizes(product: Product, question: str, zh: bool) -> str:
    if not product.sizes:
        return "尺码请看商品页的尺码表哦。" if zh else "see the size chart on the product page."
    rows = []
    for size in product.sizes:
        measures = product.size_chart.get(size)
        if measures:
            rows.append(f"{size}（" + "，".join(f"{k}{v}" for k, v in measures.items()) + "）" if zh
                        else f"{size} (" + ", ".join(f"{k} {v}" for k, v in measures.items()) + ")")
        else:
            rows.append(size)
    return ("尺码：" + "；".join(rows) + "。") if zh else ("sizes: " + "; ".join(rows) + ".")


def _colours(product: Product, question: str, zh: bool) -> str:
    if not product.colours:
        return "颜色请看商品页哦。" if zh else "the colours are shown on the product page."
    return f"颜色：{'、'.join(product.colours)}。" if zh else f"colours: {', '.join(product.colours)}."


def _summary(product: Product, question: str, zh: bool) -> str:
    parts = []
    if product.description is not None:
        parts.append((product.description.zh + "。") if zh else (product.description.en + "."))
    for writer, present in ((_material, product.material), (_price, product.price), (_stock, product.stock)):
        if present:
            parts.append(writer(product, question, zh))
    return ("" if zh else " ").join(parts) or (_sizes(product, question, zh))


_ASPECT_WRITERS = {
    "material": _material,
    "care": _care,
    "stock": _stock,
    "price": _price,
    "sizes": _sizes,
    "colours": _colours,
    "summary": _summary,
}
