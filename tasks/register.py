"""Register task: the challenger becomes a candidate (gate passed) or is kept as rejected, with lineage."""

from __future__ import annotations

import shutil

from prefect import task
from prefect.cache_policies import NO_CACHE

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


@task(name="register", cache_policy=NO_CACHE)
def register(plan: RetrainPlan, data: TrainingData, trained: TrainResult, scores: Scores,
             decision: GateDecision) -> ModelVersion:
    status = VersionStatus.CANDIDATE if decision.passed else VersionStatus.REJECTED
    reason = (f"passed the offline gate against {plan.champion.ref}" if decision.passed else
              "rejected by the offline gate: " + "; ".join(
                  f"{f.check} ({f.verdict})" for f in decision.findings if f.verdict != decision.verdict.PASS))
    with open_registry() as registry:
        version = registry.register(
            plan.config.model, staged=trained.adapter_dir, status=status, reason=reason, actor=plan.config.actor,
            lineage=build_lineage(plan, data, trained), evals=scores.challenger, task=plan.task.name,
            audit_payload={"gate": str(decision.verdict), "champion": plan.champion.ref, "run": plan.run_dir.name})
        payload = {"model": version.model, "version": version.ref, "champion": plan.champion.ref,
                   "verdict": str(decision.verdict), "reasons": decision.reasons(),
                   "rollout_plan": plan.config.rollout_plan, "run": plan.run_dir.name}
        event = "slm.candidate.published" if decision.passed else "slm.gate.failed"
        announce(registry, event, version.model, payload, actor=plan.config.actor, subject=version.ref)
    shutil.rmtree(trained.adapter_dir, ignore_errors=True)  # the registry holds its copy now
    return version
