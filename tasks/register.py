"""Register task: the challenger becomes a candidate (gate passed) or is kept as rejected, with lineage."""

from __future__ import annotations

import shutil

from prefect import task
from prefect.cache_policies import NO_CACHE

from lifecycle.audit import AuditEvent
from lifecycle.gate import GateDecision
from lifecycle.records import BaseModelRef, Lineage, ModelVersion
from lifecycle.settings import project_root
from lifecycle.status import VersionStatus
from tasks.connect import open_registry
from tasks.data import TrainingData
from tasks.evaluation import Scores
from tasks.events import announce
from tasks.plan import RetrainPlan
from training.env_info import provenance
from training.lora import TrainResult


def build_lineage(plan: RetrainPlan, data: TrainingData, trained: TrainResult) -> Lineage:
    base: BaseModelRef = plan.champion.lineage.base_model
    return Lineage(base_model=base, parent=plan.champion.ref, datasets=data.datasets,
                   recipe=trained.hyperparameters, prompt_format=plan.champion.prompt_format,
                   **provenance(project_root()), wall_time_s=trained.wall_seconds, tokens_per_s=trained.tokens_per_s,
                   train_loss=trained.final_loss, eval_loss=trained.eval_loss, trigger=plan.params.reason)


def registered_by_run(registry, model: str, run: str) -> AuditEvent | None:
    """The ``version.registered`` event of the version this retrain run registered already, if it did."""
    return next((e for e in reversed(registry.store.events_about(model, ["version.registered"]))
                 if e.payload.get("run") == run), None)


@task(name="register", cache_policy=NO_CACHE)
def register(plan: RetrainPlan, data: TrainingData, trained: TrainResult, scores: Scores,
             decision: GateDecision) -> ModelVersion:
    status = VersionStatus.CANDIDATE if decision.passed else VersionStatus.REJECTED
    reason = (f"passed the offline gate against {plan.champion.ref}" if decision.passed else
              "rejected by the offline gate: " + "; ".join(
                  f"{f.check} ({f.verdict})" for f in decision.findings if f.verdict != decision.verdict.PASS))
    with open_registry() as registry:
        # A retry of this flow run (the UI's Retry keeps its id) after the version was registered: that version,
        # never a second one; and its event, if the attempt before died before announcing it.
        earlier = registered_by_run(registry, plan.config.model, plan.run_dir.name)
        if earlier is None:
            version = registry.register(
                plan.config.model, staged=trained.adapter_dir, status=status, reason=reason, actor=plan.config.actor,
                lineage=build_lineage(plan, data, trained), evals=scores.challenger, task=plan.task.name,
                audit_payload={"gate": str(decision.verdict), "champion": plan.champion.ref, "run": plan.run_dir.name})
            passed, verdict = decision.passed, str(decision.verdict)
        else:  # as it was registered then (this attempt's gate may have come out otherwise)
            version, passed = registry.get(earlier.subject), earlier.payload["status"] == VersionStatus.CANDIDATE.value
            verdict = str(earlier.payload.get("gate", decision.verdict))
        payload = {"model": version.model, "version": version.ref, "champion": plan.champion.ref,
                   "verdict": verdict, "reasons": decision.reasons(),
                   "rollout_plan": plan.config.rollout_plan, "run": plan.run_dir.name}
        event = "slm.candidate.published" if passed else "slm.gate.failed"
        if not registry.store.has_event(event, version.ref):
            announce(registry, event, version.model, payload, actor=plan.config.actor, subject=version.ref)
    shutil.rmtree(trained.adapter_dir, ignore_errors=True)  # the registry holds its copy now
    return version
