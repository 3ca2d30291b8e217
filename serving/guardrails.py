"""Guardrails: filters the gateway applies to model outputs.

Two checks, in this order:

Inputs are not checked: a prompt is answered whatever it holds, and the prediction log stores it with its personal
data redacted (``log_prompt_pii`` in the serve config).

1. **Personal data** (:func:`lifecycle.pii.find_pii`: e-mail, phone, payment card with Luhn, US SSN,
   UK NI number, IBAN with mod-97). ``pii_action`` says what happens: ``redact`` replaces each span by
   ``[REDACTED:<kind>]``, ``refuse`` withholds the whole text, ``flag`` only reports it.
2. **A text classifier** (optional): a local Hugging Face text-classification model folder, e.g. a
   toxicity model. When a label in ``classifier_labels_blocked`` scores at least
   ``classifier_threshold``, ``classifier_action`` refuses or flags. The classifier reads the original
   text (redaction markers would be out of its training distribution), truncated to the model's maximum
   length: trouble past that point is not seen. It is skipped once the text is refused.

A refused result carries ``policy.refusal_message`` as its text, never the original. Flags read
``pii:<kind>`` and ``classifier:<label>``; they are what the prediction log and the metrics count.

>>> guard = Guardrails(GuardrailPolicy())
>>> result = guard.check("Sure, I emailed jo@bank.com about card 4111 1111 1111 1111")
>>> result.text, result.flags, result.refused
('Sure, I emailed [REDACTED:email] about card [REDACTED:card_number]', ['pii:email', 'pii:card_number'], False)
>>> Guardrails(GuardrailPolicy(pii_action="refuse")).check("call +44 20 7946 0958").reason
'personal data: phone'

transformers is imported on the classifier's first use, so ``import serving.guardrails`` stays fast and
loads no torch; a missing model folder or an unknown blocked label fails at construction instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lifecycle.pii import PiiKind, PiiMatch, find_pii, redact
from lifecycle.records import Frozen


class GuardrailPolicy(Frozen):
    """What to check and what to do about it. One policy for outputs, another (often laxer) for inputs."""

    pii_action: Literal["redact", "refuse", "flag"] = Field(
        default="redact", description="redact spans, refuse the whole text, or only flag it")
    pii_kinds: list[PiiKind] | None = Field(
        default=None, description="kinds to look for; None: all of lifecycle.pii.KINDS, []: none")
    classifier_path: str | None = Field(
        default=None, description="local Hugging Face text-classification model folder; None: no classifier")
    classifier_labels_blocked: list[str] = Field(
        default_factory=list, description="labels (as in the model's id2label) that trigger classifier_action")
    # 0.5: on a two-label softmax model, the blocked label is the more likely one.
    classifier_threshold: float = Field(default=0.5, ge=0.0, le=1.0,
                                        description="score at or above which a blocked label triggers")
    classifier_action: Literal["refuse", "flag"] = "refuse"
    classifier_device: str | None = Field(default=None, description="torch device for the classifier; None: CPU")
    refusal_message: str = Field(default="Sorry, I can't help with that.",
                                 description="the text returned in place of a refused one")

    @model_validator(mode="after")
    def _classifier_fields_agree(self) -> GuardrailPolicy:
        if self.classifier_path and not self.classifier_labels_blocked:
            raise ValueError("classifier_path is set but classifier_labels_blocked is empty: "
                             "name the labels to block (e.g. ['toxic']) or drop classifier_path")
        if self.classifier_labels_blocked and not self.classifier_path:
            raise ValueError("classifier_labels_blocked is set but classifier_path is not: "
                             "give the classifier model folder or drop the labels")
        return self


class GuardrailResult(Frozen):
    text: str = Field(description="the text to pass on: redacted where needed, the refusal message if refused")
    flags: list[str] = Field(default_factory=list, description="'pii:<kind>', 'classifier:<label>'")
    refused: bool = False
    reason: str | None = Field(default=None, description="why it was refused or flagged, for logs")


class Guardrails:
    """Applies a :class:`GuardrailPolicy`. Thread-safe; the classifier runs one call at a time."""

    def __init__(self, policy: GuardrailPolicy) -> None:
        self.policy = policy
        self._classifier: Any = None
        self._lock = threading.Lock()
        self._executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="slm-guardrails")
                          if policy.classifier_path else None)
        if policy.classifier_path:
            _check_classifier_folder(Path(policy.classifier_path), policy.classifier_labels_blocked)

    @property
    def blocking(self) -> bool:
        """True when a check runs a model (the classifier); see :meth:`check_async`."""
        return bool(self.policy.classifier_path)

    async def check_async(self, text: str) -> GuardrailResult:
        """:meth:`check` for the event loop. With the classifier it runs on this object's own thread: on the loop, a
        forward pass would stall every other request; on the loop's shared pool, requests waiting for the classifier
        (one call at a time) would take every thread that feedback, admin calls and shutdown need. The pattern
        checks alone take microseconds and run inline."""
        if not self.blocking:
            return self.check(text)
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.check, text)

    def check(self, text: str) -> GuardrailResult:
        """Run the policy's checks on ``text``; see the module docstring for the order and actions."""
        policy, flags, reasons = self.policy, [], []
        matches = find_pii(text, policy.pii_kinds)
        out = text
        if matches:
            kinds = list(dict.fromkeys(m.kind for m in matches))
            flags += [f"pii:{k}" for k in kinds]
            reasons.append("personal data: " + ", ".join(kinds))
            if policy.pii_action == "refuse":
                return GuardrailResult(text=policy.refusal_message, flags=flags, refused=True, reason=reasons[0])
            if policy.pii_action == "redact":
                out = redact(text, matches)
        hits = self._blocked_labels(text) if policy.classifier_path else {}
        if hits:
            flags += [f"classifier:{label}" for label in hits]
            reasons.append("classifier: " + ", ".join(f"{label} {score:.2f} >= {policy.classifier_threshold:g}"
                                                      for label, score in hits.items()))
            if policy.classifier_action == "refuse":
                return GuardrailResult(text=policy.refusal_message, flags=flags, refused=True,
                                       reason="; ".join(reasons))
        return GuardrailResult(text=out, flags=flags, refused=False, reason="; ".join(reasons) or None)

    def clip(self, full: str, clipped: str) -> str:
        """What a client whose ``max_tokens`` cut the answer is sent: ``clipped`` (the first tokens of ``full``,
        decoded) with every span :meth:`check` redacts in ``full`` redacted in it too, a span the cut goes through
        included (the first 12 digits of a card number are no less a card's). Only under ``pii_action: redact``; a
        refused answer is sent whole (the refusal), a flagged one as it is."""
        if self.policy.pii_action != "redact":
            return clipped
        cut = len(os.path.commonprefix([full, clipped]))  # the tail may differ: a multi-byte character cut in two
        spans = [PiiMatch(kind=m.kind, start=m.start, end=min(m.end, cut), text=full[m.start:min(m.end, cut)])
                 for m in find_pii(full, self.policy.pii_kinds) if m.start < cut]
        tail = clipped[cut:]
        return redact(full[:cut], spans) + redact(tail, find_pii(tail, self.policy.pii_kinds))

    def _blocked_labels(self, text: str) -> dict[str, float]:
        """Blocked labels scoring at or above the threshold, in the policy's order, with their scores."""
        with self._lock:  # transformers pipelines are not documented as thread-safe
            if self._classifier is None:
                self._classifier = _load_classifier(self.policy)
            scores = self._classifier(text, top_k=None, truncation=True)
        by_label = {s["label"]: float(s["score"]) for s in scores}
        return {label: by_label[label] for label in self.policy.classifier_labels_blocked
                if by_label.get(label, 0.0) >= self.policy.classifier_threshold}


def _check_classifier_folder(folder: Path, blocked: list[str]) -> None:
    """Fail now, not on the first request: the folder must hold a model whose labels include ``blocked``."""
    config = folder / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"guardrail classifier folder {folder} does not exist or has no config.json; "
                                "save a text-classification model there (save_pretrained) or unset classifier_path")
    labels = set(json.loads(config.read_text()).get("id2label", {}).values())
    unknown = [label for label in blocked if label not in labels]
    if unknown:
        # A misspelt label would never score, so the guardrail would silently never block.
        raise ValueError(f"classifier_labels_blocked {unknown} are not labels of {folder} "
                         f"(its labels: {sorted(labels)})")


def _load_classifier(policy: GuardrailPolicy) -> Any:
    from transformers import pipeline

    classifier = pipeline("text-classification", model=policy.classifier_path, local_files_only=True,
                          device=policy.classifier_device)
    # Tokenizers saved without model_max_length report a huge limit, and truncation=True would then let
    # a long output overflow the position embeddings; cap it at what the model can read.
    limit = getattr(classifier.model.config, "max_position_embeddings", None)
    if limit and classifier.tokenizer.model_max_length > limit:
        classifier.tokenizer.model_max_length = limit
    return classifier
