"""Loading registered versions into the in-process backend: the one way a version gets served or scored.

Every file is checked against the sha256 recorded at publish time, the base model against the revision in
the version's lineage, and the prompt format against the one the version was trained and benchmarked with.
"""

from __future__ import annotations

from pathlib import Path

from lifecycle.prompting import format_by_identity
from lifecycle.records import ModelVersion
from registry.service import Registry
from serving.backend import InProcessBackend


def open_backend(registry: Registry, version: ModelVersion, threads: int = 1) -> InProcessBackend:
    """A backend on ``version``'s base model, speaking ``version``'s prompt format."""
    return InProcessBackend(registry.base_dir(version), format_by_identity(version.prompt_format), threads=threads)


def load_version(backend: InProcessBackend, registry: Registry, version: ModelVersion) -> str | None:
    """Load ``version`` on ``backend``; returns its adapter name, or None when it is the base model itself."""
    folder = registry.version_dir(version)
    if format_by_identity(version.prompt_format) != backend.prompt_format:
        raise ValueError(f"{version.ref} was trained with prompt format {version.prompt_format}, the backend "
                         f"speaks {backend.prompt_format.identity}: serve them from separate backends")
    if backend.base_dir is None:  # an upstream server: every version, base included, is a model name there
        backend.load_adapter(version.ref, folder)
        return version.ref
    base = version.lineage.base_model if version.lineage else None
    if base and registry.artifacts.base_dir(base.model_id, base.revision) != Path(backend.base_dir):
        raise ValueError(f"{version.ref} builds on {base.model_id}@{base.revision[:12]}, not on the base this "
                         "backend holds")
    if not (folder / "adapter_config.json").is_file():
        return None
    backend.load_adapter(version.ref, folder)
    return version.ref
