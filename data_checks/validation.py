"""The training-data contract, enforced with a Great Expectations suite before any fine-tune.

Rules, each a named GX expectation (the rule name is what reports, artifacts and tests refer to):

=====================  ===========================================================================
required_column        ``prompt`` and ``completion`` exist (when one is missing, every rule that reads
                       it is skipped and listed in ``ValidationReport.skipped``)
pair_columns_only      no other columns: data files hold raw pairs, never templates or side data
text_type              values are text (a number or list where text belongs is refused, and the
                       text rules on that column are skipped: they would misread it)
not_null, not_blank    no missing value, none that is only whitespace (or invisible format characters
                       such as a zero-width space or a stray byte-order mark)
no_control_chars       no control characters (NUL, other C0 and C1 controls; tab and newline are
                       allowed): they are what a binary file, a bad export or an injection leaves behind
prompt_length          ``min_prompt_chars`` <= len(prompt) <= ``max_prompt_chars``
completion_allowed     the completion is one of the task's intents (when a set is given)
duplicate_pairs        no (normalized prompt, completion) twice: duplicates silently reweight training
conflicting_labels     no normalized prompt under two completions: one input taught two answers is noise,
                       and a relabelling is settled before the data is handed in, not by the trainer's draw
min_rows               at least ``min_rows`` rows
benchmark_overlap      no prompt equal, under :func:`lifecycle.data.normalize_prompt`, to a golden-set
                       prompt: a model trained on its test items scores what it memorized
pii_email, pii_phone,  on prompt and completion: nothing that looks like an e-mail address, a phone
pii_card_number        number (9+ digits) or a payment card number (13-19 digits)
=====================  ===========================================================================

The PII patterns are deliberately narrow: BANKING77 speaks of amounts ("£200,000", "20.00"), dates and
durations, and all of its 13,083 queries pass; the patterns need a long digit run or an ``@`` domain.
A file that cannot be read at all is refused before the suite runs, by :class:`data_checks.readers.DataFileError`
whose ``rule`` names what broke (``utf8_text``, ``json_syntax``, ``json_objects``, ``file_type``, and
``valid_unicode`` for a lone surrogate escape such as ``"\\ud800"``, which is not text and which pandas
cannot even hash, so the suite could not run on it);
:func:`check_file` turns it into a failed report, so the retrain flow reports, audits and refuses both alike.

Duplicate and overlap checks run on helper columns computed here with pandas (normalized text), then
checked by GX like any other column, so they show up in Data Docs with the rest.

Great Expectations is imported inside :func:`validate_training_data`: it costs ~3-4 s to import.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from data_checks.readers import PAIR_COLUMNS, DataFileError, load_pairs
from lifecycle.data import normalize_prompt
from lifecycle.pii import CARD_NUMBER, EMAIL, PHONE  # shared with the serving guardrails
from lifecycle.records import Frozen
from lifecycle.task import TaskSpec

if TYPE_CHECKING:
    import pandas

PAIR_KEY = "__pair_key"  # normalized prompt + US + completion, for the duplicate rule
PROMPT_KEY = "__prompt_normalized"  # for the benchmark overlap rule
CONFLICT_KEY = "__prompt_conflicting"  # the normalized prompt where it has two completions, else null
HELPER_COLUMNS = (PAIR_KEY, PROMPT_KEY, CONFLICT_KEY)
SITE_NAME = "slm_training_data"
# Whitespace, or characters that render as nothing (zero-width space/joiners, word joiner, BOM).
BLANK = r"^[\s\u200b-\u200d\u2060\ufeff]*$"
# C0 controls except tab (\x09), newline (\x0a) and carriage return (\x0d); DEL; C1 controls.
CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
MAX_EXAMPLES = 5


class FailedRule(Frozen):
    rule: str
    column: str | None = None
    unexpected_count: int | None = Field(default=None, description="rows breaking the rule; None for table rules")
    examples: list[str] = Field(default_factory=list, description=f"up to {MAX_EXAMPLES} offending values")
    message: str


class ValidationReport(Frozen):
    success: bool
    rows: int
    failures: list[FailedRule] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="rules not run, with the reason")
    data_docs: str | None = Field(default=None, description="path of the Data Docs index.html")
    content_sha256: str | None = Field(default=None, description=(
        "sha256 of the validated data as it was on disk (a folder: of its files' hashes), so whoever reads it "
        "again can tell it is still what was validated"))

    def summary_markdown(self) -> str:
        """A markdown summary for a Prefect artifact: verdict line, then one table row per failed rule."""
        verdict = "passed" if self.success else "failed"
        lines = [f"**Training data {verdict}** ({self.rows} rows, {len(self.failures)} failed rules)", ""]
        if self.failures:
            lines += ["| rule | column | rows | examples | why |", "|---|---|---|---|---|"]
            for f in self.failures:
                cells = [f.rule, f.column or "", "" if f.unexpected_count is None else str(f.unexpected_count),
                         "; ".join(_short(e) for e in f.examples), f.message]
                lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        if self.skipped:
            lines += ["", "Skipped: " + "; ".join(self.skipped)]
        if self.data_docs:
            lines += ["", f"Data Docs: `{self.data_docs}`"]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Rule:
    name: str
    column: str | None
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    message: str
    helper: bool = False  # checks a helper column: report the original prompts as examples


@dataclass
class _Plan:
    rules: list[_Rule] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def validate_training_data(df: pandas.DataFrame, *, allowed_completions: list[str] | None,
                           benchmark_prompts: list[str], min_rows: int, min_prompt_chars: int,
                           max_prompt_chars: int, data_docs_dir: Path | None = None) -> ValidationReport:
    """Run the suite on ``df`` (not modified). Data Docs HTML goes to ``data_docs_dir`` when given."""
    frame = _with_helpers(df)
    plan = _plan(df, allowed_completions=allowed_completions, benchmark_prompts=benchmark_prompts,
                 min_rows=min_rows, min_prompt_chars=min_prompt_chars, max_prompt_chars=max_prompt_chars)
    results, docs = _run_gx(frame, plan.rules, data_docs_dir)
    failures = [_failure(rule, result, df) for rule, result in zip(plan.rules, results, strict=True)
                if not result.success]
    return ValidationReport(success=not failures, rows=len(df), failures=failures,
                            skipped=plan.skipped, data_docs=docs)


def validate_file(path: str | Path, spec: TaskSpec, benchmark_prompts: list[str],
                  data_docs_dir: Path | None = None) -> ValidationReport:
    """Load a data file (:func:`load_pairs`; DataFileError propagates) and validate it against the task."""
    return validate_training_data(load_pairs(path), allowed_completions=list(spec.labels) or None,
                                  benchmark_prompts=benchmark_prompts, min_rows=spec.min_train_rows,
                                  min_prompt_chars=spec.min_prompt_chars,
                                  max_prompt_chars=spec.max_prompt_chars, data_docs_dir=data_docs_dir)


def check_file(path: str | Path, spec: TaskSpec, benchmark_prompts: list[str],
               data_docs_dir: Path | None = None) -> ValidationReport:
    """:func:`validate_file`, except that a file that cannot be read is a failed report, not an exception.

    The retrain flow must refuse, audit and report an unreadable drop exactly like one that breaks a
    suite rule; the failure carries the reader's rule name (``utf8_text``, ``json_syntax``, ...)."""
    try:
        return validate_file(path, spec, benchmark_prompts, data_docs_dir)
    except DataFileError as error:
        return ValidationReport(success=False, rows=0, failures=[FailedRule(rule=error.rule, message=str(error))],
                                skipped=["the Great Expectations suite (the data could not be read)"])


