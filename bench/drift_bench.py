"""Drift monitor benchmark (issue #4; results in bench/RESULTS.md, "Drift monitor").

1. 100,000 logged prompts: a temporary SQLite prediction log filled with BANKING77 traffic (the "before"
   world's test queries, and a drifted mix with 30 % of the new intents' queries), then timed:
   reading the window, building the frame, and ``data_checks.drift.check_drift`` with the shipped policy
   (sampling to ``sample_cap``), with and without the HTML report. Baselines in the same run: the same
   columns on every row (no sampling), and Evidently's full ``DataDriftPreset`` + ``TextEvals`` with
   descriptors on every row (the raw texts through the domain classifier).
2. Noise: scores of "before" traffic against the training reference at 200 to 2,000 rows (6 seeds each),
   the figures behind ``min_rows`` and the thresholds in configs/monitor.yaml.
3. The ``prompt_embedding`` column (off in the shipped policy; ``--embedding``): its cost (the encoder's load,
   a first check that embeds the reference too, a check with the reference cached) and its ROC AUC on the old
   world, the new products and a 10 % mix, at 500 and 1,000 rows a side over 3 seeds; the mmd, ratio and
   distance methods' scores on the old world and the new products at 400 and 1,000. It embeds at most
   ``embedding_sample`` rows a side, so the window's size does not change its cost.
4. Why the column calls Evidently's method and not its ``EmbeddingsDrift`` metric (``--embedding-metric``): both on
   the same embeddings (500 rows a side, the old world against the new products), each 3 times, and the metric's
   share spent in scikit-learn's t-SNE, which it fits for its widget (cProfile, one run).

Run: ``.venv/bin/python bench/drift_bench.py [--rows 100000] [--skip-full] [--embedding] [--embedding-metric]``.
Needs only the bundled data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, round(time.perf_counter() - start, 2)


def fill_log(engine, model: str, pairs, completions, n: int, seed: int) -> None:
    from lifecycle.predictions import Prediction
    from registry.predictions import PredictionStore

    rng = random.Random(seed)
    start = datetime(2026, 11, 26, tzinfo=UTC)
    store = PredictionStore(engine)
    batch = []
    for i in range(n):
        k = rng.randrange(len(pairs))
        batch.append(Prediction(ts=start + timedelta(milliseconds=500 * i), request_id=f"{model}-{i}", model=model,
                                version=1, role="champion", user_hash=f"u{i % 997}", prompt=pairs[k].prompt,
                                completion=completions[k], latency_ms=8 + rng.random() * 10, outcome="ok",
                                served=True))
        if len(batch) == 5000:
            store.insert_many(batch)
            batch = []
    store.insert_many(batch)


def full_preset(reference, current) -> float:
    """Evidently's full preset on every row: data drift on all columns (texts by domain classifier) + TextEvals."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.descriptors import NonLetterCharacterPercentage, TextLength, WordCount
    from evidently.presets import DataDriftPreset, TextEvals

    start = time.perf_counter()
    definition = DataDefinition(text_columns=["prompt", "completion"])
    descriptors = [TextLength("prompt", alias="length"), WordCount("prompt", alias="words"),
                   NonLetterCharacterPercentage("prompt", alias="non_letter")]
    cols = ["prompt", "completion"]
    ref, cur = (Dataset.from_pandas(df[cols], data_definition=definition, descriptors=descriptors)
                for df in (reference, current))
    Report([DataDriftPreset(), TextEvals()], include_tests=True).run(current_data=cur, reference_data=ref).dict()
    return round(time.perf_counter() - start, 2)


