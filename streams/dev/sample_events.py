"""Realistic, varied event records for the ingest benchmark and the sink tests.

The mix follows a retailer's traffic: mostly web page views and product views, app screens, email
opens and clicks, and purchases in every channel (web SKUs, app product ids, store EANs with a
loyalty card). Records are plain dicts for ``EVENT_CODEC.encode`` (timestamps in epoch milliseconds).
Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.settings import CHANNELS, Channel

_PAGES = ("/", "/c/shoes", "/c/jackets", "/p/sku-1001", "/p/sku-2002", "/cart", "/checkout", "/account")
_AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
)
_LOCALES = ("de-DE", "fr-FR", "en-GB", "nl-NL")
# Out of 20: channel shares of a typical retailer's event volume.
_CHANNEL_MIX: tuple[Channel, ...] = ("web",) * 10 + ("app",) * 5 + ("email",) * 3 + ("store",) * 2


def channel_of(index: int) -> Channel:
    return _CHANNEL_MIX[(index * 7) % len(_CHANNEL_MIX)]


def _base(run: str, index: int, channel: Channel, timestamp_ms: int) -> dict[str, Any]:
    return {
        "messageId": f"{run}-{index}",
        "type": "track",
        "event": None,
        "name": None,
        "anonymousId": f"anon-{run}-{index % 50_000}",
        "userId": f"cust-{index % 20_000}" if index % 3 == 0 else None,
        "previousId": None,
        "groupId": None,
        "traits": None,
        "properties": None,
        "context": {
            "channel": channel,
            "source": f"bench-{channel}",
            "ip": f"198.51.100.{index % 250}",
            "userAgent": _AGENTS[index % len(_AGENTS)],
            "locale": _LOCALES[index % len(_LOCALES)],
            "timezone": "Europe/Berlin",
            "device": None,
            "page": None,
            "campaign": None,
            "library": {"name": "bench", "version": "1.0"},
        },
        "identifiers": {
            "email": None,
            "phone": None,
            "espSubscriberId": None,
            "loyaltyCard": None,
            "crmId": None,
        },
        "store": None,
        "lines": [],
        "timestamp": timestamp_ms,
        "sentAt": timestamp_ms + 150,
        "receivedAt": timestamp_ms + 300,
    }


def _line(kind: str, n: int) -> dict[str, Any]:
    return {
        "sku": f"SKU-{n % 5000:05d}" if kind == "sku" else None,
        "ean": f"40{n % 10**11:011d}" if kind == "ean" else None,
        "appProductId": f"app-{n % 5000}" if kind == "app" else None,
        "quantity": float(1 + n % 3),
        "unitPrice": round(4.99 + (n % 200) * 0.5, 2),
        "currency": "EUR",
    }


def sample_event(run: str, index: int, timestamp_ms: int, channel: Channel | None = None) -> dict[str, Any]:
    """The ``index``-th event of a run: deterministic, with messageId ``f"{run}-{index}"``."""
    channel = channel or channel_of(index)
    record = _base(run, index, channel, timestamp_ms)
    context = record["context"]
    pick = (index // len(_CHANNEL_MIX)) % 20
    if channel == "web":
        path = _PAGES[index % len(_PAGES)]
        context["page"] = {
            "path": path,
            "referrer": "https://www.google.com/" if index % 4 == 0 else None,
            "search": None,
            "title": "Shop",
            "url": f"https://shop.example{path}",
        }
        if index % 5 == 0:
            context["campaign"] = {
                "name": "summer-sale",
                "source": "newsletter",
                "medium": "email",
                "term": None,
                "content": None,
            }
        if pick < 10:
            record.update(type="page", name="Product" if path.startswith("/p/") else "Page")
        elif pick < 17:
            record.update(
                event="Product Viewed",
                properties=orjson.dumps({"sku": f"SKU-{index % 5000:05d}", "price": 29.9}).decode(),
            )
        elif pick < 19:
            record.update(type="identify", userId=f"cust-{index % 20_000}")
            record["identifiers"]["email"] = f"cust-{index % 20_000}@example.com"
            record["traits"] = orjson.dumps({"plan": "gold", "newsletter": True}).decode()
        else:
            record["event"] = "Order Completed"
            record["lines"] = [_line("sku", index + n) for n in range(1 + index % 3)]
            record["properties"] = orjson.dumps({"orderId": f"W{index}", "revenue": 59.8}).decode()
    elif channel == "app":
        context["device"] = {
            "id": f"dev-{index % 30_000}",
            "advertisingId": f"ad-{index % 30_000}",
            "adTrackingEnabled": index % 2 == 0,
            "type": "ios" if index % 2 else "android",
            "manufacturer": "Apple" if index % 2 else "Google",
            "model": "iPhone15,2" if index % 2 else "Pixel 8",
        }
        if pick < 12:
            record.update(type="screen", name="Product Detail")
        elif pick < 19:
            record.update(event="Added to Cart")
        else:
            record["event"] = "Order Completed"
            record["lines"] = [_line("app", index + n) for n in range(1 + index % 2)]
    elif channel == "email":
        record["identifiers"]["email"] = f"cust-{index % 20_000}@example.com"
        record["identifiers"]["espSubscriberId"] = f"esp-{index % 20_000}"
        record.update(
            event="Email Opened" if pick < 14 else "Email Link Clicked",
            properties=orjson.dumps({"campaign": "summer-sale", "mailing": index % 40}).decode(),
        )
    else:
        record["identifiers"]["loyaltyCard"] = f"LC{index % 20_000:08d}"
        record["store"] = {
            "storeId": f"store-{index % 40}",
            "terminalId": f"pos-{index % 6}",
            "transactionId": f"T{index}",
        }
        record.update(event="Order Completed")
        record["lines"] = [_line("ean", index + n) for n in range(1 + index % 4)]
    return record


def partition_key(record: dict[str, Any]) -> bytes:
    """The key the collector would use: userId, then channel identifiers, then anonymousId."""
    ids = record["identifiers"]
    device = record["context"]["device"] or {}
    for value in (
        record["userId"],
        ids["crmId"],
        ids["loyaltyCard"],
        ids["email"],
        ids["espSubscriberId"],
        ids["phone"],
        device.get("id"),
        record["anonymousId"],
    ):
        if value:
            return str(value).encode()
    return str(record["messageId"]).encode()


__all__ = ["CHANNELS", "channel_of", "partition_key", "sample_event"]