def _text_columns(df: pandas.DataFrame) -> set[str]:
    """The pair columns present and holding only text (or nulls, which not_null reports)."""
    return {c for c in PAIR_COLUMNS if c in df.columns
            and all(isinstance(v, str) for v in df[c].dropna())}


def _with_helpers(df: pandas.DataFrame) -> pandas.DataFrame:
    """A copy with text columns as plain objects and the helper columns filled where computable."""
    frame = df.copy()
    for column in frame.columns:
        if str(frame[column].dtype) in ("string", "category"):  # StringDtype, a Parquet dictionary column:
            # GX's type checks expect objects
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    usable = _text_columns(df) == set(PAIR_COLUMNS)
    for helper in HELPER_COLUMNS:
        frame[helper] = None
    if usable and len(frame):
        prompts = frame["prompt"].map(lambda v: normalize_prompt(v) if isinstance(v, str) else None)
        frame[PROMPT_KEY] = prompts
        frame[PAIR_KEY] = [None if p is None or not isinstance(c, str) else f"{p}\x1f{c}"
                           for p, c in zip(prompts, frame["completion"], strict=True)]
        labels: dict[str, set[str]] = defaultdict(set)
        for p, c in zip(prompts, frame["completion"], strict=True):
            if p is not None and isinstance(c, str):
                labels[p].add(c)
        frame[CONFLICT_KEY] = [p if p is not None and len(labels[p]) > 1 else None for p in prompts]
    return frame


