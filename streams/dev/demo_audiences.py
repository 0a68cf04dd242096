"""The demo's last act: what an ad platform sees, over the real pull API.

A shopper (Dana) accepts the consent banner, views a pair of shoes without buying, buys them, and then
withdraws consent. After each step the demo pulls the deltas of two Google Ads audiences, as an ad
platform's connector would: the target audience ``browsed-shoes-not-bought`` and the suppression
audience ``already-purchased/product:<shoe>``. Dana's hashed email enters the target, moves from the
target to the suppression audience with the purchase (never advertise a product to someone who already
bought it), and leaves with the withdrawal.

The destinations are the example files of ``deploy/destinations`` with API keys made for this run (their
hashes replace the examples'), written to the state folder.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.domain.audiences.hashing import AudienceIdKind, Platform, hash_identifier

Report = Callable[[str], None]
Post = Callable[[list[dict[str, Any]]], None]

DESTINATIONS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "destinations"
DESTINATION = "google-ads"
TARGET = "browsed-shoes-not-bought"
SHOE = {"product_id": "P0001", "sku": "SKU-SHO-00001", "name": "Stride Loafer", "price": 57.04}
SUPPRESSION = f"already-purchased/product:{SHOE['product_id']}"
_KEY_LINE = "api_key_sha256:"
_WAIT_S = 90.0


def demo_destinations(state_dir: Path) -> tuple[Path, dict[str, str]]:
    """The example destinations with a fresh key each: (their folder, destination id -> key)."""
    folder = state_dir / "demo-destinations"
    folder.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    for source in sorted(DESTINATIONS_DIR.glob("*.yaml")):
        lines = source.read_text().splitlines()
        destination = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("id:"))
        keys[destination] = secrets.token_urlsafe(24)
        digest = hashlib.sha256(keys[destination].encode()).hexdigest()
        rewritten = [f"{_KEY_LINE} {digest}" if line.startswith(_KEY_LINE) else line for line in lines]
        (folder / source.name).write_text("\n".join(rewritten) + "\n")
    return folder, keys


@dataclass
class AdPlatform:
    """An ad platform's connector: pulls one destination's audiences over HTTP with its key."""

    port: int
    key: str
    cursors: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
            conn.request("GET", f"/v1/destinations/{DESTINATION}{path}{suffix}", headers=self._auth())
            response = conn.getresponse()
            body = orjson.loads(response.read() or b"{}")
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body.get('detail', body)}")
        result: dict[str, Any] = body
        return result

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def follow(self, audience: str, cursor: str) -> None:
        self.cursors[audience] = cursor

    def deltas(self, audience: str) -> tuple[set[str], set[str]]:
        """The hashes added and removed since the last pull of ``audience``."""
        page = self.get(f"/audiences/{audience}/deltas", cursor=self.cursors[audience], limit=10_000)
        self.cursors[audience] = page["cursor"]
        return {m["hash"] for m in page["add"]}, {m["hash"] for m in page["remove"]}


def run_ad_platform_tour(port: int, key: str, post: Post, report: Report) -> None:
    """Print the destination's audiences, then follow Dana through them (see the module docstring)."""
    platform = AdPlatform(port, key)
    listing = platform.get("/audiences")
    shown = [a for a in listing["audiences"] if a["members"]][:8]
    report(f"{DESTINATION}: {len(listing['audiences'])} audiences (cursor {listing['cursor']}); the largest:")
    for audience in sorted(shown, key=lambda a: -a["members"]):
        count = audience["members"]
        report(f"  {audience['audience_id']:44} {count:>6,} hashed identifier{'' if count == 1 else 's'}")
    first = platform.get(f"/audiences/{TARGET}/snapshot", page_size=5)
    sample = ", ".join(m["hash"][:12] + "…" for m in first["members"][:3])
    report(f"snapshot of {TARGET}, first page: {sample or 'empty'}")
    for audience in (TARGET, SUPPRESSION):
        platform.follow(audience, listing["cursor"])

    run = secrets.token_hex(3)
    email = f"dana.{run}@example.com"
    dana = hash_identifier(Platform.GOOGLE, AudienceIdKind.EMAIL, email)
    report(f"Dana ({email}) is {dana[:12]}… to Google")
    cookie = f"demo-dana-{run}"
    banner = {"Advertising": True, "ad_user_data": True, "ad_personalization": True, "Analytics": True}

    def call(kind: str, consent: dict[str, bool], **fields: Any) -> dict[str, Any]:
        return {
            "type": kind,
            "messageId": f"demo-dana-{run}-{secrets.token_hex(4)}",
            "anonymousId": cookie,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "context": {"consent": {"categoryPreferences": consent}, "page": {"path": "/shoes"}},
            **fields,
        }

    product = {**SHOE, "category": "shoes", "brand": "Stride", "currency": "GBP"}
    post(
        [
            call("identify", banner, traits={"email": email}),
            call("track", banner, event="Product Viewed", properties=product),
        ]
    )
    report("Dana accepts the banner and views the Stride Loafer, without buying:")
    _wait_for(platform, {TARGET: (dana, True)}, report)

    line = {"sku": SHOE["sku"], "quantity": 1, "unitPrice": SHOE["price"]}
    post(
        [call("track", banner, event="Order Completed", properties={"revenue": SHOE["price"]}, lines=[line])]
    )
    report("Dana buys the Stride Loafer:")
    _wait_for(platform, {TARGET: (dana, False), SUPPRESSION: (dana, True)}, report)

    refused = dict.fromkeys(banner, False)
    post([call("page", refused, name="Privacy settings")])
    report("Dana withdraws consent in the banner:")
    _wait_for(platform, {SUPPRESSION: (dana, False)}, report)


def _wait_for(platform: AdPlatform, expected: dict[str, tuple[str, bool]], report: Report) -> None:
    """Pull the deltas of each audience until every expected change was seen; print each."""
    started = time.monotonic()
    waiting = dict(expected)
    while waiting:
        for audience, (digest, added) in list(waiting.items()):
            adds, removes = platform.deltas(audience)
            if digest in (adds if added else removes):
                verb = "add" if added else "remove"
                seconds = time.monotonic() - started
                report(
                    f"  next delta of {audience}: {verb} {digest[:12]}… "
                    f"(+{len(adds)} / -{len(removes)} in all, {seconds:.1f}s after the event)"
                )
                del waiting[audience]
        if waiting:
            if time.monotonic() - started > _WAIT_S:
                missing = ", ".join(
                    f"{'add to' if a else 'remove from'} {name}" for name, (_, a) in waiting.items()
                )
                raise RuntimeError(f"no delta within {_WAIT_S:.0f}s: {missing}; see the worker log")
            time.sleep(0.5)
