"""Use cases as definitions: the hypothesis and KPIs of a personalisation, fixed before it starts.

A use case names its audience (a segment, or one subject of a per-product/category audience), the
channels that personalise for it, exactly one primary KPI and any guardrail KPIs (from
:data:`USECASE_KPIS`), the attribution window, the control share (at least 5 %), the significance level
and the minimum detectable effect. :func:`load_usecases` validates every file before returning
anything; each problem is one line, ``file: use case 'id': field: message``.

Starting a use case freezes :data:`REGISTERED_FIELDS` under a checksum (:meth:`UseCase.checksum`):
the analysis is then bound to what was stated before any data came in. A change of any of them is a
new version, a new analysis period.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from streams.domain.experiments.kpis import USECASE_KPIS
from streams.domain.yaml_documents import DocumentError, field_path, mappings

USECASE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SEGMENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
SUBJECT = re.compile(r"(product|category):[^\s*]+")
CHANNELS = ("email", "ads", "web", "app", "store", "push", "sms")
MIN_CONTROL_SHARE = 0.05
# What a running use case's analysis is bound to: changing any of them needs a new version.
REGISTERED_FIELDS = (
    "hypothesis",
    "audience",
    "primary_kpi",
    "guardrail_kpis",
    "attribution_window_days",
    "control_share",
    "significance",
    "minimum_detectable_effect",
    "power",
)


class UseCaseError(ValueError):
    """Invalid use cases; ``problems`` lists each one as ``file: use case 'id': field: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UseCaseAudience(_Frozen):
    """Where the arms come from: a whole segment, or one subject of a suppression audience."""

    segment: str
    subject: str | None = None

    @field_validator("segment")
    @classmethod
    def _segment(cls, value: str) -> str:
        if not SEGMENT_ID.fullmatch(value):
            raise ValueError(f"segment id {value!r}: use lower-case letters, digits, '.', '_' or '-'")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        if value is not None and not SUBJECT.fullmatch(value):
            raise ValueError(f"subject {value!r}: use 'product:<id>' or 'category:<name>' (one subject)")
        return value

    def matches(self, segment_id: str, subject: str | None) -> bool:
        return segment_id == self.segment and (subject or None) == self.subject

    def __str__(self) -> str:
        return self.segment if self.subject is None else f"{self.segment}/{self.subject}"


class UseCase(_Frozen):
    """A validated use case definition."""

    id: str
    name: str | None = None
    hypothesis: str = Field(min_length=20)
    audience: UseCaseAudience
    channels: tuple[str, ...]
    primary_kpi: str
    guardrail_kpis: tuple[str, ...] = ()
    attribution_window_days: int = Field(default=14, ge=1, le=365)
    control_share: float = Field(default=0.10, ge=MIN_CONTROL_SHARE, le=0.5)
    significance: float = Field(default=0.05, gt=0.0, le=0.2)
    minimum_detectable_effect: float = Field(gt=0.0, le=10.0)  # relative: 0.05 is +5 %
    power: float = Field(default=0.8, ge=0.5, le=0.99)
    # The primary KPI's expected control value for the plan; measured from the history when absent.
    baseline: float | None = Field(default=None, gt=0.0)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not USECASE_ID.fullmatch(value):
            raise ValueError(
                f"id {value!r}: use lower-case letters, digits, '-' or '_', starting with a letter or "
                "digit, at most 63 characters"
            )
        return value

    @field_validator("hypothesis")
    @classmethod
    def _hypothesis(cls, value: str) -> str:
        return " ".join(value.split())

    @field_validator("audience", mode="before")
    @classmethod
    def _audience(cls, value: Any) -> Any:
        return {"segment": value} if isinstance(value, str) else value

    @field_validator("channels", "guardrail_kpis", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one channel: " + ", ".join(CHANNELS))
        for channel in value:
            if channel not in CHANNELS:
                raise ValueError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
        if len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value

    @field_validator("primary_kpi")
    @classmethod
    def _primary(cls, value: str) -> str:
        return _kpi(value)

    @field_validator("guardrail_kpis")
    @classmethod
    def _guardrails(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        for kpi in value:
            _kpi(kpi)
            if kpi == info.data.get("primary_kpi"):
                raise ValueError(f"{kpi!r} is the primary KPI; do not list it as a guardrail too")
        if len(set(value)) != len(value):
            raise ValueError("a guardrail KPI is listed twice")
        return value

    def registration(self) -> dict[str, Any]:
        """The registered fields, as JSON values."""
        return self.model_dump(mode="json", include=set(REGISTERED_FIELDS))

    def checksum(self) -> str:
        """SHA-256 hex of the registered fields: equal checksums, the same analysis."""
        text = json.dumps(self.registration(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def changed_fields(self, registered: Mapping[str, Any]) -> list[str]:
        """The registered fields whose value differs from ``registered`` (a stored registration)."""
        mine = self.registration()
        return [name for name in REGISTERED_FIELDS if mine.get(name) != registered.get(name)]

    def kpis(self) -> list[str]:
        return [self.primary_kpi, *self.guardrail_kpis]


def _kpi(value: str) -> str:
    if value not in USECASE_KPIS:
        raise ValueError(f"unknown KPI {value!r}; known: {', '.join(USECASE_KPIS)}")
    return value


def load_usecases(
    files: Iterable[tuple[str, str]],
    *,
    segments: Mapping[str, str] | None = None,
) -> list[UseCase]:
    """Validate every use case of ``files`` (pairs of source name and YAML text), all or nothing.

    ``segments``: segment id -> kind ("segment" or "suppression"); when given, each audience is checked
    against it (a suppression audience needs one subject, a segment none).
    """
    problems: list[str] = []
    usecases: list[UseCase] = []
    origin: dict[str, str] = {}
    for source, text in files:
        try:
            documents = mappings(text, source=source, plural="usecases", noun="use case")
        except DocumentError as exc:
            problems.extend(exc.problems)
            continue
        for label, raw in documents:
            try:
                usecase = UseCase.model_validate(raw)
            except ValidationError as exc:
                for error in exc.errors():
                    message = error["msg"].removeprefix("Value error, ")
                    problems.append(f"{label}: {field_path(error['loc'])}: {message}")
                continue
            problems.extend(f"{label}: {line}" for line in _audience_problems(usecase, segments))
            if usecase.id in origin:
                problems.append(f"{label}: id: id {usecase.id!r} is already defined in {origin[usecase.id]}")
                continue
            origin[usecase.id] = source
            usecases.append(usecase)
    if problems:
        raise UseCaseError(problems)
    return usecases


def _audience_problems(usecase: UseCase, segments: Mapping[str, str] | None) -> list[str]:
    if segments is None:
        return []
    audience = usecase.audience
    kind = segments.get(audience.segment)
    if kind is None:
        known = ", ".join(sorted(segments)) or "none"
        return [f"audience.segment: unknown segment {audience.segment!r} (known: {known})"]
    if kind == "suppression" and audience.subject is None:
        return [
            f"audience.subject: {audience.segment!r} is a per-product/category audience: name one subject, "
            "e.g. subject: 'product:<id>'"
        ]
    if kind != "suppression" and audience.subject is not None:
        return [f"audience.subject: {audience.segment!r} is a whole segment: remove subject"]
    return []


def by_id(usecases: Collection[UseCase]) -> dict[str, UseCase]:
    return {usecase.id: usecase for usecase in usecases}