def _plan(df: pandas.DataFrame, *, allowed_completions: list[str] | None, benchmark_prompts: list[str],
          min_rows: int, min_prompt_chars: int, max_prompt_chars: int) -> _Plan:
    plan = _Plan()
    texts = _text_columns(df)
    plan.rules.append(_Rule("pair_columns_only", None, "ExpectTableColumnsToMatchSet",
                            {"column_set": [*(c for c in PAIR_COLUMNS if c in df.columns), *HELPER_COLUMNS],
                             "exact_match": True},
                            "columns other than prompt and completion (data files hold raw pairs only)"))
    plan.rules.append(_Rule("min_rows", None, "ExpectTableRowCountToBeBetween", {"min_value": min_rows},
                            f"fewer than {min_rows} rows"))
    for column in PAIR_COLUMNS:
        plan.rules += _column_rules(df, column, column in texts, plan.skipped)
    if "completion" in texts and allowed_completions:
        plan.rules.append(_Rule("completion_allowed", "completion", "ExpectColumnValuesToBeInSet",
                                {"column": "completion", "value_set": sorted(set(allowed_completions))},
                                "completion is not one of the task's intents"))
    if "prompt" in texts:
        plan.rules.append(_Rule("prompt_length", "prompt", "ExpectColumnValueLengthsToBeBetween",
                                {"column": "prompt", "min_value": min_prompt_chars, "max_value": max_prompt_chars},
                                f"prompt shorter than {min_prompt_chars} or longer than {max_prompt_chars} characters"))
    if texts == set(PAIR_COLUMNS):
        benchmark = sorted({normalize_prompt(p) for p in benchmark_prompts})
        plan.rules.append(_Rule("duplicate_pairs", "prompt", "ExpectColumnValuesToBeUnique", {"column": PAIR_KEY},
                                "the same (normalized prompt, completion) appears more than once", helper=True))
        plan.rules.append(_Rule("conflicting_labels", "completion", "ExpectColumnValuesToBeNull",
                                {"column": CONFLICT_KEY},
                                "the same prompt (after normalization) is labelled with more than one completion",
                                helper=True))
        plan.rules.append(_Rule("benchmark_overlap", "prompt", "ExpectColumnValuesToNotBeInSet",
                                {"column": PROMPT_KEY, "value_set": benchmark},
                                "prompt equals a golden-set prompt (after normalization)", helper=True))
    else:
        plan.skipped += ["duplicate_pairs, conflicting_labels, benchmark_overlap (need text prompt and completion)"]
    return plan


