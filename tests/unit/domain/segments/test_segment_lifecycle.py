"""What `segments apply` plans: live segments missing from the directory are removed only with prune."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.segments.lifecycle import Published, plan
from streams.domain.segments.loader import load_definitions

_IDS = st.sets(st.sampled_from(["a", "b", "c", "d", "e"]))


def _definitions(ids: set[str]) -> list:  # type: ignore[type-arg]
    text = "\n---\n".join(f"id: {i}\nwhen: {{event: Order Completed}}" for i in sorted(ids))
    return load_definitions([("defs.yaml", text)]) if ids else []


@given(live=_IDS, deleted=_IDS, wanted=_IDS)
def test_without_prune_no_live_segment_is_removed_and_every_missing_one_is_listed(
    live: set[str], deleted: set[str], wanted: set[str]
) -> None:
    published = {i: Published(1, "old", False) for i in live}
    published |= {i: Published(2, "", True) for i in deleted - live}
    kept = plan(published, _definitions(wanted))
    assert not [w for w in kept.writes if w.action == "removed"]
    assert set(kept.kept) == live - wanted

    pruned = plan(published, _definitions(wanted), prune=True)
    assert {w.segment_id for w in pruned.writes if w.action == "removed"} == live - wanted
    assert pruned.kept == []
    assert all(
        w.version == published[w.segment_id].version + 1 for w in pruned.writes if w.action == "removed"
    )
