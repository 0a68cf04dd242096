"""Destinations: the ad platforms (or generic receivers) that read audiences, configured in YAML.

A file holds one destination (a mapping), several (a list), or a mapping with a single ``destinations``
key holding a list. :func:`load_destinations` validates every file before returning anything; each
problem is one line, ``file: destination 'id': field.path: message``.

A destination reads *audiences*: a whole segment (``segment: browsed-not-bought``), or the subjects of a
per-product/category suppression audience (``subjects: 'product:*'``, ``'category:*'``,
``'product:<id>'`` or ``'category:<name>'``); each subject is an audience of its own, with the id
``<segment>/<subject>`` (:func:`audience_id`). It authenticates with an API key, of which only the
SHA-256 hex is configured; a key identifies exactly one destination.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from streams.domain.audiences.hashing import AudienceIdKind, Platform
from streams.domain.segments.model import SegmentDefinition
from streams.domain.yaml_documents import DocumentError, field_path, mappings

# A destination's kind is the platform whose rules hash its identifiers.
DestinationKind = Platform


# Matched whole (re.fullmatch): '$' alone would let a trailing newline through.
DESTINATION_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SEGMENT_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
PURPOSE = re.compile(r"[a-z][a-z0-9_]{0,39}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A wildcard is the whole part after the colon; a named subject has no '*' and no whitespace.
SUBJECTS = re.compile(r"(product|category):(\*|[^\s*]+)")
# An audience id's subject as the segment engine writes it: '<per>:<product id or category>'.
SUBJECT = re.compile(r"(product|category):.+", re.DOTALL)
_EMPTY_KEY_SHA256 = hashlib.sha256(b"").hexdigest()

# What load_destinations knows of a segment: its kind ("segment" or "suppression"), or (kind, per)
# where per is "product" or "category" for a suppression audience and None otherwise.
SegmentInfo = str | tuple[str, str | None]


class DestinationError(ValueError):
    """Invalid destinations; ``problems`` lists each one as ``file: destination 'id': field: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _listify(value: Any) -> Any:
    """A single value where a list is expected is a list of one."""
    return [value] if isinstance(value, str) else value


def _purpose(value: str) -> str:
    if not PURPOSE.fullmatch(value):
        raise ValueError(
            f"consent purpose {value!r}: use lower-case letters, digits and '_', starting with a letter, "
            "at most 40 characters"
        )
    return value


def _segment_id(value: str) -> str:
    if not SEGMENT_ID.fullmatch(value):
        raise ValueError(f"segment id {value!r}: use lower-case letters, digits, '.', '_' or '-'")
    return value


def _subjects(value: str) -> str:
    if not SUBJECTS.fullmatch(value):
        raise ValueError(
            f"subjects {value!r}: use 'product:*', 'category:*', 'product:<id>' or 'category:<name>' "
            "(no spaces; '*' only alone after the colon)"
        )
    return value


def _first_repeat(items: Sequence[Any]) -> Any:
    """The first item listed a second time, or None."""
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudienceSource(_Frozen):
    """One configured audience entry: a whole segment (``subjects`` None) or subjects of a suppression."""

    segment: Annotated[str, AfterValidator(_segment_id)]
    subjects: Annotated[str, AfterValidator(_subjects)] | None = None

    @property
    def per(self) -> str | None:
        """The per of the subjects (product or category), None for a whole segment."""
        return None if self.subjects is None else self.subjects.partition(":")[0]

    def matches(self, segment_id: str, subject: str | None) -> bool:
        """Whether the audience ``(segment_id, subject)`` is one this entry names."""
        if segment_id != self.segment:
            return False
        if self.subjects is None or subject is None:
            return self.subjects is None and subject is None
        if self.subjects.endswith(":*"):
            prefix = self.subjects[:-1]  # "product:" or "category:"; a subject names something after it
            return subject.startswith(prefix) and len(subject) > len(prefix)
        return subject == self.subjects


