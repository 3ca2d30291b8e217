"""Settings read from the environment (prefix ``SLM_``), resolved once at the edge.

``SLM_HOME`` defaults to ``.slm`` under the project root, made absolute, so the CLI, a Prefect worker
and the gateway started from anywhere open the same registry and artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lifecycle.names import ModelName

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """The repository this code runs from (editable install), else the current directory."""
    if (PACKAGE_ROOT / "pyproject.toml").is_file() and (PACKAGE_ROOT / "configs").is_dir():
        return PACKAGE_ROOT
    return Path.cwd().resolve()


def in_project(path: str | Path) -> Path:
    """A config or data path as the flows and the CLI take it: relative to the project root unless absolute."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLM_", extra="ignore")

    home: Path = Field(default_factory=lambda: project_root() / ".slm",
                       description="where the registry database, artifacts and reports live")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under home")
    cache_dir: Path | None = Field(default=None, description="built base models, reused across runs; default "
                                   "home/cache (`slm demo` shares it between its fresh homes)")
    artifact_store: Literal["local", "hub"] = Field(
        default="local", description="where versions live: a local folder, or Hugging Face Hub repositories")
    artifact_root: Path | None = Field(default=None, description="local artifact folder; default home/artifacts "
                                       "(with the Hub store: its download cache and the tombstones)")
    hub_namespace: str | None = Field(default=None, description="Hub user or organisation owning the repositories "
                                      "(<namespace>/<model>); required with artifact_store=hub")
    hub_token_block: str | None = Field(default=None, description="name of a Prefect Secret block holding the Hub "
                                        "token, read by the flows' tasks; HF_TOKEN otherwise")
    hub_private: bool = Field(default=True, description="create the Hub repositories private")
    hub_dataset_repo: str | None = Field(default=None, description="Hub dataset repository (in hub_namespace) for "
                                         "training-data snapshots; default <model_name>-data")
    hub_retries: int = Field(default=4, ge=0, description="retries of a Hub call on 408/429/5xx or connection errors")
    hub_retry_wait_s: float = Field(default=1.0, ge=0, description="first retry wait; doubles each retry, 30 s cap")
    crash_after_s: float = Field(default=600, ge=90, description="`slm up`: a flow run with no heartbeat nor state "
                                 "change for this long is marked Crashed (Prefect's default heartbeat is every 180 s, "
                                 "the stack's every 30 s)")
    model_name: ModelName = Field(default="intent-router", description="the default model")
    torch_threads: int = Field(default=1, ge=1,
                               description="torch intra-op threads; 1 on 2 cores (FACTS.md: 2 collapse)")

    @field_validator("home", "artifact_root", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().resolve()

    @model_validator(mode="after")
    def _hub_needs_a_namespace(self) -> Settings:
        if self.artifact_store == "hub" and not self.hub_namespace:
            raise ValueError("SLM_ARTIFACT_STORE=hub needs SLM_HUB_NAMESPACE: the Hub user or organisation that owns "
                             "the model repositories (the token comes from HF_TOKEN)")
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def cache(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def artifacts(self) -> Path:
        return self.artifact_root or self.home / "artifacts"

    @property
    def configs_dir(self) -> Path:
        return project_root() / "configs"


def get_settings() -> Settings:
    return Settings()
