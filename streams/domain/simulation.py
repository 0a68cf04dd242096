"""A realistic, seeded shopper simulation across web, app, email and store (pure; for the demo and tests).

Customers have several cookies, one or two app devices, one or two email addresses (written with the
case and whitespace real data has), a loyalty card for some and a customer id when registered. Products
carry a web SKU, an app product id and a store EAN-13. The stream has web and app sessions with
product views, carts, orders and refunds, logins that identify, weekly email campaigns with sends,
opens and clicks (a click starts a web session), and store baskets with returns. Output is what a
source would POST to the collector: Segment-spec call dicts, tagged with their channel, in time order.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streams.domain.events import ChannelName

Call = dict[str, Any]

_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[float, float]]] = {
    "shoes": (("Runner", "Trail Shoe", "Loafer", "Sneaker", "Boot"), ("Stride", "Peakline"), (49.0, 160.0)),
    "apparel": (("Hoodie", "Rain Jacket", "Tee", "Chinos", "Scarf"), ("Northwind", "Linea"), (15.0, 190.0)),
    "beauty": (("Face Cream", "Serum", "Shampoo", "Lip Balm"), ("Aurel", "Botanica"), (4.0, 60.0)),
    "home": (("Mug", "Throw Blanket", "Candle", "Lamp"), ("Hearth", "Nordhem"), (6.0, 120.0)),
    "electronics": (("Earbuds", "Charger", "Smartwatch", "Speaker"), ("Voltix", "Sonora"), (19.0, 299.0)),
}
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36",
)
_DEVICES = (("ios", "Apple", "iPhone15,2"), ("ios", "Apple", "iPad13,1"), ("android", "Google", "Pixel 8"))
_FIRST = ("ann", "bob", "carla", "dev", "eva", "finn", "gita", "hugo", "ines", "jon", "kira", "liam")
_DOMAINS = ("gmail.com", "outlook.com", "yahoo.co.uk", "icloud.com", "proton.me")
_STORES = ("LDN-01", "LDN-02", "MAN-01", "BHM-01", "GLA-01")
_CAMPAIGNS = ("weekly-picks", "new-arrivals", "flash-sale", "back-in-stock")


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    brand: str
    price: float
    web_sku: str
    app_product_id: str
    ean: str


@dataclass
class Customer:
    index: int
    user_id: str | None
    emails: list[str]
    phone: str | None
    loyalty_card: str | None
    cookies: list[str]
    devices: list[tuple[str, str, tuple[str, str, str]]]  # device id, advertising id, (type, maker, model)
    esp_ids: dict[str, str] = field(default_factory=dict)
    orders: list[tuple[datetime, str, list[Product]]] = field(default_factory=list)


def ean13(twelve_digits: str) -> str:
    """The EAN-13 for 12 digits (adds the check digit)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(twelve_digits))
    return twelve_digits + str((10 - total % 10) % 10)


def catalog(seed: int = 0) -> list[Product]:
    """About 40 products, each with its web SKU, app id and store EAN."""
    rng = random.Random(seed)
    products: list[Product] = []
    for category, (names, brands, (low, high)) in _CATEGORIES.items():
        for brand in brands:
            for name in rng.sample(names, k=min(4, len(names))):
                n = len(products) + 1
                products.append(
                    Product(
                        product_id=f"P{n:04d}",
                        name=f"{brand} {name}",
                        category=category,
                        brand=brand,
                        price=round(rng.uniform(low, high), 2),
                        web_sku=f"SKU-{category[:3].upper()}-{n:05d}",
                        app_product_id=f"app-{n * 7919 % 100000:05d}",
                        ean=ean13(f"50{rng.randrange(10**10):010d}"),
                    )
                )
    return products


def consent_banner(index: int) -> dict[str, bool] | None:
    """What customer ``index`` answered the web shop's consent banner, sent with every web event as
    Segment's consent wrappers do: one in ten never answered; of the rest, three in four accept
    advertising (with Google's Consent Mode v2 signals) and two in three analytics. Derived from the
    index alone, so it draws nothing from the stream's random generator."""
    if index % 10 == 9:
        return None
    ads = index % 4 != 0
    return {
        "Advertising": ads,
        "ad_user_data": ads,
        "ad_personalization": ads,
        "Analytics": index % 3 != 0,
    }


