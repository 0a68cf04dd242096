"""Consent per person and purpose: what a person said, when, and what follows for activation.

A purpose is a name from the retailer's consent categories (``advertising``, ``email``,
``personalisation``, ``analytics`` by default; Google's Consent Mode v2 adds ``ad_user_data`` and
``ad_personalization``). Rules, each a statement the tests check:

- A decision is ``(granted, at)``: ``at`` is the event time (epoch ms) of the event that said it.
- The newest decision by event time wins, whatever order events arrive in. On a tie a refusal wins:
  two sources that disagree at the same instant must not activate a person.
- A merge of two persons keeps, per purpose, the newest decision of either (the same rule), so the
  result does not depend on which person survives.
- A person with no decision for a purpose gets the policy's default for it: advertising is opt-in
  (``False``) unless configured otherwise.
- Category names from a consent manager are matched case-insensitively, with spaces and dashes read
  as underscores, and through the policy's aliases (e.g. a CMP category ``Marketing`` -> ``email``).
  Names that are not configured purposes are ignored: they are the CMP's, not omniseg's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DEFAULT_PURPOSES = ("advertising", "email", "personalisation", "analytics")
PURPOSE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SEPARATORS = re.compile(r"[\s\-]+")


def fold_category(category: str) -> str:
    """A consent-manager category as omniseg compares it: lower-case, spaces and dashes as '_'."""
    return _SEPARATORS.sub("_", category.strip().lower())


class ConsentValueError(ValueError):
    """A consent value that is not a boolean (one line, naming the category)."""


class Decision(NamedTuple):
    granted: bool
    at: int  # event time of the event that said it, epoch ms


def newer(current: Decision | None, candidate: Decision) -> bool:
    """Whether ``candidate`` replaces ``current``: a newer event time, or a refusal at the same time."""
    if current is None:
        return True
    if candidate.at != current.at:
        return candidate.at > current.at
    return current.granted and not candidate.granted


def fold(current: Mapping[str, Decision], decisions: Mapping[str, Decision]) -> dict[str, Decision]:
    """``current`` with every decision of ``decisions`` that replaces the one it had (a merge too)."""
    result = dict(current)
    for purpose, decision in decisions.items():
        if newer(result.get(purpose), decision):
            result[purpose] = decision
    return result


@dataclass(frozen=True)
class ConsentPolicy:
    """The configured purposes, their defaults for a person who never said, and CMP category aliases."""

    purposes: tuple[str, ...] = DEFAULT_PURPOSES
    defaults: Mapping[str, bool] = field(default_factory=dict)  # purpose -> default; absent: False
    aliases: Mapping[str, str] = field(default_factory=dict)  # CMP category -> purpose

    def __post_init__(self) -> None:
        for purpose in self.purposes:
            if not PURPOSE_PATTERN.fullmatch(purpose):
                raise ValueError(
                    f"consent purpose {purpose!r}: use lower-case letters, digits and '_', "
                    "starting with a letter"
                )
        for purpose in self.defaults:
            if purpose not in self.purposes:
                raise ValueError(f"consent default for {purpose!r}: not a configured purpose")
        # Categories are compared folded, so the aliases are kept folded too.
        object.__setattr__(self, "aliases", {fold_category(a): p for a, p in self.aliases.items()})
        for alias, purpose in self.aliases.items():
            if purpose not in self.purposes:
                raise ValueError(f"consent alias {alias!r} -> {purpose!r}: not a configured purpose")

    def purpose_of(self, category: str) -> str | None:
        """The purpose a consent manager's category names, or None when it is not one of ours."""
        folded = fold_category(category)
        folded = self.aliases.get(folded, folded)
        return folded if folded in self.purposes else None

    def granted(self, consent: Mapping[str, Decision], purpose: str) -> bool:
        decision = consent.get(purpose)
        if decision is None:
            return self.defaults.get(purpose, False)
        return decision.granted

    def allows(self, consent: Mapping[str, Decision], purposes: Iterable[str]) -> bool:
        """Whether every purpose of ``purposes`` is granted (explicitly or by default)."""
        return all(self.granted(consent, purpose) for purpose in purposes)

    def statement(self, preferences: Mapping[str, Any], at: int) -> dict[str, Decision]:
        """The decisions one event states: ``{category: bool}`` read through this policy.

        Raises ConsentValueError on a value that is not a boolean, so the event is refused with the
        reason instead of being half-read (strings such as ``"false"`` are refused: ``bool("false")`` is
        True, the opposite of what was meant)."""
        decisions: dict[str, Decision] = {}
        for category, value in preferences.items():
            if not isinstance(value, bool):
                raise ConsentValueError(
                    f"consent {category!r}: expected true or false, got {type(value).__name__}"
                )
            purpose = self.purpose_of(str(category))
            if purpose is not None:
                candidate = Decision(value, at)
                if newer(decisions.get(purpose), candidate):
                    decisions[purpose] = candidate
        return decisions
