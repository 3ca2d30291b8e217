"""Model and version names: ``MODEL:vN``.

A model has a name (lowercase letters, digits, ``-`` and ``_``); its versions are numbered from 1 and
written ``MODEL:vN``. The model part may be left out (``v3``) when a default model is known.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# Checked with fullmatch, never match with "$": "$" also matches before a final newline, so "router\n" passed.
_MODEL_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_REF_RE = re.compile(r"(?:(?P<model>[^:]+):)?v(?P<number>[0-9]+)")


def check_model_name(name: str) -> str:
    if not _MODEL_RE.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


#: A field holding a model name (settings, configs, flow parameters): checked where it is read, so a name that
#: could not be addressed as ``MODEL:vN``, or would escape the artifact folder, never reaches the registry.
ModelName = Annotated[str, AfterValidator(check_model_name)]


class VersionRef(BaseModel):
    """A reference to one version of one model, e.g. ``intent-router:v3``."""

    model_config = ConfigDict(frozen=True)

    model: str
    number: int

    def __str__(self) -> str:
        return f"{self.model}:v{self.number}"

    @property
    def tag(self) -> str:
        return f"v{self.number}"

    @classmethod
    def parse(cls, text: str, default_model: str | None = None) -> VersionRef:
        """Parse ``MODEL:vN`` or ``vN`` (with ``default_model``).

        >>> str(VersionRef.parse("intent-router:v3"))
        'intent-router:v3'
        >>> VersionRef.parse("v2", default_model="m").number
        2
        """
        match = _REF_RE.fullmatch(text.strip())
        if not match:
            raise ValueError(f"invalid version reference {text!r}: expected MODEL:vN or vN, e.g. 'router:v3'")
        model = match.group("model") or default_model
        if model is None:
            raise ValueError(f"version reference {text!r} names no model and no default model is known")
        number = int(match.group("number"))
        if number < 1:
            raise ValueError(f"invalid version reference {text!r}: versions are numbered from v1")
        return cls(model=check_model_name(model), number=number)
