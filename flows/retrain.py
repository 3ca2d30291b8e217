"""Retrain flow: validate data → LoRA fine-tune → benchmark vs champion → gate → register.

Inputs: :class:`lifecycle.config.RetrainParams` (flat fields; the Prefect UI draws them as a form, and the
drift automation fills them from the ``slm.drift.detected`` event payload). Defaults come from
``configs/retrain.yaml``.

Outputs: a registered version — ``candidate`` (event ``slm.candidate.published``) or ``rejected`` (event
``slm.gate.failed``, run still Completed) — with lineage, eval reports and a model card; Prefect artifacts
for each step. Data that breaks the contract fails the run (event ``slm.data.rejected``), nothing trained.

Run it:  ``slm retrain [--config FILE] [--data PATH]``  (ephemeral Prefect), or deploy with
``prefect --no-prompt deploy --all`` and start ``retrain/retrain`` from the UI.
"""

from __future__ import annotations

import uuid

from prefect import flow
from prefect.runtime import flow_run

from lifecycle.config import RetrainParams
from lifecycle.records import Frozen
from tasks.data import assemble_training_data, validate_data
from tasks.evaluation import benchmark
from tasks.gate import gate
from tasks.plan import plan_retrain
from tasks.register import register, registered_already
from tasks.report import publish_report
from tasks.training import fine_tune


class RetrainOutcome(Frozen):
    version: str
    status: str
    verdict: str
    reasons: list[str]
    champion: str


@flow(name="retrain", log_prints=True)
def retrain(params: RetrainParams = RetrainParams()) -> RetrainOutcome:
    # Outside a flow run (``retrain.fn``) there is no run id: a unique one, never one a later call would take for
    # its own retry.
    plan = plan_retrain(params, run_id=str(flow_run.get_id() or f"local-{uuid.uuid4().hex[:12]}"))
    done = registered_already(plan)  # a Retry of a run that registered its version: announce it, nothing more
    if done is None:
        validated = validate_data(plan)
        data = assemble_training_data(plan, validated)
        trained = fine_tune(plan, data)
        scores = benchmark(plan, trained.adapter_dir)
        decision = gate(plan, scores)
        done = register(plan, data, trained, scores, decision)
    publish_report(plan.config.model)
    return RetrainOutcome(version=done.version.ref, status=done.version.status.value, verdict=done.verdict,
                          reasons=done.reasons, champion=done.champion)
