"""The GX training-data suite: the real worlds pass; each kind of bad data is refused by its named rule."""

import pandas as pd
import pytest

from data_checks.validation import validate_file, validate_training_data
from lifecycle.settings import project_root
from lifecycle.task import load_task
from training.task_data import build_task_data, golden_prompts, small_slice


@pytest.fixture(scope="module")
def spec():
    return load_task(project_root() / "configs" / "task.yaml", project_root())


@pytest.fixture(scope="module")
def data(spec, tmp_path_factory):
    return build_task_data(spec, tmp_path_factory.mktemp("worlds"))


@pytest.fixture(scope="module")
def benchmark(data):
    return golden_prompts(data)


@pytest.fixture(scope="module")
def good(data):
    """60 real before-world rows: a small dataset that passes."""
    from data_checks.readers import read_jsonl

    rows = small_slice(read_jsonl(data.before_train.path), 60, seed=0)
    return pd.DataFrame([p.model_dump() for p in rows])


def check(df, spec, benchmark, **overrides):
    kwargs = dict(allowed_completions=spec.labels, benchmark_prompts=benchmark, min_rows=50,
                  min_prompt_chars=spec.min_prompt_chars, max_prompt_chars=spec.max_prompt_chars, data_docs_dir=None)
    return validate_training_data(df, **(kwargs | overrides))


def rules(report):
    return {(f.rule, f.column) for f in report.failures}


@pytest.mark.parametrize("world", ["before_train", "drifted_labelled"])
def test_the_real_training_worlds_pass(world, data, spec, benchmark):
    report = validate_file(getattr(data, world).path, spec, benchmark)
    assert report.success, report.summary_markdown()
    assert report.rows == getattr(data, world).fingerprint.rows and not report.skipped


def test_the_small_good_slice_passes(good, spec, benchmark):
    assert check(good, spec, benchmark).success


def _set(df, row, column, value):
    out = df.copy()
    out[column] = out[column].astype(object)
    out.at[row, column] = value
    return out


