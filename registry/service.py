"""The registry as the rest of the project uses it: store + artifact store + default model, chosen once.

``open_registry()`` reads the settings (SLM_HOME, SLM_DATABASE_URL, SLM_ARTIFACT_STORE, SLM_HUB_*) so the CLI, a
Prefect worker and the gateway all open the same registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lifecycle.data import Pair, canonical_jsonl, fingerprint
from lifecycle.files import hash_tree, tree_digest
from lifecycle.records import DatasetFingerprint, EvalReport, Lineage, ModelVersion
from lifecycle.settings import Settings, get_settings
from lifecycle.status import Alias, VersionStatus
from registry.artifacts import (
    ArtifactIntegrityError,
    ArtifactStore,
    LocalArtifactStore,
    follow_champion,
    sync_champion,
)
from registry.cards import render_model_card
from registry.retire import VersionDecommissioned
from registry.store import NotFoundError, RegistryStore

_REF = re.compile(r"^(?:(?P<model>[a-z0-9][a-z0-9_-]*):)?(?:v(?P<number>[0-9]+)|(?P<alias>[a-z]+))$")


class Registry:
    def __init__(self, store: RegistryStore, artifacts: ArtifactStore, default_model: str) -> None:
        self.store = store
        self.artifacts = artifacts
        self.default_model = default_model
        if hasattr(artifacts, "point_champion"):  # a Hub store: its champion branch follows the alias
            follow_champion(store, artifacts)

    def sync_champion(self, model: str, *, actor: str) -> dict[str, object] | None:
        """Make the artifact store's champion (the Hub's ``champion`` branch) match the registry; idempotent."""
        return sync_champion(self.store, model, actor=actor)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve(self, ref: str) -> tuple[str, int]:
        """``MODEL:vN``, ``vN``, ``MODEL:champion`` or ``champion`` -> (model, number)."""
        match = _REF.match(ref.strip())
        if not match:
            raise ValueError(f"cannot read {ref!r}: expected MODEL:vN, vN, MODEL:ALIAS or ALIAS "
                             f"(aliases: {', '.join(a.value for a in Alias)})")
        model = match.group("model") or self.default_model
        if match.group("number"):
            number = int(match.group("number"))
            self.store.get_version(model, number)  # raises NotFoundError
            return model, number
        alias = Alias(match.group("alias")) if match.group("alias") in set(Alias) else None
        if alias is None:
            raise ValueError(f"unknown alias {match.group('alias')!r}; aliases: {', '.join(a.value for a in Alias)}")
        number = self.store.get_alias(model, alias)
        if number is None:
            raise NotFoundError(f"{model} has no {alias.value} yet")
        return model, number

    def get(self, ref: str) -> ModelVersion:
        return self.store.get_version(*self.resolve(ref))

    def version_dir(self, version: ModelVersion) -> Path:
        """The version's folder, after every file's sha256 has been checked against the registry.

        A retired version is refused with :class:`VersionDecommissioned`, which says where its tombstone is.
        """
        gone = (f"{version.ref} is {version.status}: it was retired and cannot be loaded; its tombstone (card, "
                f"lineage, evals, history) is at local://tombstones/{version.model}/v{version.number}")
        if version.status is VersionStatus.DECOMMISSIONED:
            raise VersionDecommissioned(gone)
        try:
            return self.artifacts.version_dir(version.model, version.number, version.files)
        except ArtifactIntegrityError:
            if version.status is VersionStatus.ARCHIVED:  # its weights already left, the status not yet
                raise VersionDecommissioned(gone) from None
            raise

    def base_dir(self, version: ModelVersion) -> Path:
        """The version's base model folder, after checking its content against the recorded revision."""
        if version.lineage is None:
            raise ValueError(f"{version.ref} has no lineage, so its base model is unknown")
        base = version.lineage.base_model
        folder = self.artifacts.base_dir(base.model_id, base.revision)  # a Hub store checks the commit's files
        if base.model_id.startswith("local://") and tree_digest(hash_tree(folder)) != base.revision:
            raise ArtifactIntegrityError(f"base model {base.model_id} at {folder} no longer matches revision "
                                         f"{base.revision[:12]}… recorded in {version.ref}'s lineage")
        return folder

    def snapshot_dataset(self, name: str, pairs: list[Pair], source: str) -> DatasetFingerprint:
        """Store the rows content-addressed; the fingerprint names where to get them back."""
        sha = fingerprint(pairs)
        uri = self.artifacts.put_dataset(sha, canonical_jsonl(pairs), name)
        return DatasetFingerprint(name=name, sha256=sha, rows=len(pairs), source=source, snapshot=uri)

    def register(self, model: str, *, staged: Path | None, status: VersionStatus, reason: str, actor: str,
                 lineage: Lineage, evals: list[EvalReport], task: str,
                 audit_payload: dict[str, object] | None = None, champion: int | None = None) -> ModelVersion:
        """Publish ``staged`` (adapter files, or None for a base version) with card, lineage and evals.
        ``champion``: see :meth:`RegistryStore.register_version`."""
        with tempfile.TemporaryDirectory(prefix="slm-stage-") as tmp:
            folder = Path(tmp) / "version"
            if staged is not None:
                shutil.copytree(staged, folder)
            else:
                folder.mkdir()

            def publish(number: int) -> tuple[str, dict[str, str]]:
                # The number was just allocated under the registration lock, so a folder already there is the
                # orphan of a registration that died between publishing and committing: clear it.
                self.artifacts.unpublish_version(model, number)
                ref = f"{model}:v{number}"
                (folder / "lineage.json").write_text(lineage.model_dump_json(indent=2))
                (folder / "eval.json").write_text(json.dumps(
                    [r.model_dump(mode="json") for r in evals], indent=2))
                (folder / "README.md").write_text(render_model_card(
                    ref=ref, status=status.value, reason=reason, lineage=lineage, evals=evals, task=task))
                return self.artifacts.publish_version(model, number, folder)

            return self.store.register_version(
                model, status=status, prompt_format=lineage.prompt_format, reason=reason, actor=actor,
                publish=publish, unpublish=lambda n: self.artifacts.unpublish_version(model, n),
                lineage=lineage, evals=evals, audit_payload=audit_payload, champion=champion)


def open_registry(settings: Settings | None = None, *, hub_token: Callable[[], str | None] | None = None) -> Registry:
    """The registry the settings name. With ``SLM_ARTIFACT_STORE=hub`` the Hub token is ``hub_token()`` when given
    (e.g. a Prefect Secret block read by the caller), else ``HF_TOKEN``, else the client's saved login; it is read on
    the first Hub call and goes nowhere but the client."""
    settings = settings or get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return Registry(RegistryStore.open(settings.db_url), _artifact_store(settings, hub_token), settings.model_name)


def _artifact_store(settings: Settings, hub_token: Callable[[], str | None] | None) -> ArtifactStore:
    if settings.artifact_store == "local":
        return LocalArtifactStore(settings.artifacts)
    from registry.hub import HubArtifactStore

    # HF_ENDPOINT read now, not at huggingface_hub's import (which may have come first): one source of truth.
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return HubArtifactStore(settings.artifacts, namespace=settings.hub_namespace, endpoint=endpoint,
                            token=hub_token or (lambda: os.environ.get("HF_TOKEN") or None),
                            private=settings.hub_private,
                            dataset_repo=settings.hub_dataset_repo or f"{settings.model_name}-data",
                            retries=settings.hub_retries, retry_wait_s=settings.hub_retry_wait_s)