class Destination(_Frozen):
    """A validated destination: who it is, what it may receive, and which audiences it reads."""

    id: str
    name: str | None = None
    kind: DestinationKind
    api_key_sha256: str
    identifiers: tuple[AudienceIdKind, ...] = (AudienceIdKind.EMAIL, AudienceIdKind.PHONE)
    # Purposes a person must have granted, every one of them, to be sent to this destination.
    consent: tuple[Annotated[str, AfterValidator(_purpose)], ...] = ("advertising",)
    audiences: tuple[AudienceSource, ...]

    _lists = field_validator("identifiers", "consent", mode="before")(_listify)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not DESTINATION_ID.fullmatch(value):
            raise ValueError(
                f"id {value!r}: use lower-case letters, digits, '-' or '_', starting with a letter or "
                "digit, at most 63 characters"
            )
        return value

    @field_validator("api_key_sha256")
    @classmethod
    def _key_hash(cls, value: str) -> str:
        # The value is never echoed: someone may have pasted the key itself here.
        if not SHA256_HEX.fullmatch(value):
            raise ValueError(
                "expected 64 lower-case hex characters: the SHA-256 hex of the API key, "
                "e.g. from `omniseg destinations key`"
            )
        if value == _EMPTY_KEY_SHA256:
            raise ValueError("this is the SHA-256 of an empty key; use the hash of a real API key")
        return value

    @field_validator("identifiers")
    @classmethod
    def _identifiers(
        cls, value: tuple[AudienceIdKind, ...], info: ValidationInfo
    ) -> tuple[AudienceIdKind, ...]:
        if not value:
            raise ValueError("list at least one identifier kind: " + ", ".join(AudienceIdKind))
        if (repeated := _first_repeat(value)) is not None:
            raise ValueError(f"{repeated.value!r} is listed twice")
        if info.data.get("kind") == DestinationKind.GOOGLE and AudienceIdKind.MOBILE_ADVERTISING_ID in value:
            raise ValueError(
                "Google Customer Match takes mobile advertising ids only unhashed; "
                "omniseg sends hashed identifiers only"
            )
        return value

    @field_validator("consent")
    @classmethod
    def _consent(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one consent purpose (e.g. advertising)")
        if (repeated := _first_repeat(value)) is not None:
            raise ValueError(f"consent purpose {repeated!r} is listed twice")
        return value

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, value: tuple[AudienceSource, ...]) -> tuple[AudienceSource, ...]:
        if not value:
            raise ValueError("list at least one audience (a segment, with subjects for a suppression)")
        first: dict[tuple[str, str | None], int] = {}
        for index, source in enumerate(value):
            key = (source.segment, source.subjects)
            if key in first:
                what = f"segment {source.segment!r}" + (
                    f", subjects {source.subjects!r}" if source.subjects else ""
                )
                raise ValueError(f"[{index}] repeats [{first[key]}] ({what})")
            first[key] = index
        return value

    def reads(self, segment_id: str, subject: str | None) -> bool:
        """Whether this destination reads the audience ``(segment_id, subject)``."""
        return any(source.matches(segment_id, subject) for source in self.audiences)

    def accepts_key(self, key: str) -> bool:
        """Whether ``key`` is this destination's API key (compared in constant time)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        return bool(key) and hmac.compare_digest(digest, self.api_key_sha256)


def destination_for_key(destinations: Sequence[Destination], key: str) -> Destination | None:
    """The destination whose API key is ``key``, or None.

    Every destination is compared, in constant time each, whether or not one matched already, so the
    time taken does not tell which destination (if any) the key belongs to.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()
    found: Destination | None = None
    for destination in destinations:
        if hmac.compare_digest(digest, destination.api_key_sha256) and found is None:
            found = destination
    return found if key else None


def audience_id(segment_id: str, subject: str | None) -> str:
    """``segment_id`` for a whole segment, ``segment_id/subject`` for one subject of a suppression.

    Segment ids contain no '/', so :func:`parse_audience_id` splits it back at the first one.
    """
    return segment_id if subject is None else f"{segment_id}/{subject}"


def parse_audience_id(text: str) -> tuple[str, str | None]:
    """``(segment_id, subject)`` of an audience id (the inverse of :func:`audience_id`)."""
    if not text:
        raise ValueError("empty audience id")
    segment_id, slash, subject = text.partition("/")
    if not SEGMENT_ID.fullmatch(segment_id):
        raise ValueError(
            f"audience id {text!r}: {segment_id!r} is not a segment id "
            "(lower-case letters, digits, '.', '_' or '-')"
        )
    if not slash:
        return segment_id, None
    if not SUBJECT.fullmatch(subject):
        raise ValueError(
            f"audience id {text!r}: after '/' expected 'product:<id>' or 'category:<name>', got {subject!r}"
        )
    return segment_id, subject


def segment_map(definitions: Iterable[SegmentDefinition]) -> dict[str, tuple[str, str | None]]:
    """The ``segments`` argument of :func:`load_destinations` for these segment definitions."""
    return {d.id: (d.kind, d.per if d.kind == "suppression" else None) for d in definitions}


