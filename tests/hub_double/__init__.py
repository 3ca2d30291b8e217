"""TEST DOUBLE of the Hugging Face Hub's HTTP protocol, on a loopback port (see :mod:`.app`).

The project cannot reach the Hub from its tests, and no local Hub server exists on PyPI that the real client
can talk to (../shared/FACTS.md). This is a small stand-in that keeps each repository as a bare git
repository, so the real ``huggingface_hub`` client and ``peft`` run end to end against it::

    with HubDouble(tmp_path / "hub", token="hf_test") as hub:
        HfApi(endpoint=hub.url, token="hf_test").create_repo("me/model")
        hub.repo("me/model").log("main")
"""

from __future__ import annotations

from pathlib import Path

from serving.server import BackgroundServer

from .app import Faults, create_hub_app
from .gitrepo import GitRepo

__all__ = ["Faults", "GitRepo", "HubDouble"]


class HubDouble(BackgroundServer):
    """The double started with uvicorn in a background thread; ``url`` is what ``HF_ENDPOINT`` should be."""

    def __init__(self, root: Path, *, token: str | None = None) -> None:
        app, self.faults = create_hub_app(root, token=token)
        super().__init__(app)
        self.root = root

    def repo(self, repo_id: str, kind: str = "models") -> GitRepo:
        """The bare git repository behind ``repo_id`` (``kind``: models or datasets)."""
        return GitRepo(self.root / kind / f"{repo_id}.git")
