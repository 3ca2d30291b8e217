"""The prompt template and decoding settings: one definition, used by training, benchmark and serving.

Data files hold raw ``prompt``/``completion`` pairs only. The template is applied here, and each version
records the identity of the format it was trained with (``name@hash``), so serving refuses to answer
with a format other than the one that was benchmarked.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from lifecycle.audit import canonical_json
from lifecycle.records import Frozen


class PromptFormat(Frozen):
    name: str
    template: str = Field(description="str.format template with one field, {prompt}")
    completion_prefix: str = Field(description="text between the rendered prompt and the completion")
    stop: str = Field(description="the model is trained to end a completion with this; generation stops there")
    max_new_tokens: int = Field(ge=1, description="greedy decoding budget; intent names need under 16 tokens")

    @property
    def identity(self) -> str:
        digest = hashlib.sha256(canonical_json(self.model_dump()).encode()).hexdigest()[:12]
        return f"{self.name}@{digest}"

    def render(self, prompt: str) -> str:
        # Whitespace is collapsed so that a stray newline in a message cannot imitate the template.
        return self.template.format(prompt=" ".join(prompt.split()))

    def training_text(self, prompt: str, completion: str) -> tuple[str, str]:
        """(context, target): the loss is taken on the target only."""
        return self.render(prompt), f"{self.completion_prefix}{completion}{self.stop}"

    def parse(self, generated: str) -> str:
        """Cut a generated continuation down to the completion."""
        text = generated.split(self.stop, 1)[0]
        return text.strip()


INTENT_V1 = PromptFormat(
    name="intent-v1",
    template="### Customer: {prompt}\n### Intent:",
    completion_prefix=" ",
    stop="\n",
    max_new_tokens=16,
)

FORMATS: dict[str, PromptFormat] = {INTENT_V1.identity: INTENT_V1}


def format_by_identity(identity: str) -> PromptFormat:
    try:
        return FORMATS[identity]
    except KeyError:
        known = ", ".join(FORMATS)
        raise ValueError(f"unknown prompt format {identity!r}; this code knows: {known}. The version was "
                         "trained with a template this release does not have — serve it with the release "
                         "that trained it") from None
