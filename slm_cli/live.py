"""A rollout on live traffic on this machine: the gateway on loopback, simulated users sending labelled
prompts through it (and feedback on each answer), and the rollout flow deciding from the prediction log.
Used by `slm demo` and bench/rollout_live.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from lifecycle.data import Pair
from lifecycle.names import VersionRef
from lifecycle.rollout_plan import RolloutPlan


@contextmanager
def gateway() -> Iterator[str]:
    """The gateway of configs/serve.yaml on a free loopback port, following split changes every 0.5 s."""
    from serving.app import build_app, load_serve_config
    from serving.server import BackgroundServer

    app, _state = build_app(load_serve_config(None).model_copy(update={"split_poll_s": 0.5}))
    with BackgroundServer(app) as server:
        yield server.url


def users(url: str, prompts: Sequence[Pair], *, model: str, threads: int = 8, seed: int = 0):
    """Simulated callers (2,000 of them, sticky), started; stop them with ``.stop()``."""
    from serving.loadgen import LoadGenerator

    return LoadGenerator(url, prompts, model=model, threads=threads, users=2000, seed=seed).start()


def _approver(ref: VersionRef, plan: RolloutPlan, stop: threading.Event, reviewer: str) -> threading.Thread:
    """A person who approves the last stage as soon as the rollout asks (through the paused flow run)."""
    from registry.rollouts import get_rollout
    from registry.service import open_registry
    from tasks.rollout import Approval, send_answer

    def run() -> None:
        while not stop.wait(1.0):
            with open_registry() as reg:
                state = get_rollout(reg.store, ref.model, ref.number)
            if state is not None and state.phase == "awaiting_approval":
                send_answer(ref.model, ref.number, Approval(approve=True, reviewer=reviewer,
                                                            comment="the canary looks fine"), plan)
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def roll(version: str, plan_file: str, *, look_s: float = 5.0, settle_s: float = 1.0,
         reviewer: str = "demo-reviewer") -> dict:
    """Run the rollout flow for ``version`` to its end; a simulated reviewer approves when asked."""
    from flows.rollout import rollout
    from registry.rollouts import get_rollout
    from registry.service import open_registry
    from tasks.rollout import RolloutParams, read_plan

    ref = VersionRef.parse(version)
    plan = read_plan(plan_file)
    stop = threading.Event()
    person = _approver(ref, plan, stop, reviewer)
    start = time.perf_counter()
    try:
        outcome = rollout(RolloutParams(version=version, plan=plan_file, look_interval_s=look_s, settle_s=settle_s,
                                        approval_poll_s=1))
    finally:
        stop.set()
        person.join(timeout=5)
    with open_registry() as reg:
        state = get_rollout(reg.store, ref.model, ref.number)
    return {"version": version, "phase": outcome.phase, "stage": outcome.stage,
            "seconds": round(time.perf_counter() - start, 1),
            "history": [{"stage": h.stage, "action": h.action, "at": h.at,
                         "failed": [r for r in h.reasons if r.startswith("[fail]")]} for h in state.history]}
