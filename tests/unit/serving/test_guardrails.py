"""serving.guardrails: PII actions, policy checks, and a real (tiny, built here) text classifier."""

import math
import subprocess
import sys
import threading

import pytest
from pydantic import ValidationError

from serving.guardrails import GuardrailPolicy, GuardrailResult, Guardrails

LABELS = {0: "ok", 1: "toxic", 2: "insult"}
BIAS = [0.0, 2.0, 1.0]  # the head's weights are zero: every text gets softmax(BIAS)
SCORES = {LABELS[i]: math.exp(b) / sum(math.exp(x) for x in BIAS) for i, b in enumerate(BIAS)}
# ok 0.090, toxic 0.665, insult 0.245


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A 1-layer BERT text classifier (width 8) with a 9-word vocabulary; nothing downloaded."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("toxicity")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "you", "are", "an", "idiot"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # No model_max_length on purpose: the guardrail must cap truncation at the position embeddings.
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    config = BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()})
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(BIAS))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def classified(folder, **policy):
    return Guardrails(GuardrailPolicy(classifier_path=str(folder), **policy))


@pytest.mark.parametrize(("action", "text", "flags", "refused"), [
    ("redact", "mail [REDACTED:email], card [REDACTED:card_number]", ["pii:email", "pii:card_number"], False),
    ("flag", "mail jo@bank.com, card 4111-1111-1111-1111", ["pii:email", "pii:card_number"], False),
    ("refuse", "Sorry, I can't help with that.", ["pii:email", "pii:card_number"], True),
])
def test_pii_actions(action, text, flags, refused):
    result = Guardrails(GuardrailPolicy(pii_action=action)).check("mail jo@bank.com, card 4111-1111-1111-1111")
    assert (result.text, result.flags, result.refused) == (text, flags, refused)
    assert result.reason == "personal data: email, card_number"


@pytest.mark.parametrize("text", ["I was charged £200,000 on 12/03/2024", "my top up of 20.00 failed",
                                  "card ending 1234", "card_arrival"])
def test_banking_text_passes_untouched(text):
    assert Guardrails(GuardrailPolicy()).check(text) == GuardrailResult(text=text)


def test_pii_kinds_narrow_or_disable_the_check():
    text = "ssn 078-05-1120, mail a@b.io"
    assert Guardrails(GuardrailPolicy(pii_kinds=["email"])).check(text).text == "ssn 078-05-1120, mail [REDACTED:email]"
    assert Guardrails(GuardrailPolicy(pii_kinds=[])).check(text).flags == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"classifier_path": "/x"}, "classifier_labels_blocked is empty"),
    ({"classifier_labels_blocked": ["toxic"]}, "classifier_path is not"),
    ({"classifier_threshold": 1.5}, "less than or equal to 1"),
    ({"pii_action": "delete"}, "redact"),
    ({"pii_kinds": ["passport"]}, "email"),
    ({"pii_actoin": "refuse"}, "Extra inputs"),
])
def test_policy_rejects_bad_settings(fields, message):
    with pytest.raises(ValidationError, match=message):
        GuardrailPolicy(**fields)


def test_missing_classifier_folder_fails_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        classified(tmp_path / "nope", classifier_labels_blocked=["toxic"])


def test_unknown_blocked_label_fails_at_construction(classifier_dir):
    with pytest.raises(ValueError, match=r"\['toxc'\] are not labels.*'insult', 'ok', 'toxic'"):
        classified(classifier_dir, classifier_labels_blocked=["toxc"])


@pytest.mark.parametrize(("blocked", "threshold", "flags"), [
    (["toxic", "insult"], 0.5, ["classifier:toxic"]),
    (["toxic", "insult"], 0.2, ["classifier:toxic", "classifier:insult"]),
    (["insult", "toxic"], 0.2, ["classifier:insult", "classifier:toxic"]),  # the policy's order
    (["toxic"], SCORES["toxic"] - 1e-4, ["classifier:toxic"]),  # at the threshold: blocked
    (["toxic"], SCORES["toxic"] + 1e-4, []),
    (["ok"], 0.5, []),
])
def test_classifier_blocks_by_label_and_threshold(classifier_dir, blocked, threshold, flags):
    guard = classified(classifier_dir, classifier_labels_blocked=blocked, classifier_threshold=threshold)
    result = guard.check("you are an idiot")
    assert result.flags == flags
    assert result.refused is bool(flags)
    assert result.text == ("Sorry, I can't help with that." if flags else "you are an idiot")
    if flags:
        assert result.reason.startswith("classifier: " + blocked[0])


