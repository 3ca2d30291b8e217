"""Gate task: the pure decision from lifecycle.gate, published as an artifact and recorded in the audit log."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lifecycle.gate import GateDecision, evaluate_gate
from tasks.connect import open_registry
from tasks.evaluation import Scores
from tasks.plan import RetrainPlan


def decision_markdown(decision: GateDecision) -> str:
    lines = [f"**Gate verdict: {decision.verdict}**", "", "| check | verdict | reason |", "|---|---|---|"]
    lines += [f"| {f.check} | {f.verdict} | {f.reason} |" for f in decision.findings]
    return "\n".join(lines)


@task(name="gate", cache_policy=NO_CACHE)
def gate(plan: RetrainPlan, scores: Scores) -> GateDecision:
    decision = evaluate_gate(scores.champion, scores.challenger, plan.gate)
    create_markdown_artifact(key="gate-verdict", markdown=decision_markdown(decision),
                             description="offline gate: paired bootstrap on the same golden items")
    with open_registry() as registry:
        registry.store.append_audit(actor=plan.config.actor, action="gate.decided", subject=plan.config.model,
                                    payload={"verdict": str(decision.verdict), "champion": plan.champion.ref,
                                             "run": plan.run_dir.name,  # the version's number does not exist yet
                                             "reasons": decision.reasons(),
                                             "intervals": {k: v.model_dump() for k, v in decision.intervals.items()},
                                             "policy": plan.gate.model_dump(mode="json")})
    return decision
