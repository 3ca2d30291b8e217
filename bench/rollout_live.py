"""The rollout at demo scale on live traffic, with the shipped plan (configs/rollout.yaml): issue #5's
end-to-end check on this machine.

Needs the registry `make demo` leaves (champion v1, candidate v2 trained on the drifted drop + replay).
Starts the gateway on loopback, simulated users send the golden "before" prompts through it with the
real ``openai`` client and give feedback (success when the route is right), and:

1. rolls out v2: shadow → 5 % → 25 % → 50 % → (a person approves) → 100 % → champion;
2. retrains a candidate on the drifted drop alone, gated on the drifted golden set only (so it passes
   the offline gate although it forgot the old routes), and rolls it out: the canary rolls it back.

Prints one JSON object (phase, stage, seconds, requests, each stage's decision) for bench/RESULTS.md.

Run:  ``.venv/bin/python bench/rollout_live.py [--threads 8] [--look 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def approver(model: str, version: int, plan, stop: threading.Event) -> threading.Thread:
    """A person who approves the last stage when the rollout asks (through the paused flow run)."""
    from registry.rollouts import get_rollout
    from registry.service import open_registry
    from tasks.rollout import Approval, send_answer

    def run() -> None:
        while not stop.wait(1.0):
            with open_registry() as reg:
                state = get_rollout(reg.store, model, version)
            if state is not None and state.phase == "awaiting_approval":
                send_answer(model, version, Approval(approve=True, reviewer="bench", comment="canary fine"), plan)
                return
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def roll(version: str, plan, args) -> dict:
    from flows.rollout import rollout
    from lifecycle.names import VersionRef
    from tasks.rollout import RolloutParams

    ref = VersionRef.parse(version)
    stop = threading.Event()
    person = approver(ref.model, ref.number, plan, stop)
    start = time.perf_counter()
    try:
        outcome = rollout(RolloutParams(version=version, plan=args.plan, look_interval_s=args.look,
                                        settle_s=args.settle, approval_poll_s=1))
    finally:
        stop.set()
        person.join(timeout=5)
    from registry.rollouts import get_rollout
    from registry.service import open_registry

    with open_registry() as reg:
        state = get_rollout(reg.store, ref.model, ref.number)
    return {"version": version, "phase": outcome.phase, "stage": outcome.stage,
            "seconds": round(time.perf_counter() - start, 1),
            "history": [{"stage": h.stage, "action": h.action, "at": h.at,
                         "failed": [r for r in h.reasons if r.startswith("[fail]")]} for h in state.history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", default="configs/rollout.yaml")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--look", type=float, default=5.0, help="seconds between looks")
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args()

    from slm_cli.flows_cmd import prefect_env

    prefect_env()
    from lifecycle.config import RetrainParams, load_yaml_config
    from lifecycle.data import read_pairs
    from lifecycle.rollout_plan import RolloutPlan
    from lifecycle.settings import get_settings
    from serving.app import build_app, load_serve_config
    from serving.loadgen import LoadGenerator
    from serving.server import BackgroundServer
    from slm_cli.flows_cmd import run_retrain
    from tasks.rollout import plan_path

    settings = get_settings()
    plan = load_yaml_config(RolloutPlan, plan_path(args.plan))
    prompts = read_pairs(settings.home / "data" / "golden-before.jsonl")
    model = settings.model_name
    result: dict = {"plan": f"{plan.name} v{plan.version}", "threads": args.threads, "rollouts": []}
    app, _state = build_app(load_serve_config(None).model_copy(update={"split_poll_s": 0.5}))
    with BackgroundServer(app) as gateway:
        load = LoadGenerator(gateway.url, prompts, model=model, threads=args.threads, users=2000).start()
        result["rollouts"].append(roll(f"{model}:v2", plan, args))
        load.stop()
        result["good_requests"] = dict(load.counts)
        # Gated on the drifted golden set only: it passes offline, though it forgot the old routes.
        bad = run_retrain(RetrainParams(replay_rows=0, benchmarks="golden-drifted",
                                        gate="configs/gate-drifted-only.yaml",
                                        reason="bench: drifted drop alone, drifted-only gate"))
        load = LoadGenerator(gateway.url, prompts, model=model, threads=args.threads, users=2000, seed=1).start()
        result["rollouts"].append(roll(bad.version, plan, args))
        load.stop()
        result["bad_requests"] = dict(load.counts)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