def _column_rules(df: pandas.DataFrame, column: str, is_text: bool, skipped: list[str]) -> list[_Rule]:
    rules = [_Rule("required_column", column, "ExpectColumnToExist", {"column": column},
                   f"column '{column}' is missing (found: {', '.join(map(str, df.columns)) or 'none'})")]
    if column not in df.columns:
        skipped.append(f"rules on {column} ({column} is missing)")
        return rules
    rules.append(_Rule("not_null", column, "ExpectColumnValuesToNotBeNull", {"column": column},
                       f"{column} is missing (null) in some rows"))
    rules.append(_Rule("text_type", column, "ExpectColumnValuesToBeOfType", {"column": column, "type_": "str"},
                       f"{column} holds values that are not text"))
    if not is_text:
        skipped.append(f"text rules on {column} ({column} holds non-text values)")
        return rules
    rules.append(_Rule("not_blank", column, "ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": BLANK},
                       f"{column} is empty or only whitespace"))
    rules.append(_Rule("no_control_chars", column, "ExpectColumnValuesToNotMatchRegex",
                       {"column": column, "regex": CONTROL},
                       f"{column} holds control characters (such as NUL); only tab and newline are allowed"))

    for name, regex, what in (("pii_email", EMAIL, "an e-mail address"), ("pii_phone", PHONE, "a phone number"),
                              ("pii_card_number", CARD_NUMBER, "a payment card number")):
        rules.append(_Rule(name, column, "ExpectColumnValuesToNotMatchRegex", {"column": column, "regex": regex},
                           f"{column} contains what looks like {what}"))
    return rules


def _run_gx(frame: pandas.DataFrame, rules: list[_Rule], data_docs_dir: Path | None) -> tuple[list[Any], str | None]:
    """Build an ephemeral GX context, run the suite once, optionally build our Data Docs site."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (context.data_sources.add_pandas("training_data").add_dataframe_asset("pairs")
             .add_batch_definition_whole_dataframe("all_rows"))
    # Expectations go in before the suite is added: adding them one by one to a stored suite
    # re-serializes the whole suite each time (a third of the run on small frames).
    expectations = [getattr(gxe, rule.expectation)(**rule.kwargs, description=f"{rule.name}: {rule.message}",
                                                   meta={"rule": rule.name, "column": rule.column})
                    for rule in rules]
    suite = context.suites.add(gx.ExpectationSuite(name="training_pairs", expectations=expectations))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="training_data", data=batch,
                                                                            suite=suite))
    result = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})
    # GX returns results in suite order; match them back by the rule name we stored in meta.
    by_rule = {(r.expectation_config.meta["rule"], r.expectation_config.meta["column"]): r for r in result.results}
    ordered = [by_rule[(rule.name, rule.column)] for rule in rules]
    if data_docs_dir is None:
        return ordered, None
    data_docs_dir = Path(data_docs_dir)
    data_docs_dir.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(SITE_NAME, {
        "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(data_docs_dir)}})
    context.build_data_docs(site_names=[SITE_NAME])
    return ordered, str(data_docs_dir / "index.html")


def _failure(rule: _Rule, result: Any, df: pandas.DataFrame) -> FailedRule:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        reason = str(info.get("exception_message") or "error").strip().splitlines()[0]
        return FailedRule(rule=rule.name, column=rule.column, message=f"{rule.message}; could not be checked: {reason}")
    details = result.result or {}
    count = details.get("unexpected_count")
    if rule.helper:
        rows = df["prompt"].loc[list(details.get("unexpected_index_list") or [])]
        raw = list(dict.fromkeys(rows))
    elif count is None:
        raw = _observed(rule, details.get("observed_value"), df)
    else:
        raw = details.get("partial_unexpected_list") or []
    # Non-text, whitespace-only and unprintable values (control characters, lone surrogates) are shown as
    # escaped literals: an empty example stays visible, and the report stays writable as UTF-8.
    examples = [v if isinstance(v, str) and v.strip() and v.isprintable() else ascii(v) for v in raw[:MAX_EXAMPLES]]
    if rule.name == "text_type" and count is None:  # a whole column of another type: every row fails
        count = int(df[rule.column].notna().sum())
    return FailedRule(rule=rule.name, column=rule.column, unexpected_count=count, examples=examples,
                      message=rule.message)


def _observed(rule: _Rule, observed: Any, df: pandas.DataFrame) -> list[Any]:
    if rule.name == "pair_columns_only":
        return [f"extra column {c}" for c in df.columns if c not in PAIR_COLUMNS]
    if rule.name == "min_rows":
        return [f"{observed} rows"]
    if rule.name == "text_type" and observed is not None:
        return [f"column type {observed}"]
    return []


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