def large_window(rows: int, skip_full: bool) -> dict:
    from data_checks.drift import check_drift, frame_from_columns, frame_from_pairs
    from lifecycle.config import load_yaml_config
    from lifecycle.drift_policy import DriftPolicy, decide_drift
    from lifecycle.task import load_task
    from registry.predictions import PredictionStore
    from registry.store import RegistryStore
    from training.task_data import read_split, split_worlds

    spec = load_task(REPO / "configs/task.yaml", REPO)
    worlds = split_worlds(spec)
    before = [p for p in read_split(spec, "test") if not spec.is_drifted(p.completion)]
    drifted = worlds.drifted_labelled
    old = spec.before_labels
    # 30 % new-intent queries; the champion routes them to a few old intents it knows.
    mix = before + drifted[: int(len(before) * 0.3 / 0.7)]
    mix_completions = [p.completion if not spec.is_drifted(p.completion) else old[i % 5] for i, p in enumerate(mix)]
    policy = load_yaml_config(DriftPolicy, REPO / "configs/monitor.yaml")
    reference = frame_from_pairs(worlds.before_train)
    out: dict = {"rows": rows, "reference_rows": len(reference), "sample_cap": policy.sample_cap}
    _, out["import_evidently_s"] = timed(__import__, "evidently")
    with tempfile.TemporaryDirectory() as tmp:
        store = RegistryStore.open(f"sqlite:///{tmp}/registry.db")
        fill_log(store.engine, "before", before, [p.completion for p in before], rows, seed=1)
        fill_log(store.engine, "drifted", mix, mix_completions, rows, seed=2)
        since, until = datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
        for world in ("before", "drifted"):
            columns, read_s = timed(PredictionStore(store.engine).served_columns, world, since, until)
            current, frame_s = timed(frame_from_columns, columns)
            logged, records_s = timed(PredictionStore(store.engine).window, world, since, until, limit=None)
            del logged
            report, check_s = timed(check_drift, reference, current, policy)
            _, html_s = timed(check_drift, reference, current, policy, html_path=Path(tmp) / f"{world}.html")
            decision = decide_drift(report.columns, None, policy, rows=report.current_rows)
            unsampled = policy.model_copy(update={"sample_cap": 10 * rows})
            full_cols, full_cols_s = timed(check_drift, reference, current, unsampled)
            out[world] = {
                "read_columns_s": read_s, "frame_s": frame_s, "read_as_records_s": records_s, "check_s": check_s,
                "check_with_html_s": html_s,
                "verdict": str(decision.verdict), "drifted": report.drifted_columns,
                "scores_sampled": {c.column: round(c.score, 3) for c in report.columns if c.score is not None},
                "same_columns_all_rows_s": full_cols_s,
                "scores_all_rows": {c.column: round(c.score, 3) for c in full_cols.columns if c.score is not None}}
            if world == "drifted" and not skip_full:
                out[world]["full_preset_all_rows_s"] = full_preset(reference, current)
        store.close()
    return out


def frames() -> tuple:
    """(the champion's training prompts, the old world's test queries, the new products' queries) as frames."""
    from data_checks.drift import frame_from_pairs
    from lifecycle.task import load_task
    from training.task_data import read_split, split_worlds

    spec = load_task(REPO / "configs/task.yaml", REPO)
    worlds = split_worlds(spec)
    return (frame_from_pairs(worlds.before_train),
            frame_from_pairs([p for p in read_split(spec, "test") if not spec.is_drifted(p.completion)]),
            frame_from_pairs(worlds.drifted_labelled))


def noise(seeds: int = 6) -> dict:
    """Max score over seeds of same-world ("before") traffic at several window sizes."""
    import pandas as pd

    from data_checks.drift import check_drift
    from lifecycle.config import load_yaml_config
    from lifecycle.drift_policy import DriftPolicy

    reference, before, _ = frames()
    policy = load_yaml_config(DriftPolicy, REPO / "configs/monitor.yaml")
    table = {}
    for n in (200, 500, 1000, 2000):
        scores = [{c.column: c.score for c in check_drift(
            reference, before.sample(n, random_state=s), policy.model_copy(update={"seed": s})).columns
            if c.score is not None} for s in range(seeds)]
        table[n] = {k: round(float(v), 3) for k, v in pd.DataFrame(scores).max().items()}
    return table


