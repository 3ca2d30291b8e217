"""The traffic split between live versions, and sticky weighted routing. Pure.

A split names the champion, optionally a challenger with its share of traffic (percent), and optionally a
shadow that answers a copy of every request without being returned. Routing is sticky: a user's key is
hashed (with the model name as salt) to a bucket in [0, 100); the user goes to the challenger when the
bucket is below the challenger's share. So the same user always lands on the same side for a given split,
and raising the share from 5 % to 25 % keeps every user who already saw the challenger on it — a canary
only ever adds users, never swaps them back and forth.

Worked examples (the rows of ``tests/unit/lifecycle/test_routing.py``):

* ``bucket("router", "user-1")`` is a fixed number in [0, 100) with 0.01 resolution.
* With a 10 % challenger, about 10 % of 10,000 distinct users go to it (binomial sd 0.3 points).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Literal

from pydantic import Field, model_validator

from lifecycle.records import Frozen

Role = Literal["champion", "challenger", "shadow"]
_BUCKETS = 10_000


def bucket(model: str, key: str) -> float:
    """The user's fixed position in [0, 100): sha256 of ``model/key``, 0.01 resolution."""
    digest = hashlib.sha256(f"{model}/{key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % _BUCKETS) / (_BUCKETS / 100)


class TrafficSplit(Frozen):
    model: str
    champion: int = Field(ge=1, description="version number serving the rest of the traffic")
    challenger: int | None = Field(default=None, ge=1)
    challenger_percent: float = Field(default=0.0, ge=0, le=100, description="share of users on the challenger")
    shadow: int | None = Field(default=None, ge=1, description="answers a copy of each request, never returned")
    revision: int = Field(default=0, ge=0, description="bumped by every change; replicas compare it")

    @model_validator(mode="after")
    def _consistent(self) -> TrafficSplit:
        if self.challenger_percent > 0 and self.challenger is None:
            raise ValueError(f"challenger_percent is {self.challenger_percent} but no challenger is set; "
                             "name the challenger version or set the share to 0")
        if self.challenger is not None and self.challenger == self.champion:
            raise ValueError(f"v{self.champion} cannot be champion and challenger at once")
        if self.shadow is not None and self.shadow == self.champion:
            raise ValueError(f"v{self.champion} is the champion; a shadow must be another version")
        return self

    @property
    def weights(self) -> dict[str, float]:
        """Percent of traffic per live role; they always sum to 100."""
        if self.challenger is None:
            return {"champion": 100.0}
        return {"champion": 100.0 - self.challenger_percent, "challenger": self.challenger_percent}

    @property
    def live_versions(self) -> list[int]:
        """Every version this split needs loaded (champion first)."""
        found = [self.champion, self.challenger, self.shadow]
        return list(dict.fromkeys(v for v in found if v is not None))


class Assignment(Frozen):
    version: int
    role: Role
    split_revision: int | None = Field(default=None, description=(
        "revision of the split that routed the request, logged with each of its answers: a rollout's stage "
        "counts only the requests its own split routed (a gateway adopts a split only once its versions are "
        "loaded, which can take longer than any fixed wait)"))
    shadow: int | None = Field(default=None, description="the version that split mirrors the request to")
    pinned: bool = Field(default=False, description=(
        "the caller named the version: the split did not choose it (a rollout's arms leave it out)"))


def check_new_split(split: TrafficSplit) -> None:
    """Rules a split must meet to be written, beyond its own validation (which every stored split, and every
    historical one in the audit log, must keep passing: a rule added there would make them unreadable)."""
    if split.shadow is not None and split.shadow == split.challenger:
        # Its copies of the champion's requests would be counted with the answers it serves to its own callers.
        raise ValueError(f"v{split.shadow} is the challenger, already answering its share of the traffic; a shadow "
                         "must be another version")


def route(split: TrafficSplit, key: str) -> Assignment:
    """Which version answers the user with this sticky key."""
    if split.challenger is not None and bucket(split.model, key) < split.challenger_percent:
        return assignment(split.challenger, "challenger", split.revision, split.shadow)
    return assignment(split.champion, "champion", split.revision, split.shadow)


@functools.lru_cache(maxsize=1024)
def assignment(version: int, role: Role, split_revision: int | None = None, shadow: int | None = None,
               pinned: bool = False) -> Assignment:
    """The (immutable, so shared) Assignment of a version in a role: the request path validates none."""
    return Assignment(version=version, role=role, split_revision=split_revision, shadow=shadow, pinned=pinned)