BAD_CASES = [
    ("empty_prompt", lambda d, b: _set(d, 3, "prompt", "   "), ("not_blank", "prompt")),
    ("null_completion", lambda d, b: _set(d, 4, "completion", None), ("not_null", "completion")),
    ("label_outside_set", lambda d, b: _set(d, 5, "completion", "crypto_wallet"), ("completion_allowed", "completion")),
    ("duplicate_pair", lambda d, b: _set(d, 1, "prompt", d.at[0, "prompt"].upper() + "!!")
        .assign(completion=lambda x: x["completion"].where(x.index != 1, x.at[0, "completion"])),
     ("duplicate_pairs", "prompt")),
    ("conflicting_labels", lambda d, b: _set(d, 1, "prompt", d.at[0, "prompt"].upper() + "!!")
        .assign(completion=lambda x: x["completion"].where(x.index != 1, "lost_or_stolen_card"
                                                           if x.at[0, "completion"] != "lost_or_stolen_card"
                                                           else "card_arrival")),
     ("conflicting_labels", "completion")),
    ("email", lambda d, b: _set(d, 2, "prompt", "please write to jane.doe@example.co.uk"), ("pii_email", "prompt")),
    ("phone", lambda d, b: _set(d, 2, "prompt", "call me on +44 20 7946 0958 today"), ("pii_phone", "prompt")),
    ("us_phone", lambda d, b: _set(d, 2, "prompt", "my number is (555) 123-4567"), ("pii_phone", "prompt")),
    ("card", lambda d, b: _set(d, 2, "prompt", "my card 4111-1111-1111-1111 is blocked"),
     ("pii_card_number", "prompt")),
    ("pii_in_completion", lambda d, b: _set(d, 2, "completion", "mail a@b.io"), ("pii_email", "completion")),
    ("benchmark_overlap", lambda d, b: _set(d, 6, "prompt", "  " + b[0].upper() + " "),
     ("benchmark_overlap", "prompt")),
    ("too_long", lambda d, b: _set(d, 7, "prompt", "why " * 200), ("prompt_length", "prompt")),
    ("too_short", lambda d, b: _set(d, 7, "prompt", "?"), ("prompt_length", "prompt")),
    ("too_few_rows", lambda d, b: d.head(10), ("min_rows", None)),
    ("numeric_prompt", lambda d, b: _set(d, 8, "prompt", 12345), ("text_type", "prompt")),
    ("all_numeric_completion", lambda d, b: d.assign(completion=range(len(d))), ("text_type", "completion")),
    ("extra_column", lambda d, b: d.assign(template="### User: {prompt}"), ("pair_columns_only", None)),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_data_is_refused_by_the_named_rule(mutate, expected, good, spec, benchmark):
    report = check(mutate(good, benchmark), spec, benchmark)
    assert not report.success
    assert expected in rules(report), report.summary_markdown()
    failed = next(f for f in report.failures if (f.rule, f.column) == expected)
    assert failed.message
    if failed.unexpected_count is not None:
        assert 1 <= failed.unexpected_count <= 2 or expected[0] == "text_type"
        assert failed.examples


def test_offending_values_are_reported_as_examples(good, spec, benchmark):
    report = check(_set(good, 2, "prompt", "card 4111 1111 1111 1111 lost"), spec, benchmark)
    card = next(f for f in report.failures if f.rule == "pii_card_number")
    assert card.examples == ["card 4111 1111 1111 1111 lost"] and card.unexpected_count == 1
    assert "pii_phone" not in {f.rule for f in report.failures}  # a spaced card is not also a phone


def test_mixed_types_are_refused_and_text_rules_skipped(good, spec, benchmark):
    report = check(_set(good, 8, "prompt", 12345), spec, benchmark)
    typed = next(f for f in report.failures if f.rule == "text_type")
    assert typed.examples == ["12345"] and typed.unexpected_count == 1
    assert any("prompt holds non-text values" in s for s in report.skipped)


def test_missing_column_is_reported_and_dependent_rules_skipped(good, spec, benchmark):
    report = check(good.rename(columns={"prompt": "text"}), spec, benchmark)
    assert ("required_column", "prompt") in rules(report)
    assert "text" in next(f.message for f in report.failures if f.rule == "required_column")
    assert any("prompt is missing" in s for s in report.skipped)
    assert {r for r, _ in rules(report)} <= {"required_column", "pair_columns_only"}


def test_banking77_amounts_and_dates_are_not_pii(good, spec, benchmark):
    texts = ["I sent £200,000 to the agent", "it only gave me 20.00", "on 12/03/2019 at 10:30 I paid €1,250.50",
             "card ending 1234 charged 3 times", "ref 12345678 is pending"]
    df = pd.concat([good, pd.DataFrame({"prompt": texts, "completion": ["card_arrival"] * len(texts)})],
                   ignore_index=True)
    assert check(df, spec, benchmark).success


def test_without_allowed_set_any_label_passes(good, spec, benchmark):
    report = check(_set(good, 5, "completion", "crypto_wallet"), spec, benchmark, allowed_completions=None)
    assert report.success


def test_data_docs_and_markdown_summary(good, spec, benchmark, tmp_path):
    bad = _set(good, 2, "prompt", "mail me | at x@y.org")
    report = check(bad, spec, benchmark, data_docs_dir=tmp_path / "docs")
    assert report.data_docs == str(tmp_path / "docs" / "index.html")
    assert (tmp_path / "docs" / "index.html").is_file()
    assert list((tmp_path / "docs" / "validations").rglob("*.html"))
    md = report.summary_markdown()
    assert md.startswith("**Training data failed**")
    assert "| pii_email | prompt | 1 | mail me \\| at x@y.org |" in md
    assert check(good, spec, benchmark).summary_markdown().startswith("**Training data passed** (60 rows")


@pytest.mark.parametrize("dtype", [None, "category"])
def test_validate_file_reads_parquet(good, spec, benchmark, tmp_path, dtype):
    """A dictionary-encoded column (pandas writes a categorical one so; other tools do too) is text like any other."""
    (good.astype({"completion": dtype}) if dtype else good).to_parquet(tmp_path / "good.parquet")
    report = validate_file(tmp_path / "good.parquet", spec.model_copy(update={"min_train_rows": 50}), benchmark)
    assert report.success and report.rows == 60, report.summary_markdown()