def embedding_column(seeds: int = 3) -> dict:
    import pandas as pd
    import torch

    from data_checks import embeddings
    from data_checks.drift import check_drift
    from lifecycle.drift_policy import DriftPolicy

    torch.set_num_threads(1)  # as tasks.monitor sets it (settings.torch_threads)
    reference, before, drifted = frames()
    out: dict = {"model": embeddings.model_name()}
    _, out["load_encoder_s"] = timed(embeddings._encoder)
    policy = DriftPolicy(columns={"prompt_embedding": {"method": "model", "threshold": 0.6}})
    with tempfile.TemporaryDirectory() as cache:
        _, out["first_check_s"] = timed(check_drift, reference, before, policy, embedding_cache=Path(cache))
        _, out["cached_reference_check_s"] = timed(check_drift, reference, before, policy, embedding_cache=Path(cache))
    out["embedding_sample"] = policy.embedding_sample
    for sample in (500, 1000):
        rows = []
        for s in range(seeds):
            p = policy.model_copy(update={"embedding_sample": sample, "seed": s})
            mix = pd.concat([before.sample(1800, random_state=s), drifted.sample(200, random_state=s)])
            rows.append({name: round(check_drift(reference, cur, p).columns[0].score, 3)
                         for name, cur in (("before", before), ("drifted", drifted), ("mix_10pc", mix))})
        out[f"roc_auc_at_{sample}"] = rows
    # Evidently's other embedding methods at their default thresholds, seed 0 (the figures behind the tests').
    with tempfile.TemporaryDirectory() as cache:
        for method, threshold in (("mmd", 0.015), ("ratio", 0.2), ("distance", 0.2)):
            for sample in (400, 1000):
                p = DriftPolicy(columns={"prompt_embedding": {"method": method, "threshold": threshold}},
                                embedding_sample=sample)
                out[f"{method}_at_{sample}"] = {
                    name: round(check_drift(reference, cur, p, embedding_cache=Path(cache)).columns[0].score, 4)
                    for name, cur in (("before", before), ("drifted", drifted))}
    return out


def embedding_metric(rows: int = 500, repeats: int = 3) -> dict:
    """Evidently's EmbeddingsDrift metric in a Report against the method data_checks.drift calls, same inputs."""
    import cProfile
    import pstats

    import pandas as pd
    import torch
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics.embeddings import EmbeddingsDrift, ModelDriftMethod

    from data_checks import embeddings

    torch.set_num_threads(1)
    reference, _, drifted = frames()
    names = [f"e{k}" for k in range(embeddings.DIMENSIONS)]
    sides = [pd.DataFrame(embeddings.embed(df["prompt"].dropna().sample(rows, random_state=k).tolist()), columns=names)
             for k, df in enumerate((reference, drifted))]
    definition = DataDefinition(numerical_columns=names, embeddings={"prompt": names})

    def method() -> float:
        ref, cur = (side.copy() for side in sides)  # the method adds a label column to what it is given
        return float(ModelDriftMethod(threshold=0.6, bootstrap=False)(cur, ref)[0])

    def metric() -> float:
        report = Report([EmbeddingsDrift(embeddings_name="prompt", drift_method=ModelDriftMethod(
            threshold=0.6, bootstrap=False))])
        snapshot = report.run(Dataset.from_pandas(sides[1].copy(), data_definition=definition),
                              Dataset.from_pandas(sides[0].copy(), data_definition=definition))
        return float(snapshot.dict()["metrics"][0]["value"])

    out: dict = {"rows_a_side": rows}
    for name, fn in (("method", method), ("metric_in_report", metric)):
        runs = [timed(fn) for _ in range(repeats)]
        out[name] = {"score": round(runs[0][0], 3), "seconds": [t for _, t in runs]}
    profile = cProfile.Profile()
    profile.runcall(metric)
    stats = pstats.Stats(profile)
    total = max(v[3] for v in stats.stats.values())  # the outermost call's cumulative time
    tsne = max((v[3] for (file, _, func), v in stats.stats.items()
                if func == "fit_transform" and file.endswith("_t_sne.py")), default=0.0)
    out["tsne_share_of_metric"] = {"tsne_s": round(tsne, 2), "metric_s": round(total, 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--skip-full", action="store_true", help="skip the slow full-preset baseline")
    parser.add_argument("--embedding", action="store_true", help="also the prompt_embedding column (3 min)")
    parser.add_argument("--embedding-metric", action="store_true",
                        help="only Evidently's EmbeddingsDrift metric against the method the column calls (1 min)")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")  # sklearn convergence warnings from Evidently's text drift
    if args.embedding_metric:
        print(json.dumps({"date": f"{datetime.now(UTC):%Y-%m-%d}", "embedding_metric": embedding_metric()}, indent=2))
        return
    out = {"date": f"{datetime.now(UTC):%Y-%m-%d}", "large_window": large_window(args.rows, args.skip_full),
           "noise_max_of_6_seeds": noise()}
    if args.embedding:
        out["prompt_embedding"] = embedding_column()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
