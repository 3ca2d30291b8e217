"""Fixtures of the reliability suite: a registry of its own per module, a tiny champion, a gateway on loopback.

Each module gets its own SLM_HOME, so what one module breaks on purpose (a tampered audit row, an edited
artifact) never reaches another. The champion of the data module is registered without weights: a drop is
refused before any training, so nothing ever loads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from tests.env import environment
from tests.reliability.helpers import MODEL, register_base_version


@pytest.fixture(scope="module")
def slm_home(tmp_path_factory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("slm-home")
    with environment(SLM_HOME=str(home), SLM_DATABASE_URL=None, SLM_ARTIFACT_STORE=None):
        yield home


@pytest.fixture(scope="module")
def weightless_champion(slm_home) -> Path:
    """A champion whose base model is never loaded (the data suite refuses drops before training)."""
    from registry.service import open_registry

    lineage = Lineage(base_model=BaseModelRef(model_id="local://base/never-loaded", revision="0" * 64),
                      prompt_format=INTENT_V1.identity)
    with open_registry() as reg:
        number = register_base_version(reg, MODEL, lineage, "reliability champion")
        reg.store.promote(MODEL, number, actor="test", reason="reliability champion")
    return slm_home


@pytest.fixture(scope="module")
def tiny_registry(slm_home, tiny_base_model) -> Path:
    """v1 (the tiny base, champion) and v2 (the same base, a candidate): enough to serve, load and unload."""
    from registry.service import open_registry

    base_dir, _info = tiny_base_model
    with open_registry() as reg:
        uri, revision = reg.artifacts.put_base("tiny", base_dir)
        lineage = Lineage(base_model=BaseModelRef(model_id=uri, revision=revision), prompt_format=INTENT_V1.identity)
        v1 = register_base_version(reg, MODEL, lineage, "test base")
        reg.store.promote(MODEL, v1, actor="test", reason="test champion")
        register_base_version(reg, MODEL, lineage.model_copy(update={"parent": f"{MODEL}:v1"}), "test candidate")
    return slm_home




@pytest.fixture(scope="module")
def weightless_candidate(weightless_champion) -> Path:
    """v2 beside the weightless champion: a candidate on the same (never loaded) base, for an upstream to serve."""
    from registry.service import open_registry

    with open_registry() as reg:
        lineage = reg.get(f"{MODEL}:v1").lineage
        register_base_version(reg, MODEL, lineage.model_copy(update={"parent": f"{MODEL}:v1"}), "reliability candidate")
    return weightless_champion