def _customer(rng: random.Random, index: int) -> Customer:
    first = rng.choice(_FIRST)
    registered = rng.random() < 0.7
    emails = [f"{first}.{index}@{rng.choice(_DOMAINS)}"]
    if rng.random() < 0.3:
        emails.append(f"{first}{index}.work@{rng.choice(_DOMAINS)}")
    devices = []
    if rng.random() < 0.6:
        for _ in range(1 if rng.random() < 0.8 else 2):
            devices.append(
                (
                    str(uuid.UUID(int=rng.getrandbits(128))).upper(),
                    str(uuid.UUID(int=rng.getrandbits(128))),
                    rng.choice(_DEVICES),
                )
            )
    return Customer(
        index=index,
        user_id=f"C{100000 + index}" if registered else None,
        emails=emails,
        phone=f"07{rng.randrange(10**9):09d}" if rng.random() < 0.4 else None,
        loyalty_card=f"6337 {rng.randrange(10**4):04d} {rng.randrange(10**4):04d}"
        if rng.random() < 0.5
        else None,
        cookies=[uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(rng.randint(1, 3))],
        devices=devices,
    )


def _messy(rng: random.Random, email: str) -> str:
    """How addresses arrive from forms and exports: stray case and whitespace."""
    roll = rng.random()
    if roll < 0.15:
        return email.upper()
    if roll < 0.3:
        return f" {email.capitalize()} "
    return email


class _Day:
    def __init__(self, rng: random.Random, products: list[Product], day: datetime, stream: str) -> None:
        self.rng = rng
        self.products = products
        self.day = day
        self.calls: list[tuple[datetime, ChannelName, Call]] = []
        self._prefix = f"{stream}-{day:%Y%m%d}-"

    def add(self, at: datetime, channel: ChannelName, call: Call) -> None:
        # The stream's id, the simulated day and the call's place in it: the same for the same stream,
        # whenever and however often it is sent, and unique within it.
        call["messageId"] = f"{self._prefix}{len(self.calls):05d}"
        call["timestamp"] = at.isoformat(timespec="milliseconds")
        self.calls.append((at, channel, call))

    def moment(self, evening_bias: bool = False) -> datetime:
        hour = self.rng.choice((18, 19, 20, 21, 22)) if evening_bias else self.rng.randint(7, 22)
        return self.day + timedelta(
            hours=hour, minutes=self.rng.randint(0, 59), seconds=self.rng.randint(0, 59)
        )


def _product_props(product: Product, channel: ChannelName) -> dict[str, Any]:
    props: dict[str, Any] = {
        "product_id": product.app_product_id if channel == "app" else product.product_id,
        "name": product.name,
        "category": product.category,
        "brand": product.brand,
        "price": product.price,
        "currency": "GBP",
    }
    if channel == "web":
        props["sku"] = product.web_sku
    return props