def test_classifier_flag_only_keeps_the_redacted_text(classifier_dir):
    guard = classified(classifier_dir, classifier_labels_blocked=["toxic"], classifier_action="flag")
    result = guard.check("you are an idiot, write to a@b.io")
    assert (result.text, result.refused) == ("you are an idiot, write to [REDACTED:email]", False)
    assert result.flags == ["pii:email", "classifier:toxic"]
    assert result.reason == f"personal data: email; classifier: toxic {SCORES['toxic']:.2f} >= 0.5"


def test_pii_refusal_skips_the_classifier(classifier_dir):
    guard = classified(classifier_dir, classifier_labels_blocked=["toxic"], pii_action="refuse")
    assert guard.check("you idiot a@b.io").flags == ["pii:email"]
    assert guard._classifier is None  # never loaded


def test_long_text_is_truncated_not_an_error(classifier_dir):
    guard = classified(classifier_dir, classifier_labels_blocked=["toxic"])
    assert guard.check("you are an idiot " * 100).refused


def test_concurrent_checks_share_one_classifier(classifier_dir):
    guard = classified(classifier_dir, classifier_labels_blocked=["toxic"])
    results = []
    threads = [threading.Thread(target=lambda: results.append(guard.check("you are"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and all(r.flags == ["classifier:toxic"] for r in results)


def test_import_and_construction_load_no_torch(classifier_dir):
    code = ("import sys\n"
            "from serving.guardrails import GuardrailPolicy, Guardrails\n"
            f"policy = GuardrailPolicy(classifier_path={str(classifier_dir)!r}, classifier_labels_blocked=['toxic'])\n"
            "Guardrails(policy)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_classifier_runs_on_its_own_thread_for_the_event_loop_and_patterns_inline(classifier_dir):
    import asyncio
    import threading

    where: list[str] = []
    guard = classified(classifier_dir, classifier_labels_blocked=["toxic"])
    check = guard.check

    def traced(text):
        where.append(threading.current_thread().name)
        return check(text)

    guard.check = traced
    text = "you idiot, mail jo@bank.com"
    assert asyncio.run(guard.check_async(text)) == check(text)
    assert where[0].startswith("slm-guardrails")  # not the loop's thread, nor its shared pool
    plain = Guardrails(GuardrailPolicy())
    assert not plain.blocking and asyncio.run(plain.check_async(text)) == plain.check(text)


@pytest.mark.parametrize(("clipped", "sent"), [
    ("write to jo@bank.com or card 4111 1111 1111", "write to [REDACTED:email] or card [REDACTED:card_number]"),
    ("write to jo@ba", "write to [REDACTED:email]"),  # the cut goes through the address: still an address
    ("write to", "write to"),
    ("write to jo@bank.com or card 4111 1111 1111 1111 thanks\ufffd",  # a character cut in two at the end
     "write to [REDACTED:email] or card [REDACTED:card_number] thanks\ufffd"),
])
def test_an_answer_cut_by_max_tokens_is_sent_with_what_the_whole_answer_redacts(clipped, sent):
    """The client's max_tokens cut the answer after the guardrails checked the whole one: the cut text is what the
    client gets, so it must be redacted like the whole (it was sent raw: the card's first 12 digits too)."""
    full = "write to jo@bank.com or card 4111 1111 1111 1111 thanks"
    guard = Guardrails(GuardrailPolicy(pii_action="redact"))
    assert guard.check(full).text == "write to [REDACTED:email] or card [REDACTED:card_number] thanks"
    assert guard.clip(full, clipped) == sent
    assert Guardrails(GuardrailPolicy(pii_action="flag")).clip(full, clipped) == clipped  # flagged: as it is


def test_the_gateway_sends_a_cut_answer_redacted_and_logs_the_whole_one_redacted():
    """The wiring: GatewayState.generate with a backend whose answer holds personal data and is cut by max_tokens."""
    import asyncio

    from lifecycle.routing import assignment
    from serving.backend import Generation
    from serving.config import ServeConfig
    from serving.state import GatewayState

    full = "write to jo@bank.com or card 4111 1111 1111 1111 thanks"
    gen = Generation(text=full, completion=full, prompt_tokens=5, completion_tokens=20, latency_ms=1, adapter=None,
                     clipped="write to jo@bank.com or card 4111 1111 1111")
    state = GatewayState(config=ServeConfig(), registry=None, live=None, batcher=None, writer=None, predictions=None,
                         guardrails=Guardrails(GuardrailPolicy()), breakers=None, allowed=frozenset({"x"}))

    async def backend(*args, **kwargs):
        return gen

    state._call_backend = backend
    answer = asyncio.run(state.generate(assignment(1, "champion", 1, None), "prompt", "req-1", 12))
    assert answer.text == "write to [REDACTED:email] or card [REDACTED:card_number] thanks"  # logged
    assert answer.clipped == "write to [REDACTED:email] or card [REDACTED:card_number]"  # sent
