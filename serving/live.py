"""The versions a gateway serves right now: the shared split, the loaded adapters, in-flight counts.

The split lives in the registry store. A watcher thread reads its revision every ``split_poll_s`` and,
when it moved, loads any newly named version first and only then swaps the split in — so no request is
ever routed to a version that is not loaded. Unloading waits for the version's in-flight requests.

Retired versions leave by the same path. When the revision moves, the loaded versions the new split does
not name are looked up, and those the registry has retired (archived or decommissioned) are unloaded;
retiring a version bumps the split revision for exactly this (``registry.retire``). So the poll stays one
indexed read, and the lookup runs only on a change. A version that is merely out of the split stays loaded:
the former champion, now ``previous``, must be there for an instant rollback. A retired version whose last
requests are still running is retried at every poll until they finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager

from lifecycle.routing import Assignment, TrafficSplit, assignment, route
from lifecycle.status import VersionStatus
from registry.service import Registry
from registry.store import ConcurrentChangeError
from registry.traffic import get_split, set_split, split_revision
from serving.backend import InProcessBackend
from serving.loader import load_version

log = logging.getLogger(__name__)
RETIRED = frozenset({VersionStatus.ARCHIVED, VersionStatus.DECOMMISSIONED})


class VersionNotLive(LookupError):
    """A request pinned a version this gateway does not serve."""


class LiveModel:
    def __init__(self, registry: Registry, model: str, backend: InProcessBackend, poll_s: float) -> None:
        self.registry, self.model, self.backend, self.poll_s = registry, model, backend, poll_s
        self._adapters: dict[int, str | None] = {}
        self._inflight: Counter[int] = Counter()
        self._retired: set[int] = set()  # loaded, retired, waiting for their last requests to finish
        self._cond = threading.Condition()
        self._stop = threading.Event()
        # One lock for every change of what is loaded or routed: the watcher, the admin API and unloads
        # take turns, so a split is never adopted while one of its versions is being unloaded.
        self._load_lock = threading.RLock()
        self.split = self._initial_split()
        self._load(self.split.live_versions)
        self._watcher = threading.Thread(target=self._watch, name="slm-split-watcher", daemon=True)
        self._watcher.start()

    def _initial_split(self) -> TrafficSplit:
        split = get_split(self.registry.store, self.model)
        if split is not None:
            return split
        model, champion = self.registry.resolve(f"{self.model}:champion")
        try:
            return set_split(self.registry.store, TrafficSplit(model=model, champion=champion), actor="gateway",
                             reason="first start: all traffic to the champion", expected_revision=None)
        except ConcurrentChangeError:  # another replica starting at the same moment wrote it first
            return get_split(self.registry.store, self.model)

    def _load(self, versions: list[int]) -> None:
        with self._load_lock:
            for number in versions:
                if number in self._adapters:
                    continue
                self._adapters[number] = load_version(self.backend, self.registry,
                                                      self.registry.store.get_version(self.model, number))

    def refresh(self) -> bool:
        """Pick up a newer split written by any replica. Returns True when it changed."""
        revision = split_revision(self.registry.store, self.model)
        if revision is None or revision <= self.split.revision:
            self._prune()
            return False
        with self._load_lock:
            split = get_split(self.registry.store, self.model)
            if split.revision <= self.split.revision:  # adopted meanwhile by a concurrent refresh
                return False
            self._load(split.live_versions)
            self.split = split  # one reference assignment: readers see the old or the new split, never a mix
            idle = set(self._adapters) - set(split.live_versions)
            if idle:
                status = {v.number: v.status for v in self.registry.store.list_versions(self.model)}
                self._retired |= {n for n in idle if status.get(n) in RETIRED}
        self._prune()
        return True

    def _prune(self) -> None:
        """Unload the retired versions found by ``refresh`` whose in-flight requests have finished."""
        if not self._retired:  # the usual poll: no lock taken
            return
        with self._load_lock:
            for number in sorted(self._retired):
                try:
                    self.unload(number, timeout_s=0)
                except TimeoutError:
                    continue  # its last requests are still running: the next poll tries again
                self._retired.discard(number)
                log.info("unloaded %s:v%d: retired", self.model, number)
                self.registry.store.append_audit(actor="gateway", action="gateway.unloaded",
                                                 subject=f"{self.model}:v{number}", payload={"reason": "retired"})

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a registry hiccup must not kill the watcher; the next poll retries
                log.exception("could not refresh the traffic split of %s", self.model)

    def close(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=5)

    def assign(self, key: str, pinned: int | None = None) -> Assignment:
        split = self.split  # read once: the version, the revision and the shadow all come from the same split
        if pinned is None:
            return route(split, key)
        roles = {split.champion: "champion", split.challenger: "challenger"}
        if pinned not in roles or pinned not in self._adapters:
            raise VersionNotLive(f"{self.model}:v{pinned} is not routable here; pin the champion "
                                 f"(v{split.champion})" + (f" or the challenger (v{split.challenger})"
                                                           if split.challenger else ""))
        return assignment(pinned, roles[pinned], split.revision, split.shadow, pinned=True)

    def routable(self) -> list[int]:
        """Versions a client may pin: the split's champion and challenger."""
        return [v for v in (self.split.champion, self.split.challenger) if v is not None]

    def adapter(self, version: int) -> str | None:
        return self._adapters[version]

    @contextmanager
    def in_flight(self, version: int):
        with self._cond:
            self._inflight[version] += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight[version] -= 1
                self._cond.notify_all()

    def load(self, number: int) -> None:
        self._load([number])

    def load_all(self, numbers: list[int]) -> None:
        self._load(numbers)

    def unload(self, number: int, timeout_s: float = 30.0) -> None:
        """Unload a version that no split names, once its in-flight requests have finished.

        Raises ValueError when the split still names it, TimeoutError (and keeps it loaded) when its
        requests do not finish within ``timeout_s``.
        """
        with self._load_lock:
            if number in self.split.live_versions:
                raise ValueError(f"v{number} is in the current split; move its traffic away first")
            if number not in self._adapters:
                return
            deadline = time.monotonic() + timeout_s
            with self._cond:
                while self._inflight[number] and time.monotonic() < deadline:
                    self._cond.wait(timeout=0.05)
                if self._inflight[number]:
                    raise TimeoutError(f"v{number} still has {self._inflight[number]} requests in flight after "
                                       f"{timeout_s:g} s; it stays loaded")
                adapter = self._adapters.pop(number)
            if adapter is not None:
                self.backend.unload_adapter(adapter)

    def live(self) -> dict[int, str | None]:
        return dict(self._adapters)
