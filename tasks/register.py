"""Register task: the challenger becomes a candidate (gate passed) or is kept as rejected, with lineage."""

from __future__ import annotations

import shutil

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from lifecycle.audit import AuditEvent
from lifecycle.gate import GateDecision
from lifecycle.records import BaseModelRef, Frozen, Lineage, ModelVersion
from lifecycle.settings import get_settings, project_root
from lifecycle.status import VersionStatus
from lifecycle.verdict import Verdict
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
                   **provenance(project_root(), get_settings().torch_threads), wall_time_s=trained.wall_seconds,
                   tokens_per_s=trained.tokens_per_s, train_loss=trained.final_loss, eval_loss=trained.eval_loss,
                   trigger=plan.params.reason)


def registered_by_run(registry, model: str, run: str) -> AuditEvent | None:
    """The ``version.registered`` event of the version this retrain run registered already, if it did."""
    return next((e for e in reversed(registry.store.events_about(model, ["version.registered"]))
                 if e.payload.get("run") == run), None)


class Registered(Frozen):
    """What a retrain run registered, as the run's outcome and its announcement say it."""

    version: ModelVersion
    verdict: str = Field(description="pass, fail or inconclusive: pass exactly when the version is a candidate")
    reasons: list[str]
    champion: str = Field(description="the champion its gate compared it with")


def champion_moved(registry, plan: RetrainPlan) -> str | None:
    """Why a candidate of this run must not be published: the champion its gate compared it with is no longer the
    champion (a rollout promoted another while it trained); None if it still is. A candidate gated against another
    version would be rolled out against today's champion, which no offline check compared it with."""
    now = registry.store.get_alias(plan.config.model, "champion")
    if now is None or f"{plan.config.model}:v{now}" == plan.champion.ref:
        return None
    return (f"[fail] champion moved: the gate compared this version with {plan.champion.ref}, and the champion is "
            f"{plan.config.model}:v{now} now (promoted during this run): retrain against it")


@task(name="register", cache_policy=NO_CACHE)
def register(plan: RetrainPlan, data: TrainingData, trained: TrainResult, scores: Scores,
             decision: GateDecision) -> Registered:
    with open_registry() as registry:
        # A retry of this flow run (the UI's Retry keeps its id) after the version was registered: that version,
        # never a second one; and its event, if the attempt before died before announcing it.
        done = _registered_before(registry, plan)
        if done is None:
            passed, verdict, reasons = decision.passed, str(decision.verdict), decision.reasons()
            if passed and (moved := champion_moved(registry, plan)):
                passed, verdict, reasons = False, str(Verdict.FAIL), [*reasons, moved]
            reason = (f"passed the offline gate against {plan.champion.ref}" if passed else
                      "rejected by the offline gate: " + "; ".join(
                          [f"{f.check} ({f.verdict})" for f in decision.findings if f.verdict != decision.verdict.PASS]
                          + (["champion moved"] if decision.passed else [])))
            version = registry.register(
                plan.config.model, staged=trained.adapter_dir,
                status=VersionStatus.CANDIDATE if passed else VersionStatus.REJECTED, reason=reason,
                actor=plan.config.actor, lineage=build_lineage(plan, data, trained), evals=scores.challenger,
                task=plan.task.name, audit_payload={"gate": verdict, "champion": plan.champion.ref,
                                                    "run": plan.run_dir.name, "reasons": reasons})
            done = Registered(version=version, verdict=verdict, reasons=reasons, champion=plan.champion.ref)
        _announce(registry, plan, done)
    shutil.rmtree(trained.adapter_dir, ignore_errors=True)  # the registry holds its copy now
    return done


@task(name="registered-already", cache_policy=NO_CACHE)
def registered_already(plan: RetrainPlan) -> Registered | None:
    """At the start of a retrain run: the version it registered already (a Retry of a run whose last steps
    failed, e.g. its report), announced if the attempt before died first; None for a run that registered nothing.
    The retry then validates, trains and gates nothing again: its drop may be gone or changed since (a false
    ``slm.data.rejected`` for a published version), and a second gate could come out otherwise."""
    with open_registry() as registry:
        done = _registered_before(registry, plan)
        if done is not None:
            _announce(registry, plan, done)
    return done


def _registered_before(registry, plan: RetrainPlan) -> Registered | None:
    earlier = registered_by_run(registry, plan.config.model, plan.run_dir.name)
    if earlier is None:
        return None
    version = registry.get(earlier.subject)
    passed = earlier.payload["status"] == VersionStatus.CANDIDATE.value
    verdict = str(earlier.payload.get("gate") or (Verdict.PASS if passed else Verdict.FAIL))
    reasons = earlier.payload.get("reasons") or [str(earlier.payload.get("reason", ""))]
    return Registered(version=version, verdict=verdict, reasons=list(reasons),
                      champion=str(earlier.payload.get("champion") or plan.champion.ref))


def _announce(registry, plan: RetrainPlan, done: Registered) -> None:
    """Its event (``slm.candidate.published`` or ``slm.gate.failed``), unless it was announced already."""
    version = done.version
    event = "slm.candidate.published" if version.status is VersionStatus.CANDIDATE else "slm.gate.failed"
    if registry.store.has_event(event, version.ref):
        return
    payload = {"model": version.model, "version": version.ref, "champion": done.champion, "verdict": done.verdict,
               "reasons": done.reasons, "rollout_plan": plan.config.rollout_plan, "run": plan.run_dir.name}
    announce(registry, event, version.model, payload, actor=plan.config.actor, subject=version.ref)
