"""TEST DOUBLE of the Hugging Face Hub's HTTP protocol, on a loopback port (see :mod:`.app`).

The project cannot reach the Hub from its tests, and no local Hub server exists on PyPI that the real client
can talk to (../shared/FACTS.md). This is a small stand-in that keeps each repository as a bare git
repository, so the real ``huggingface_hub`` client and ``peft`` run end to end against it::

    with HubDouble(tmp_path / "hub", token="hf_test") as hub:
        HfApi(endpoint=hub.url, token="hf_test").create_repo("me/model")
        hub.repo("me/model").log("main")
"""

from __future__ import annotations

import os
from pathlib import Path

from serving.server import BackgroundServer

from .app import Faults, create_hub_app
from .gitrepo import GitRepo
from .lfs import LfsPointer

__all__ = ["Faults", "GitRepo", "HubDouble", "LfsPointer"]


class HubDouble(BackgroundServer):
    """The double started with uvicorn in a background thread; ``url`` is what ``HF_ENDPOINT`` should be.

    While it runs, ``HF_HUB_DISABLE_XET`` is set (in the environment, for child processes, and in this process's
    ``huggingface_hub.constants``, which read it at import): the double speaks Git LFS, not Xet, which the client
    would otherwise use for every LFS file when ``hf_xet`` is installed. Both are restored on exit.
    """

    def __init__(self, root: Path, *, token: str | None = None) -> None:
        app, self.faults = create_hub_app(root, token=token)
        super().__init__(app)
        self.root = root
        self._saved: list[tuple[str | None, bool]] = []

    def __enter__(self) -> HubDouble:
        from huggingface_hub import constants

        self._saved.append((os.environ.get("HF_HUB_DISABLE_XET"), constants.HF_HUB_DISABLE_XET))
        os.environ["HF_HUB_DISABLE_XET"], constants.HF_HUB_DISABLE_XET = "1", True
        try:
            super().__enter__()
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._restore()

    def _restore(self) -> None:
        from huggingface_hub import constants

        env, constants.HF_HUB_DISABLE_XET = self._saved.pop()
        if env is None:
            os.environ.pop("HF_HUB_DISABLE_XET", None)
        else:
            os.environ["HF_HUB_DISABLE_XET"] = env

    def lfs_object(self, oid: str) -> Path:
        """Where the double keeps an LFS object's bytes (a test may damage them)."""
        return self.root / "lfs-objects" / oid[:2] / oid

    def repo(self, repo_id: str, kind: str = "models") -> GitRepo:
        """The bare git repository behind ``repo_id`` (``kind``: models or datasets)."""
        return GitRepo(self.root / kind / f"{repo_id}.git")
