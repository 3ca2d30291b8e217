"""Drift of the prediction log against a reference, with Evidently: one typed result per column.

Frames. The reference is the champion's training pairs (``prompt``, ``completion``: the label it learned)
or a pinned window of the prediction log; the current frame is the served answers of the window
(``prompt``, ``completion``, ``outcome``, ``latency_ms``). Shadow rows are left out: each request counts once.

Columns (named in ``lifecycle.drift_policy.COLUMNS``; the policy enables them):

* Evidently descriptors of a text column: ``<text>_length`` (characters, ``TextLength``), ``<text>_words``
  (``WordCount``), ``<text>_non_letter_share`` (``NonLetterCharacterPercentage``), and
  ``<text>_oov_share``: the share of a row's words missing from the reference's vocabulary (a custom
  descriptor; Evidently's own OOV descriptor downloads an English word list from NLTK, unusable offline, and
  a general dictionary would miss what matters here: words the champion never saw in training).
  To keep the OOV share unbiased, the vocabulary comes from one random half of the reference and the other
  half is the reference that is compared: both sides are then rows the vocabulary never saw.
* ``route`` (the completion as a category), ``outcome`` (error categories), ``latency_ms``. Outcome and
  latency exist only in the log, so against a training reference they are skipped, with the reason.
* ``prompt_text``: the raw prompts through Evidently's domain classifier (TF-IDF + linear model, ROC AUC).
* ``prompt_embedding``: the prompts' sentence embeddings (:mod:`data_checks.embeddings`, MiniLM, 384
  dimensions) through one of Evidently's embedding drift methods (``model``: a domain classifier's ROC AUC;
  ``mmd``, ``ratio``, ``distance``), on at most ``policy.embedding_sample`` of the compared rows a side; not in
  the HTML report (see ``_embedding_drift``). What the prompts mean, whatever words they use.

Fast path. Each side is sampled (seeded, without replacement) to ``policy.sample_cap`` rows before any
descriptor is computed, and only the enabled columns are computed; drift methods are effect sizes
(Wasserstein, Jensen-Shannon), whose sampling error at 20,000 rows is far below the thresholds (100k rows:
scores sampled vs all rows differ by at most 0.007). Measured on this 2-core machine (``bench/drift_bench.py``,
bench/RESULTS.md "Drift monitor"): a window of 100,000 logged prompts is checked in 0.5-0.7 s (+0.2 s to read
it with ``PredictionStore.served_columns``), against 1.5 s for the same columns on every row and 8-9 s for
Evidently's full ``DataDriftPreset`` + ``TextEvals`` on every row. Importing Evidently costs 4-7 s more, once.

Evidently is imported inside the functions that need it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import Field

from lifecycle.data import Pair
from lifecycle.drift_policy import COLUMNS, LOG_ONLY, ColumnResult, DriftDecision, DriftPolicy
from lifecycle.predictions import LoggedPrediction
from lifecycle.records import Frozen

if TYPE_CHECKING:
    import pandas

TEXTS = ("prompt", "completion")
_WORD = re.compile(r"[a-z]+")
_DESCRIPTORS = ("length", "words", "non_letter_share", "oov_share")


class DriftReport(Frozen):
    columns: list[ColumnResult]
    reference_rows: int = Field(description="reference rows before sampling")
    current_rows: int = Field(description="window rows (served answers) before sampling")
    compared_reference: int = Field(description="reference rows compared (after sampling and the vocabulary half)")
    compared_current: int = Field(description="window rows compared (after sampling, and without the rows whose "
                                  "text was not stored when a text column is compared)")
    usable_rows: int | None = Field(default=None, description=(
        "window rows the compared columns can read, before sampling: those with text when a text column is "
        "compared (hash-only logging keeps none). What the policy's min_rows counts; None: as current_rows"))
    html: Path | None = None
    seconds: float

    @property
    def rows_for_decision(self) -> int:
        """The rows ``min_rows`` is checked against: the usable ones (a window of mostly hash-only rows has far
        fewer to compare than it has answers, and a small sample's effect sizes run high)."""
        return self.current_rows if self.usable_rows is None else self.usable_rows

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    def summary_markdown(self, decision: DriftDecision | None = None) -> str:
        """Markdown for the Prefect artifact: the verdict, the reasons, then one table row per column."""
        lines = []
        if decision is not None:
            lines += [f"**Drift monitor: {decision.verdict}** ({decision.reason()})", ""]
            lines += [f"- {r}" for r in decision.reasons()] + [""]
        usable = "" if self.usable_rows in (None, self.current_rows) else f", {self.usable_rows} with text"
        lines += [f"Window: {self.current_rows} answers{usable} (compared {self.compared_current}); reference: "
                  f"{self.reference_rows} rows (compared {self.compared_reference}); {self.seconds:.1f} s", "",
                  "| column | method | score | threshold | drifted |", "|---|---|---|---|---|"]
        for c in self.columns:
            score = "—" if c.score is None else f"{c.score:.4f}"
            state = f"skipped: {c.skipped}" if c.skipped else ("**yes**" if c.drifted else "no")
            lines.append(f"| {c.column} | {c.method} | {score} | {c.threshold:g} | {state} |")
        if self.html is not None:
            lines += ["", f"Evidently report: `{self.html}`"]
        return "\n".join(lines)


def frame_from_pairs(pairs: Sequence[Pair]) -> pandas.DataFrame:
    """A training reference: prompts and the completions the champion learned (no outcome, no latency)."""
    import pandas as pd

    return pd.DataFrame({"prompt": [p.prompt for p in pairs], "completion": [p.completion for p in pairs]})


def frame_from_log(rows: Sequence[LoggedPrediction]) -> pandas.DataFrame:
    """Served answers of a log window; rows logged hash-only (no text) keep their outcome and latency."""
    import pandas as pd

    served = [r for r in rows if r.served]
    return pd.DataFrame({"prompt": [r.prompt for r in served], "completion": [r.completion for r in served],
                         "outcome": [r.outcome for r in served], "latency_ms": [r.latency_ms for r in served]})


class LogColumns(Protocol):
    """Served answers column by column (``registry.predictions.ServedColumns`` is one)."""

    prompt: list[str | None]
    completion: list[str | None]
    outcome: list[str]
    latency_ms: list[float]


def frame_from_columns(columns: LogColumns) -> pandas.DataFrame:
    """A log window read column by column: the fast way for large windows (no record per row)."""
    import pandas as pd

    return pd.DataFrame({"prompt": columns.prompt, "completion": columns.completion, "outcome": columns.outcome,
                         "latency_ms": columns.latency_ms})


def check_drift(reference: pandas.DataFrame, current: pandas.DataFrame, policy: DriftPolicy, *,
                html_path: Path | None = None, embedding_cache: Path | None = None) -> DriftReport:
    """Compare ``current`` with ``reference`` on the policy's columns; save the Evidently HTML when asked.
    ``embedding_cache``: a folder keeping the reference's embeddings between runs (``data_checks.embeddings``)."""
    start = time.perf_counter()
    ref_all = _sample(reference, 2 * policy.sample_cap, policy.seed)
    vocab_half = _halves(len(ref_all), policy.seed)
    vocabulary = _vocabulary(ref_all.loc[vocab_half], policy)
    ref = ref_all.loc[~vocab_half].reset_index(drop=True)
    cur = _sample(current, policy.sample_cap, policy.seed + 1)
    plan, skipped = _plan(ref, cur, policy)
    embedded = [c for c in plan if COLUMNS[c] == "embedding"]
    plain = [c for c in plan if c not in embedded]
    results: list[ColumnResult] = []
    if plain and len(cur) and len(ref):
        results = _run_evidently(ref, cur, plain, policy, vocabulary, html_path)
    else:
        html_path = None
    if len(cur) and len(ref):
        results += [_embedding_drift(ref, cur, column, policy, embedding_cache) for column in embedded]
    by_name = {r.column: r for r in results + skipped}
    texts = _texts(plan)
    return DriftReport(columns=[by_name[c] for c in policy.columns if c in by_name],
                       reference_rows=len(reference), current_rows=len(current), compared_reference=len(ref),
                       compared_current=len(cur.dropna(subset=texts)) if texts else len(cur),
                       usable_rows=len(current.dropna(subset=texts)) if texts else len(current),
                       html=html_path, seconds=round(time.perf_counter() - start, 3))


def _sample(df: pandas.DataFrame, cap: int, seed: int) -> pandas.DataFrame:
    return df.sample(n=cap, random_state=seed).reset_index(drop=True) if len(df) > cap else df.reset_index(drop=True)


def _halves(n: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).permutation(n) < n // 2


def _vocabulary(df: pandas.DataFrame, policy: DriftPolicy) -> dict[str, set[str]]:
    wanted = [t for t in TEXTS if f"{t}_oov_share" in policy.columns and t in df.columns]
    return {t: {w for text in df[t].dropna() for w in _WORD.findall(text.lower())} for t in wanted}


def _plan(ref: pandas.DataFrame, cur: pandas.DataFrame,
          policy: DriftPolicy) -> tuple[list[str], list[ColumnResult]]:
    """Columns to compare, and those skipped with the reason."""
    plan, skipped = [], []
    for column, rule in policy.columns.items():
        source = _source(column)
        why = None
        if source not in ref.columns or ref[source].isna().all():
            why = ("the training reference has no " + source + ": use a window reference"
                   if column in LOG_ONLY else f"the reference has no {source}")
        elif source not in cur.columns or cur[source].isna().all():
            why = f"the window has no {source}" + (" (hash-only logging)" if source in TEXTS else "")
        if why:
            skipped.append(ColumnResult(column=column, method=rule.method, threshold=rule.threshold, skipped=why))
        else:
            plan.append(column)
    return plan, skipped


def _source(column: str) -> str:
    if column == "route":
        return "completion"
    if column in ("prompt_text", "prompt_embedding"):
        return "prompt"
    text, _, descriptor = column.partition("_")
    return text if text in TEXTS and descriptor in _DESCRIPTORS else column


def _texts(plan: list[str]) -> list[str]:
    """The text columns (prompt, completion) the plan's columns read."""
    return [t for t in TEXTS if any(_source(c) == t for c in plan)]


def _frame(df: pandas.DataFrame, plan: list[str]) -> pandas.DataFrame:
    """The raw columns the plan reads; rows without text (hash-only) dropped when a text column is read."""
    texts = _texts(plan)
    keep = sorted({_source(c) for c in plan})
    frame = df.dropna(subset=texts)[keep].copy() if texts else df[keep].copy()
    if "route" in plan:
        frame["route"] = frame["completion"]
    if "prompt_text" in plan:
        frame["prompt_text"] = frame["prompt"]
    return frame.reset_index(drop=True)


def _descriptors(plan: list[str], vocabulary: dict[str, set[str]]) -> list:
    from evidently.descriptors import CustomColumnDescriptor, NonLetterCharacterPercentage, TextLength, WordCount

    builders = {"length": TextLength, "words": WordCount, "non_letter_share": NonLetterCharacterPercentage}
    found = []
    for column in plan:
        text, _, descriptor = column.partition("_")
        if text not in TEXTS or descriptor not in _DESCRIPTORS:
            continue
        if descriptor == "oov_share":
            found.append(CustomColumnDescriptor(text, _oov_share(vocabulary[text]), alias=column))
        else:
            found.append(builders[descriptor](text, alias=column))
    return found


def _oov_share(vocabulary: set[str]):
    from evidently.core.datasets import DatasetColumn

    def oov_share(column: DatasetColumn) -> DatasetColumn:
        def share(text: str) -> float:
            words = _WORD.findall(text.lower())
            return sum(w not in vocabulary for w in words) / len(words) if words else 0.0

        return DatasetColumn(type="num", data=column.data.map(share).astype(float))

    return oov_share


def _run_evidently(ref: pandas.DataFrame, cur: pandas.DataFrame, plan: list[str], policy: DriftPolicy,
                   vocabulary: dict[str, set[str]], html_path: Path | None) -> list[ColumnResult]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    kinds = {c: COLUMNS[c] for c in plan}
    raw_numeric = [c for c in plan if kinds[c] == "numerical" and c in LOG_ONLY]
    definition = DataDefinition(
        text_columns=[t for t in (*TEXTS, "prompt_text") if t in plan or any(_source(c) == t for c in plan)],
        categorical_columns=[c for c in plan if kinds[c] == "categorical"], numerical_columns=raw_numeric)
    descriptors = _descriptors(plan, vocabulary)
    datasets = [Dataset.from_pandas(_frame(df, plan), data_definition=definition, descriptors=descriptors)
                for df in (ref, cur)]
    metrics = [ValueDrift(column=c, method=policy.columns[c].method, threshold=policy.columns[c].threshold)
               for c in plan]
    snapshot = Report(metrics, include_tests=True).run(current_data=datasets[1], reference_data=datasets[0])
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    result = snapshot.dict()
    scores = {m["config"]["column"]: float(m["value"]) for m in result["metrics"]}
    failed = {t["metric_config"]["params"]["column"] for t in result["tests"] if t["status"] == "FAIL"}
    return [ColumnResult(column=c, method=policy.columns[c].method, threshold=policy.columns[c].threshold,
                         score=scores[c], drifted=c in failed) for c in plan]


# Why 100: with a handful of prompts on a side the domain classifier's half split may hold one class only (an
# error) and its ROC AUC, or any embedding score, is noise; a window that small is below min_rows anyway.
MIN_EMBEDDED = 100


def _embedding_drift(ref: pandas.DataFrame, cur: pandas.DataFrame, column: str, policy: DriftPolicy,
                     cache: Path | None) -> ColumnResult:
    """One embedding column: each side's prompts (at most ``policy.embedding_sample``, seeded) embedded (the
    reference's through ``cache``: the same sample every run), then the rule's Evidently embedding drift method
    with its threshold; drifted when the score is above it. Skipped, with the reason, without the encoder's
    packages, below ``MIN_EMBEDDED`` prompts with text on a side, or when the method gives no finite score."""
    import math

    import pandas as pd

    from data_checks import embeddings

    rule = policy.columns[column]
    skip = functools.partial(ColumnResult, column=column, method=rule.method, threshold=rule.threshold)
    if (missing := embeddings.available()) is not None:
        return skip(skipped=missing)
    sides = [_sample(df[[_source(column)]].dropna(), policy.embedding_sample, policy.seed + 2 + k)[_source(column)]
             for k, df in enumerate((ref, cur))]
    if (fewest := min(len(s) for s in sides)) < MIN_EMBEDDED:
        return skip(skipped=f"{fewest} prompts with text on the smaller side; the embedding check needs {MIN_EMBEDDED}")
    names = [f"{column}_{k}" for k in range(embeddings.DIMENSIONS)]
    # The method adds a label column to what it is given: each gets frames of its own.
    ref_emb, cur_emb = (pd.DataFrame(embeddings.embed(s.tolist(), cache_dir=cache if k == 0 else None), columns=names)
                        for k, s in enumerate(sides))
    # The method itself, not EmbeddingsDrift in a Report: the metric also fits a t-SNE of both sides for its
    # widget. 500 rows a side: the metric 8.6-9.0 s (t-SNE ~70 % of it), the method 0.05-0.09 s, the same score
    # (bench/drift_bench.py --embedding-metric).
    score = float(_embedding_method(rule.method, rule.threshold)(cur_emb, ref_emb)[0])
    if not math.isfinite(score):
        return skip(skipped=f"the {rule.method} method gave no finite score ({score})")
    return skip(score=score, drifted=score > rule.threshold)


def _embedding_method(name: str, threshold: float):
    """Evidently's embedding drift method ``name``; bootstrap off: the score is compared with the threshold, as
    every other column's is."""
    from evidently.metrics.embeddings import DistanceDriftMethod, MMDDriftMethod, ModelDriftMethod, RatioDriftMethod

    if name == "ratio":
        return RatioDriftMethod(threshold=threshold)
    kind = {"model": ModelDriftMethod, "mmd": MMDDriftMethod, "distance": DistanceDriftMethod}[name]
    return kind(threshold=threshold, bootstrap=False)
