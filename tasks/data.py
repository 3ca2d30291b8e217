"""Data tasks of the retrain flow: validate the labelled drop, then assemble and snapshot the training set."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_checks.readers import read_jsonl
from data_checks.validation import FailedRule, ValidationReport, check_file
from lifecycle.data import Pair, normalize_prompt
from lifecycle.files import hash_tree, sha256_file, tree_digest
from lifecycle.records import DatasetFingerprint, Frozen, ModelVersion
from tasks.connect import open_registry
from tasks.events import announce
from tasks.plan import RetrainPlan
from training.task_data import retrain_mix

REPLAY_POOL = "replay-pool"
log = logging.getLogger(__name__)


class DataRejected(RuntimeError):
    """The labelled drop broke the data contract: nothing was trained."""


class TrainingData(Frozen):
    pairs: list[Pair]
    datasets: list[DatasetFingerprint]


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data(plan: RetrainPlan) -> ValidationReport:
    golden = [p.prompt for path in plan.golden.values() for p in read_jsonl(path)]
    # check_file, not validate_file: an unreadable drop is refused, audited and reported like any broken rule.
    before = content_digest(plan.data_source)
    report = check_file(plan.data_source, plan.task, golden, data_docs_dir=plan.run_dir / "data_docs")
    if content_digest(plan.data_source) != before:  # rewritten while it was being read: what passed is unknown
        report = ValidationReport(success=False, rows=report.rows, failures=[FailedRule(
            rule="unchanged_while_validated", message="the data changed while it was being validated (an export "
            "still writing it?): run the retrain again once it is complete")])
    report = report.model_copy(update={"content_sha256": before})
    create_markdown_artifact(key="data-validation", markdown=f"`{plan.data_source}`\n\n{report.summary_markdown()}",
                             description="Great Expectations checks on the labelled drop")
    if not report.success:
        raise rejected(plan, report.rows, report.failures, f"{plan.data_source} failed validation: " + "; ".join(
            f"{f.rule} on {f.column or 'table'}: {f.message}" for f in report.failures))
    return report


def rejected(plan: RetrainPlan, rows: int, failures: list[FailedRule], message: str) -> DataRejected:
    """Audit and announce ``slm.data.rejected`` (the monitor's storm rule counts it as a finished retrain), and
    the error to raise."""
    with open_registry() as registry:
        announce(registry, "slm.data.rejected", plan.config.model, actor=plan.config.actor, payload={
            "data": plan.data_source, "rows": rows, "reason": plan.params.reason,
            "failed_rules": [f"{f.rule}:{f.column or '-'}:{f.unexpected_count}" for f in failures]})
    return DataRejected(message)


def content_digest(source: str) -> str | None:
    """sha256 of a drop as it is on disk: a file's bytes, a saved datasets folder's file hashes (``FOLDER@SPLIT``
    names the folder); None when there is nothing to hash (the validation reported that already)."""
    path = Path(source)
    if not path.exists() and "@" in source:
        path = Path(source.rsplit("@", 1)[0])
    if path.is_file():
        return sha256_file(path)
    return tree_digest(hash_tree(path)) if path.is_dir() else None


@task(name="assemble-training-data", cache_policy=NO_CACHE)
def assemble_training_data(plan: RetrainPlan, validated: ValidationReport | None = None) -> TrainingData:
    """The drop plus a replay sample of the champion's replay pool, each snapshotted by content.

    The replay pool is every row the model line has learnt from: v1's training data, then each retrain's pool with
    its drop added (``replay-pool`` in the lineage; a champion recorded before it had one replays from its
    ``train``). Sampling from the champion's ``train`` instead, itself a sample, thinned the old rows with each
    generation (4,500 -> 3,343 -> 2,455 of 8,000 over three promotions) until the old intents were forgotten.

    ``validated``: the drop's validation; a drop whose content changed since (an export rewriting the file
    between the two steps) is refused, never trained on unchecked."""
    drop = read_jsonl(plan.data_source)  # read, then hashed: what was read is what was checked
    if validated is not None and validated.content_sha256 != (now := content_digest(plan.data_source)):
        raise rejected(plan, validated.rows, [FailedRule(rule="unchanged_since_validated", message="changed")], (
            f"{plan.data_source} changed after it was validated (sha256 {validated.content_sha256} then, {now} now): "
            "nothing was trained on it; run the retrain again on the data as it is now"))
    with open_registry() as registry:
        source = replay_source(plan.champion)
        pool = read_jsonl(registry.artifacts.dataset_path(source.snapshot))
        # A drop used again (or a cumulative export) would be replayed on top of itself, its rows weighed twice;
        # and a row the drop relabels must not be replayed with its old label beside the new one. So the drop's
        # prompts leave the pool, counted, under the normalization by which two prompts are the same input.
        # A golden-set prompt never enters training: the drop's validation checks the drop, and the pool is
        # checked here (a golden set regenerated, or a snapshot edited by hand, must not leak into what is scored).
        in_drop = {normalize_prompt(p.prompt) for p in drop}
        golden = {normalize_prompt(p.prompt) for path in plan.golden.values() for p in read_jsonl(path)}
        fresh = [p for p in pool if normalize_prompt(p.prompt) not in in_drop]
        kept = [p for p in fresh if normalize_prompt(p.prompt) not in golden]
        left_out = ", ".join(f"{n} rows {why}" for n, why in ((len(pool) - len(fresh), "also in the drop"),
                                                             (len(fresh) - len(kept), "on a golden set")) if n)
        left_out, fresh = (f" ({left_out} left out of the pool)" if left_out else ""), kept
        replay_rows = min(plan.config.replay_rows, len(fresh))
        if replay_rows < plan.config.replay_rows:  # the forgetting case: say it where the lineage is read
            log.warning("the replay pool holds %d rows, fewer than the %d to replay: %d replayed", len(fresh),
                        plan.config.replay_rows, replay_rows)
            left_out += f" (fewer than the {plan.config.replay_rows} asked: the pool holds {len(fresh)})"
        pairs = retrain_mix(drop, fresh, replay_rows, seed=plan.task.seed)
        whose = f"{plan.champion.ref} {source.name}"
        datasets = [registry.snapshot_dataset("labelled-drop", drop, plan.data_source),
                    registry.snapshot_dataset("train", pairs, f"labelled-drop + {replay_rows} replayed rows of "
                                              f"{whose}{left_out}"),
                    registry.snapshot_dataset(REPLAY_POOL, fresh + drop, f"{whose}{left_out} + labelled-drop: "
                                              "what the next retrain replays from"),
                    *(registry.snapshot_dataset(name, read_jsonl(path), str(path))
                      for name, path in plan.golden.items())]
    return TrainingData(pairs=pairs, datasets=datasets)


def replay_source(champion: ModelVersion) -> DatasetFingerprint:
    """The dataset of ``champion``'s lineage that a retrain replays from: its ``replay-pool``, else its ``train``."""
    recorded = {d.name: d for d in champion.lineage.datasets} if champion.lineage else {}
    source = recorded.get(REPLAY_POOL) or recorded.get("train")
    if source is None or source.snapshot is None:
        raise ValueError(f"{champion.ref} records no training-data snapshot to replay from")
    return source
