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

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", default="configs/rollout.yaml")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--look", type=float, default=5.0, help="seconds between looks")
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args()

    from slm_cli.flows_cmd import prefect_env

    prefect_env()
    from lifecycle.config import RetrainParams
    from lifecycle.data import read_pairs
    from lifecycle.settings import get_settings
    from slm_cli import live
    from slm_cli.flows_cmd import run_retrain

    settings = get_settings()
    prompts = read_pairs(settings.home / "data" / "golden-before.jsonl")
    model = settings.model_name
    result: dict = {"plan": args.plan, "threads": args.threads, "rollouts": []}
    with live.gateway() as url:
        load = live.users(url, prompts, model=model, threads=args.threads)
        result["rollouts"].append(live.roll(f"{model}:v2", args.plan, look_s=args.look, settle_s=args.settle,
                                            reviewer="bench"))
        load.stop()
        result["good_requests"] = dict(load.counts)
        # Gated on the drifted golden set only: it passes offline, though it forgot the old routes.
        bad = run_retrain(RetrainParams(replay_rows=0, benchmarks="golden-drifted",
                                        gate="configs/gate-drifted-only.yaml",
                                        reason="bench: drifted drop alone, drifted-only gate"))
        load = live.users(url, prompts, model=model, threads=args.threads, seed=1)
        result["rollouts"].append(live.roll(bad.version, args.plan, look_s=args.look, settle_s=args.settle,
                                            reviewer="bench"))
        load.stop()
        result["bad_requests"] = dict(load.counts)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