def _session(day: _Day, customer: Customer, channel: ChannelName, campaign: str | None = None) -> None:
    rng = day.rng
    at = day.moment(evening_bias=channel == "app" and rng.random() < 0.6)
    base: Call = {
        "context": {
            "locale": "en-GB",
            "ip": f"81.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        }
    }
    if channel == "web":
        base["anonymousId"] = rng.choice(customer.cookies)
        base["context"]["userAgent"] = rng.choice(_USER_AGENTS)
        preferences = consent_banner(customer.index)
        if preferences is not None:
            base["context"]["consent"] = {"categoryPreferences": preferences}
        if campaign:
            base["context"]["campaign"] = {"name": campaign, "source": "esp", "medium": "email"}
    else:
        device_id, ad_id, (kind, maker, model) = rng.choice(customer.devices)
        base["context"]["device"] = {
            "id": device_id,
            "advertisingId": ad_id,
            "type": kind,
            "manufacturer": maker,
            "model": model,
            "adTrackingEnabled": customer.index % 5 != 0,
        }
        base["anonymousId"] = device_id.lower()
    logged_in = customer.user_id is not None and rng.random() < (0.8 if channel == "app" else 0.45)

    def call(**fields: Any) -> Call:
        merged = {**base, **fields, "context": dict(base["context"])}
        if logged_in:
            merged["userId"] = customer.user_id
        return merged

    def step() -> datetime:
        nonlocal at
        at += timedelta(seconds=rng.randint(5, 180))
        return at

    if channel == "web":
        day.add(
            at,
            "web",
            call(
                type="page",
                name="Home",
                context={**base["context"], "page": {"path": "/", "url": "https://shop.example/"}},
            ),
        )
    else:
        day.add(at, "app", call(type="screen", name="Home"))
    if logged_in and rng.random() < 0.5:
        email = _messy(rng, rng.choice(customer.emails))
        traits: dict[str, Any] = {"email": email, "first_name": customer.emails[0].split(".")[0].title()}
        if customer.phone:
            traits["phone"] = customer.phone
        day.add(step(), channel, call(type="identify", traits=traits))
    category = rng.choice(list(_CATEGORIES))
    in_category = [p for p in day.products if p.category == category]
    viewed = rng.sample(in_category, k=min(len(in_category), rng.randint(1, 4)))
    if channel == "web":
        page = {"path": f"/c/{category}", "url": f"https://shop.example/c/{category}"}
        day.add(
            step(),
            "web",
            call(
                type="page",
                name="Category",
                properties={"category": category},
                context={**base["context"], "page": page},
            ),
        )
    for product in viewed:
        day.add(
            step(),
            channel,
            call(type="track", event="Product Viewed", properties=_product_props(product, channel)),
        )
    if rng.random() > 0.4:
        return
    cart = rng.sample(viewed, k=rng.randint(1, len(viewed)))
    for product in cart:
        day.add(
            step(),
            channel,
            call(type="track", event="Product Added", properties=_product_props(product, channel)),
        )
    if rng.random() > 0.55:
        return
    day.add(step(), channel, call(type="track", event="Checkout Started", properties={"currency": "GBP"}))
    if rng.random() > 0.65:
        return
    order_id = f"{channel[0].upper()}{rng.randrange(10**9):09d}"
    lines = [{**_product_props(p, channel), "quantity": rng.choice((1, 1, 1, 2))} for p in cart]
    total = round(sum(line["price"] * line["quantity"] for line in lines), 2)
    order_at = step()
    day.add(
        order_at,
        channel,
        call(
            type="track",
            event="Order Completed",
            properties={"order_id": order_id, "total": total, "currency": "GBP", "products": lines},
        ),
    )
    customer.orders.append((order_at, order_id, cart))


def _email_campaign(day: _Day, customers: list[Customer], campaign: str) -> None:
    rng = day.rng
    send_at = day.day + timedelta(hours=9, minutes=30)
    for customer in customers:
        for email in customer.emails[:1]:
            esp_id = customer.esp_ids.setdefault(email, f"sub_{rng.getrandbits(40):010x}")
            ids = {"email": _messy(rng, email), "espSubscriberId": esp_id}
            ctx = {"campaign": {"name": campaign, "source": "esp", "medium": "email"}}
            props = {"campaign_id": campaign, "subject": f"{campaign.replace('-', ' ').title()} for you"}
            day.add(
                send_at + timedelta(seconds=customer.index % 600),
                "email",
                {
                    "type": "track",
                    "event": "Email Sent",
                    "identifiers": ids,
                    "context": ctx,
                    "properties": props,
                },
            )
            if rng.random() < 0.35:
                opened = send_at + timedelta(minutes=rng.randint(5, 600))
                day.add(
                    opened,
                    "email",
                    {
                        "type": "track",
                        "event": "Email Opened",
                        "identifiers": dict(ids),
                        "context": dict(ctx),
                        "properties": dict(props),
                    },
                )
                if rng.random() < 0.3:
                    day.add(
                        opened + timedelta(seconds=rng.randint(3, 60)),
                        "email",
                        {
                            "type": "track",
                            "event": "Email Link Clicked",
                            "identifiers": dict(ids),
                            "context": dict(ctx),
                            "properties": {**props, "url": "https://shop.example/"},
                        },
                    )
                    _session(day, customer, "web", campaign=campaign)


def _store_visit(day: _Day, customer: Customer, returning: bool) -> None:
    rng = day.rng
    at = day.moment()
    store_id = rng.choice(_STORES)
    txn = f"{store_id}-{rng.randrange(10**8):08d}"
    base: Call = {
        "identifiers": {"loyaltyCard": customer.loyalty_card},
        "store": {"storeId": store_id, "terminalId": f"T{rng.randint(1, 8)}", "transactionId": txn},
    }
    if returning and customer.orders:
        _, order_id, items = rng.choice(customer.orders)
        product = rng.choice(items)
        day.add(
            at,
            "store",
            {
                **base,
                "type": "track",
                "event": "Product Returned",
                "properties": {"order_id": order_id, "currency": "GBP"},
                "lines": [{"ean": product.ean, "quantity": 1, "unitPrice": product.price, "currency": "GBP"}],
            },
        )
        return
    basket = rng.sample(day.products, k=rng.randint(1, 4))
    quantities = [rng.choice((1, 1, 2)) for _ in basket]
    lines: list[dict[str, Any]] = [
        {"ean": p.ean, "quantity": q, "unitPrice": p.price, "currency": "GBP"}
        for p, q in zip(basket, quantities, strict=True)
    ]
    total = round(sum(q * p.price for p, q in zip(basket, quantities, strict=True)), 2)
    day.add(
        at,
        "store",
        {
            **base,
            "type": "track",
            "event": "Order Completed",
            "properties": {"order_id": txn, "total": total, "currency": "GBP"},
            "lines": lines,
        },
    )
    customer.orders.append((at, txn, basket))


def _refunds(day: _Day, customers: list[Customer]) -> None:
    rng = day.rng
    for customer in customers:
        for ordered_at, order_id, items in customer.orders:
            if (
                ordered_at.date() == (day.day - timedelta(days=3)).date()
                and order_id[0] in "WA"
                and rng.random() < 0.08
            ):
                channel: ChannelName = "web" if order_id[0] == "W" else "app"
                if channel == "app" and not customer.devices:
                    continue
                refund: Call = {
                    "type": "track",
                    "event": "Order Refunded",
                    "properties": {
                        "order_id": order_id,
                        "currency": "GBP",
                        "products": [_product_props(p, channel) for p in items[:1]],
                    },
                }
                if customer.user_id:
                    refund["userId"] = customer.user_id
                refund["anonymousId"] = (
                    customer.cookies[0] if channel == "web" else customer.devices[0][0].lower()
                )
                day.add(day.moment(), channel, refund)


def stream_id(seed: int, customers: int, days: int) -> str:
    """What every messageId of ``generate(seed, customers, days, …)`` starts with."""
    return f"sim{seed}-{customers}x{days}"


def generate(seed: int, customers: int, days: int, start: datetime) -> Iterator[tuple[ChannelName, Call]]:
    """Segment-spec calls tagged with their channel, in time order, ``days`` days from ``start``.

    The same arguments give the same calls, messageIds included; each messageId is ``stream_id(…)``, the
    simulated day's date and the call's place in that day. The stream depends on the calendar (weekends
    differ), so a ``start`` on another date is another stream with other ids.
    """
    rng = random.Random(seed)
    stream = stream_id(seed, customers, days)
    products = catalog(seed)
    people = [_customer(rng, i) for i in range(customers)]
    first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for offset in range(days):
        day = _Day(rng, products, first_day + timedelta(days=offset), stream)
        weekend = day.day.weekday() >= 5
        for customer in people:
            if rng.random() < (0.35 if weekend else 0.22):
                _session(day, customer, "web")
            if customer.devices and rng.random() < 0.18:
                _session(day, customer, "app")
            if customer.loyalty_card and rng.random() < (0.1 if weekend else 0.05):
                _store_visit(day, customer, returning=rng.random() < 0.1)
        # Anonymous visitors who never identify: a third of the web traffic in real shops.
        for _ in range(max(1, customers // 3)):
            visitor = Customer(
                index=-1,
                user_id=None,
                emails=["x@x"],
                phone=None,
                loyalty_card=None,
                cookies=[uuid.UUID(int=rng.getrandbits(128)).hex],
                devices=[],
            )
            if rng.random() < 0.3:
                _session(day, visitor, "web")
        if offset % 7 == 1:
            _email_campaign(day, people, _CAMPAIGNS[(offset // 7) % len(_CAMPAIGNS)])
        _refunds(day, people)
        day.calls.sort(key=lambda item: item[0])
        for _, channel, call in day.calls:
            yield channel, call
