"""The destinations the audience API serves: loaded from a directory of YAML files at start and again
when any file there changes (checked at most every ``check_every_s``).

A configuration that does not validate is never half-applied: the previous one stays in force and one
line is logged (first problem and how many). The files are then read again only after another change.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

from streams.domain.audiences.destinations import Destination, DestinationError, load_destination_dir

log = logging.getLogger("streams.api.destinations")

Signature = tuple[tuple[str, int, int], ...] | None


def _signature(directory: Path) -> Signature:
    """Name, mtime and size of every destination file; None when the directory cannot be listed."""
    try:
        files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
        return tuple((file.name, stat.st_mtime_ns, stat.st_size) for file in files for stat in [file.stat()])
    except OSError:
        return None


class DestinationRegistry:
    """The current destinations of ``directory`` (thread-safe)."""

    def __init__(
        self, directory: Path, check_every_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.directory = directory
        self.check_every_s = check_every_s
        self.problem: str | None = None  # why the newest files were not taken, None when they were
        self._clock = clock
        self._lock = threading.Lock()
        self._destinations: tuple[Destination, ...] = ()
        self._signature: Signature = None
        self._checked_at = -math.inf
        self._reload(_signature(directory), first=True)
        self._checked_at = clock()

    def current(self) -> tuple[Destination, ...]:
        """The destinations in force, after reading the files again if one changed since."""
        now = self._clock()
        if now - self._checked_at >= self.check_every_s:
            with self._lock:
                if now - self._checked_at >= self.check_every_s:
                    self._checked_at = now
                    signature = _signature(self.directory)
                    if signature != self._signature:
                        self._reload(signature, first=False)
        return self._destinations

    def _reload(self, signature: Signature, *, first: bool) -> None:
        self._signature = signature
        try:
            loaded = load_destination_dir(self.directory)
        except DestinationError as exc:
            more = len(exc.problems) - 1
            self.problem = exc.problems[0] + (f" (and {more} more)" if more else "")
            kept = "no destinations" if first else "the previous destinations"
            log.warning("destinations not loaded, %s in force: %s", kept, self.problem)
            return
        self.problem = None
        self._destinations = tuple(loaded)
        if not first:
            log.info("destinations reloaded from %s: %d", self.directory, len(loaded))
