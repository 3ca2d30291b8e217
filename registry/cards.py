"""Model cards: the README.md of each version's folder, with Hub metadata and a ``model-index``.

Rendered through huggingface_hub's own ``ModelCardData``/``EvalResult`` so the metadata is what the Hub
validates; the body says where the version came from in words a reviewer can check.
"""

from __future__ import annotations

from lifecycle.records import DatasetFingerprint, EvalReport, Lineage


def _dataset_id(data: DatasetFingerprint) -> str:
    """The Hub dataset repo of a snapshot stored there (``hf://datasets/<repo>@<commit>/...``), else its role."""
    if data.snapshot and data.snapshot.startswith("hf://datasets/"):
        return data.snapshot.removeprefix("hf://datasets/").split("@", 1)[0]
    return data.name


def render_model_card(*, ref: str, status: str, reason: str, lineage: Lineage, evals: list[EvalReport],
                      task: str, license: str = "cc-by-4.0") -> str:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    results = [
        EvalResult(task_type="text-classification", task_name="intent routing", dataset_type=r.benchmark,
                   dataset_name=r.benchmark, dataset_revision=r.benchmark_sha256, metric_type="exact_match",
                   metric_name="exact match", metric_value=round(r.exact_match, 4))
        for r in evals
    ]
    base = lineage.base_model
    hub_id = base.model_id.removeprefix("hf://")  # an upstream Hub base (hf://OWNER/NAME) names its repo plainly
    on_hub = "://" not in hub_id  # a Hub repo id, pinned by commit sha (local bases are local:// uris)
    data = ModelCardData(
        base_model=hub_id if on_hub else None,
        base_model_revision=base.revision if on_hub else None,  # the Hub's base_model has no revision field
        datasets=[_dataset_id(d) for d in lineage.datasets if d.name.startswith("train")] or None,
        library_name="peft" if lineage.parent is not None or lineage.recipe.get("r") else "transformers",
        license=license, tags=["slm-lifecycle", task, status], model_name=ref,
        eval_results=results or None,
    )
    rows = "\n".join(f"| {r.benchmark} | {r.n_items} | {r.exact_match:.3f} | {r.malformed_rate:.3f} | "
                     f"{r.latency_p95_ms:.1f} |" for r in evals)
    data_rows = "\n".join(f"| {d.name} | {d.rows} | `{d.sha256[:16]}` | {d.snapshot or d.source} |"
                          for d in lineage.datasets)
    dirty = " (uncommitted changes)" if lineage.code_dirty else ""
    body = f"""
# {ref}

Status: **{status}** — {reason}

Task: {task}. Prompt format `{lineage.prompt_format}` (serving uses exactly this template and decoding).
Base model: `{lineage.base_model.model_id}` at `{lineage.base_model.revision}`.
Trained by slm-lifecycle at commit `{lineage.code_commit or 'unknown'}`{dirty}
on {lineage.hardware or 'unknown hardware'} in {lineage.wall_time_s:.1f} s ({lineage.tokens_per_s:.0f} tokens/s).
Trigger: {lineage.trigger}.

## Evaluation

| golden set | items | exact match | malformed | p95 latency (ms) |
|---|---|---|---|---|
{rows}

## Data

| role | rows | sha256 | snapshot |
|---|---|---|---|
{data_rows}
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))
