"""Register task: the challenger becomes a candidate (gate passed against the champion, which is still the champion)
or is kept as rejected, with lineage."""

from __future__ import annotations

import shutil

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from lifecycle.audit import AuditEvent
from lifecycle.gate import GateDecision, advisory
from lifecycle.records import BaseModelRef, Frozen, Lineage, ModelVersion
from lifecycle.settings import get_settings, project_root
from lifecycle.status import VersionStatus
from lifecycle.verdict import Verdict
from registry.store import ChampionReplaced
from tasks.connect import open_registry
from tasks.data import TrainingData
from tasks.evaluation import Scores
from tasks.events import announce
from tasks.plan import RetrainPlan
from training.env_info import provenance
from training.lora import TrainResult

PUBLISHED, GATE_FAILED = "slm.candidate.published", "slm.gate.failed"


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
    published: bool = Field(description="registered as a candidate (its status may have moved on since)")
    verdict: str = Field(description="pass, fail or inconclusive: pass exactly when it was registered a candidate")
    reasons: list[str]
    champion: str = Field(description="the champion its gate compared it with")


def champion_moved(registry, model: str, gated_against: str) -> str | None:
    """Why a candidate must not be published: the champion its gate compared it with (``gated_against``) is no
    longer the champion (a rollout promoted another, or an operator rolled back, while it trained); None if it still
    is. A candidate gated against another version would be rolled out against today's champion, which no offline
    check compared it with."""
    now = registry.store.get_alias(model, "champion")
    if now is None or f"{model}:v{now}" == gated_against:
        return None
    return (f"[fail] champion replaced: the gate compared this version with {gated_against}, and the champion is "
            f"{model}:v{now} now: retrain against it, or roll this one out by hand")


@task(name="register", cache_policy=NO_CACHE)
def register(plan: RetrainPlan, data: TrainingData, trained: TrainResult, scores: Scores,
             decision: GateDecision) -> Registered:
    with open_registry() as registry:
        # A retry of this flow run (the UI's Retry keeps its id) after the version was registered: that version,
        # never a second one (registered_already finds it first; this is the same check where the run came here).
        done = _registered_before(registry, plan)
        if done is None:
            moved = champion_moved(registry, plan.config.model, plan.champion.ref) if decision.passed else None
            try:
                done = _register(registry, plan, data, trained, scores, decision, moved)
            except ChampionReplaced:  # promoted between the check and the record: nothing was registered
                moved = champion_moved(registry, plan.config.model, plan.champion.ref)
                done = _register(registry, plan, data, trained, scores, decision, moved)
        done = _announce(registry, plan, done)
    shutil.rmtree(trained.adapter_dir, ignore_errors=True)  # the registry holds its copy now
    return done


def _register(registry, plan: RetrainPlan, data: TrainingData, trained: TrainResult, scores: Scores,
              decision: GateDecision, moved: str | None) -> Registered:
    """Register the challenger: a candidate if its gate passed and the champion it was gated against still is
    (checked again when it is recorded, under the model's lock: :class:`ChampionReplaced`), else rejected."""
    gated = plan.champion.ref
    passed, verdict, reasons = decision.passed, str(decision.verdict), decision.reasons()
    if passed and moved:
        passed, verdict, reasons = False, str(Verdict.FAIL), [*reasons, moved]
        reason = f"passed the offline gate against {gated}, but the champion was replaced since: not published"
    elif passed:
        reason = f"passed the offline gate against {gated}"
    else:
        reason = "rejected by the offline gate: " + "; ".join(
            f"{f.check} ({f.verdict})" for f in decision.findings if f.verdict != decision.verdict.PASS
            and not advisory(f))
    version = registry.register(
        plan.config.model, staged=trained.adapter_dir, status=VersionStatus.CANDIDATE if passed else
        VersionStatus.REJECTED, reason=reason, actor=plan.config.actor, lineage=build_lineage(plan, data, trained),
        evals=scores.challenger, task=plan.task.name, champion=int(gated.rsplit(":v", 1)[1]) if passed else None,
        audit_payload={"gate": verdict, "champion": gated, "run": plan.run_dir.name, "reasons": reasons})
    return Registered(version=version, published=passed, verdict=verdict, reasons=reasons, champion=gated)


@task(name="registered-already", cache_policy=NO_CACHE)
def registered_already(plan: RetrainPlan) -> Registered | None:
    """At the start of a retrain run: the version it registered already (a Retry of a run whose last steps
    failed, e.g. its report), announced if the attempt before died first; None for a run that registered nothing.
    The retry then validates, trains and gates nothing again: its drop may be gone or changed since (a false
    ``slm.data.rejected`` for a published version), and a second gate could come out otherwise."""
    with open_registry() as registry:
        done = _registered_before(registry, plan)
        return None if done is None else _announce(registry, plan, done)


def _registered_before(registry, plan: RetrainPlan) -> Registered | None:
    earlier = registered_by_run(registry, plan.config.model, plan.run_dir.name)
    if earlier is None:
        return None
    passed = earlier.payload["status"] == VersionStatus.CANDIDATE.value
    verdict = str(earlier.payload.get("gate") or (Verdict.PASS if passed else Verdict.FAIL))
    reasons = earlier.payload.get("reasons") or [str(earlier.payload.get("reason", ""))]
    return Registered(version=registry.get(earlier.subject), published=passed, verdict=verdict, reasons=list(reasons),
                      champion=str(earlier.payload.get("champion") or plan.champion.ref))


def _announce(registry, plan: RetrainPlan, done: Registered) -> Registered:
    """Its event as registered (``slm.candidate.published`` or ``slm.gate.failed``), unless either was announced
    already (a retry long after: the version may be promoted or rolled back by now). A candidate whose gated
    champion was replaced before it was announced (its first attempt died before announcing) is not published:
    the reasons returned say so."""
    version = done.version
    if any(registry.store.has_event(e, version.ref) for e in (PUBLISHED, GATE_FAILED)):
        return done
    if done.published and (moved := champion_moved(registry, version.model, done.champion)):
        return done.model_copy(update={"reasons": [*done.reasons, f"{moved}; {version.ref} was not announced"]})
    payload = {"model": version.model, "version": version.ref, "champion": done.champion, "verdict": done.verdict,
               "reasons": done.reasons, "rollout_plan": plan.config.rollout_plan, "run": plan.run_dir.name}
    announce(registry, PUBLISHED if done.published else GATE_FAILED, version.model, payload,
             actor=plan.config.actor, subject=version.ref)
    return done