def _documents(text: str, *, source: str) -> list[tuple[str, dict[str, Any]]]:
    """The raw destination mappings of one YAML file, each with its label for problem lines."""
    try:
        return mappings(text, source=source, plural="destinations", noun="destination")
    except DocumentError as exc:
        raise DestinationError(exc.problems) from None


def _reference_problems(
    destination: Destination,
    purposes: Collection[str] | None,
    segments: Mapping[str, SegmentInfo] | None,
) -> list[str]:
    """Consent purposes and audience segments that the configuration around does not have."""
    problems: list[str] = []
    if purposes is not None:
        known = ", ".join(sorted(purposes)) or "none"
        for index, purpose in enumerate(destination.consent):
            if purpose not in purposes:
                problems.append(
                    f"consent[{index}]: consent purpose {purpose!r} is not configured (known: {known})"
                )
    if segments is None:
        return problems
    for index, source in enumerate(destination.audiences):
        info = segments.get(source.segment)
        if info is None:
            problems.append(f"audiences[{index}].segment: unknown segment {source.segment!r}")
            continue
        kind, per = (info, None) if isinstance(info, str) else info
        where = f"audiences[{index}].subjects"
        if kind != "suppression":
            if source.subjects is not None:
                problems.append(
                    f"{where}: {source.segment!r} is a whole segment, not a per-product/category "
                    "audience: remove subjects"
                )
        elif source.subjects is None:
            problems.append(
                f"{where}: {source.segment!r} is a per-product/category audience: name its subjects, "
                f"e.g. subjects: '{per or 'product'}:*'"
            )
        elif per is not None and source.per != per:
            named = "product:<id>" if per == "product" else "category:<name>"
            problems.append(f"{where}: {source.segment!r} is per {per}: use '{per}:*' or '{named}'")
    return problems


def load_destinations(
    files: Iterable[tuple[str, str]],
    *,
    purposes: Collection[str] | None = None,
    segments: Mapping[str, SegmentInfo] | None = None,
) -> list[Destination]:
    """Validate every destination of ``files`` (pairs of source name and YAML text), all or nothing.

    ``purposes``: the configured consent purposes; ``segments``: the defined segments (see
    :data:`SegmentInfo`, :func:`segment_map`). Either, when given, is checked against every destination.
    """
    problems: list[str] = []
    destinations: list[Destination] = []
    origin: dict[str, str] = {}
    key_owner: dict[str, tuple[str, str]] = {}  # api_key_sha256 -> (destination id, source)
    for source, text in files:
        try:
            documents = _documents(text, source=source)
        except DestinationError as exc:
            problems.extend(exc.problems)
            continue
        for label, raw in documents:
            try:
                destination = Destination.model_validate(raw)
            except ValidationError as exc:
                for error in exc.errors():
                    message = error["msg"].removeprefix("Value error, ")
                    problems.append(f"{label}: {field_path(error['loc'])}: {message}")
                continue
            problems.extend(
                f"{label}: {line}" for line in _reference_problems(destination, purposes, segments)
            )
            if destination.id in origin:
                problems.append(
                    f"{label}: id: id {destination.id!r} is already defined in {origin[destination.id]}"
                )
                continue
            origin[destination.id] = source
            owner = key_owner.setdefault(destination.api_key_sha256, (destination.id, source))
            if owner[0] != destination.id:
                problems.append(
                    f"{label}: api_key_sha256: the same API key as destination {owner[0]!r} ({owner[1]}); "
                    "a key must identify one destination"
                )
            destinations.append(destination)
    if problems:
        raise DestinationError(problems)
    return destinations


def load_destination_dir(
    path: Path,
    *,
    purposes: Collection[str] | None = None,
    segments: Mapping[str, SegmentInfo] | None = None,
) -> list[Destination]:
    """:func:`load_destinations` of every ``*.yaml`` / ``*.yml`` file in ``path``, in sorted order."""
    if not path.is_dir():
        raise DestinationError([f"{path}: not a directory of destination files"])
    files: list[tuple[str, str]] = []
    problems: list[str] = []
    for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
        try:
            files.append((str(file), file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{file}: cannot read: {exc}")
    try:
        destinations = load_destinations(files, purposes=purposes, segments=segments)
    except DestinationError as exc:
        raise DestinationError([*problems, *exc.problems]) from None
    if problems:
        raise DestinationError(problems)
    return destinations
