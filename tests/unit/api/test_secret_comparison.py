"""Every secret the HTTP services check is compared with every known one, in constant time, as digests
of one length: replacing a check with ``==``, ``in`` or a dictionary lookup makes these tests fail (no
``hmac.compare_digest`` call, or fewer calls than known secrets, or inputs whose lengths differ)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streams.api.credentials import SecretTable
from streams.api.destinations import DestinationRegistry
from streams.api.intake import CollectorError, Intake
from streams.api.persons import create_persons_app
from streams.settings import Settings, Source

KEYS = ("wk_first_key_0001", "wk_second_key_02", "wk_third_key_long_0003")
TOKENS = ("token-one-0001", "token-two-0002-longer", "token-three-3")


class Comparisons:
    """Every ``hmac.compare_digest`` call while installed: the lengths of both sides."""

    def __init__(self) -> None:
        self.lengths: list[tuple[int, int]] = []

    def __call__(self, a: bytes | str, b: bytes | str) -> bool:
        self.lengths.append((len(a), len(b)))
        return _real_compare_digest(a, b)

    def assert_constant_time(self, known: int) -> None:
        assert len(self.lengths) == known, f"{len(self.lengths)} comparisons for {known} known secrets"
        assert len({length for pair in self.lengths for length in pair}) == 1, self.lengths


_real_compare_digest = hmac.compare_digest


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> Iterator[Comparisons]:
    counter = Comparisons()
    monkeypatch.setattr(hmac, "compare_digest", counter)
    yield counter


@pytest.mark.parametrize("given", [KEYS[0], KEYS[2], "wk_unknown_key_0000"])
def test_write_key_is_compared_with_every_key(comparisons: Comparisons, given: str) -> None:
    sources = {key: Source(name=f"s{i}", channel="web") for i, key in enumerate(KEYS)}
    intake = Intake(Settings(_env_file=None, sources=sources))
    comparisons.lengths.clear()
    try:
        sender = intake.authenticate(given, None)
    except CollectorError as exc:
        assert exc.status == 401 and given not in KEYS
    else:
        assert sender.write_key == given
    comparisons.assert_constant_time(len(KEYS))


def test_write_key_in_the_body_is_compared_the_same_way(comparisons: Comparisons) -> None:
    intake = Intake(Settings(_env_file=None, sources={key: Source(name="s", channel="web") for key in KEYS}))
    comparisons.lengths.clear()
    assert intake.authenticate(None, {"writeKey": KEYS[1]}).write_key == KEYS[1]
    comparisons.assert_constant_time(len(KEYS))


def _unreachable_clickhouse() -> object:
    raise OSError("no ClickHouse in this test")


@pytest.fixture
def read_api(tmp_path: Path) -> TestClient:
    settings = Settings(_env_file=None, api_tokens=",".join(TOKENS), destinations_dir=tmp_path)
    return TestClient(create_persons_app(settings, client_factory=_unreachable_clickhouse))  # type: ignore[arg-type]


@pytest.mark.parametrize(("given", "known"), [(TOKENS[0], True), (TOKENS[2], True), ("nope-0000", False)])
def test_bearer_token_is_compared_with_every_token(
    read_api: TestClient, comparisons: Comparisons, given: str, known: bool
) -> None:
    response = read_api.get(
        "/v1/persons/lookup",
        params={"identifier": "email:a@b.example"},
        headers={"Authorization": f"Bearer {given}"},
    )
    # Past the token check, the lookup finds no ClickHouse (503); before it, 401.
    assert response.status_code == (503 if known else 401)
    comparisons.assert_constant_time(len(TOKENS))


def _destination_yaml(destination_id: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"id: {destination_id}\nkind: generic\napi_key_sha256: {digest}\naudiences: [{{segment: vip}}]\n"


@pytest.mark.parametrize(
    ("given", "status"), [("dest-key-b-0002", 403), ("dest-key-c-03", 503), ("other", 401)]
)
def test_destination_key_is_compared_with_every_destination(
    tmp_path: Path, comparisons: Comparisons, given: str, status: int
) -> None:
    keys = {"dest-a": "dest-key-a-000001", "dest-b": "dest-key-b-0002", "dest-c": "dest-key-c-03"}
    for destination_id, key in keys.items():
        (tmp_path / f"{destination_id}.yaml").write_text(_destination_yaml(destination_id, key))
    settings = Settings(_env_file=None, api_tokens="unused-token-0001")
    app = create_persons_app(
        settings,
        client_factory=_unreachable_clickhouse,  # type: ignore[arg-type]
        destinations=DestinationRegistry(tmp_path),
    )
    comparisons.lengths.clear()
    response = TestClient(app).get(
        "/v1/destinations/dest-c/audiences", headers={"Authorization": f"Bearer {given}"}
    )
    # dest-c's own key passes (then no ClickHouse: 503); dest-b's key is another destination's (403).
    assert response.status_code == status
    comparisons.assert_constant_time(len(keys))


def test_secret_table_compares_every_entry_after_a_match(comparisons: Comparisons) -> None:
    table = SecretTable([("a-secret", 1), ("another-secret-longer", 2), ("third", 3)])
    assert table.find("a-secret") == 1
    assert table.find("third") == 3
    assert table.find("") is None
    assert len(comparisons.lengths) == 6
