"""Real servers on loopback: a registry with a tiny champion (v1, the base) and a LoRA challenger (v2),
the gateway started with uvicorn on a free port, and one `slm up` stack shared by the modules that need it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lifecycle.prompting import INTENT_V1
from lifecycle.records import BaseModelRef, Lineage
from lifecycle.status import VersionStatus
from serving.server import BackgroundServer
from tests.env import environment

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def slm_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("slm-home")
    with environment(SLM_HOME=str(home)):
        yield home


@pytest.fixture(scope="module")
def tiny_registry(slm_home, tiny_base_model, tiny_drifted_pairs, tiny_before_pairs, tmp_path_factory):
    """v1: the tiny base, champion. v2: a LoRA adapter on it, candidate."""
    from registry.service import open_registry
    from training.lora import LoraRecipe, train_lora

    base_dir, _info = tiny_base_model
    with open_registry() as reg:
        uri, revision = reg.artifacts.put_base("tiny", base_dir)
        lineage = Lineage(base_model=BaseModelRef(model_id=uri, revision=revision), prompt_format=INTENT_V1.identity)
        v1 = reg.register("intent-router", staged=None, status=VersionStatus.CANDIDATE, reason="test base",
                          actor="test", lineage=lineage, evals=[], task="banking77")
        reg.store.promote("intent-router", v1.number, actor="test", reason="test champion")
        adapter = tmp_path_factory.mktemp("adapter") / "a"
        recipe = LoraRecipe(r=4, alpha=8, max_steps=30, batch_size=16, log_every=5)
        train_lora(reg.base_dir(v1), tiny_drifted_pairs + tiny_before_pairs[:50], recipe, adapter, threads=1)
        reg.register("intent-router", staged=adapter, status=VersionStatus.CANDIDATE, reason="test adapter",
                     actor="test", lineage=lineage.model_copy(update={"parent": "intent-router:v1"}), evals=[],
                     task="banking77")
    return slm_home


class RunningGateway(BackgroundServer):
    def __init__(self, app, state):
        super().__init__(app)
        self.state = state


def start_gateway(**overrides) -> RunningGateway:
    from serving.app import build_app, load_serve_config

    config = load_serve_config(REPO / "configs/serve.yaml").model_copy(update=overrides)
    app, state = build_app(config)
    return RunningGateway(app, state)


@pytest.fixture
def launch_gateway(tiny_registry):
    return start_gateway


@pytest.fixture(scope="module")
def gateway(tiny_registry):
    os.environ["SLM_ADMIN_TOKEN"] = "admin-secret-for-tests"
    try:
        with start_gateway(max_wait_ms=2.0, split_poll_s=0.1, price_per_hour=3.6) as running:
            yield running
    finally:
        os.environ.pop("SLM_ADMIN_TOKEN", None)


# The stack's tiny configs (retrain.yaml, monitor.yaml) name this model: test_stack drives it through the loop.
STACK_MODEL = "intent-router"
CRASH_AFTER_S = 90  # the shared stack's crash automation window (seconds without a heartbeat)


@dataclass
class SharedStack:
    record: object  # slm_cli.stack.StackRecord (imported lazily: the stack module imports httpx and settings)
    configs: Path
    home: Path
    stopped: bool = False

    def stop(self) -> None:
        """`slm down` for this stack; idempotent (the last module using it stops it, the session end again)."""
        from slm_cli import stack

        if not self.stopped:
            with environment(SLM_HOME=str(self.home)):
                stack.down(status=lambda _m: None)
            self.stopped = True


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory, write_tiny_configs):
    """One `slm up` stack (Prefect server, work pool, the deployments and automations of prefect.yaml, a
    worker; no gateway) for every module that asks: starting it takes 30-80 s on 2 busy cores, so
    test_stack and test_ui share it. Its SLM_HOME is set only while starting and stopping it; the
    module-scoped ``stack`` fixture sets it for the modules that use it, so other modules never see it."""
    from serving.server import free_port
    from slm_cli import stack

    root = tmp_path_factory.mktemp("stack")
    home = root / "home"
    configs = write_tiny_configs(root / "configs", model=STACK_MODEL)
    policy = yaml.safe_load((stack.project_root() / "configs/monitor.yaml").read_text())
    policy["retrain_config"] = str(configs / "retrain.yaml")
    (configs / "monitor.yaml").write_text(yaml.safe_dump(policy))
    # A flow run silent for 90 s (three heartbeats) is marked Crashed: test_stack kills one and waits for it.
    with environment(SLM_HOME=str(home), SLM_CRASH_AFTER_S=str(CRASH_AFTER_S)):
        record = stack.up(prefect_port=free_port(), gateway_port=None, status=lambda _m: None)
    shared = SharedStack(record=record, configs=configs, home=home)
    try:
        # The tests start the monitor themselves: a scheduled run crossing a quarter-hour would start a second
        # retrain (test_stack expects exactly one) and clutter the UI's runs page.
        stack.hold_schedules(record.api_url, ["monitor/monitor", "decommission/decommission"])
        yield shared
    finally:
        shared.stop()


@pytest.fixture(scope="module")
def stack(request, shared_stack):
    """``(record, configs)`` of the shared stack, with SLM_HOME pointing at its home for the whole module:
    flows run in-process and ``open_registry()`` then see the same registry as the stack's worker.

    The last module of the run that uses it stops the stack: left up until the session ends, its worker
    would run the scheduled monitor (every 15 min) while the unit tests run on the same two cores."""
    with environment(SLM_HOME=str(shared_stack.home)):
        yield shared_stack.record, shared_stack.configs
    if not _used_after(request, "stack"):
        shared_stack.stop()


def _used_after(request: pytest.FixtureRequest, fixture: str) -> bool:
    """Whether a test collected after this module's tests asks for ``fixture``."""
    items = request.session.items
    last = max(i for i, item in enumerate(items) if getattr(item, "module", None) is request.module)
    return any(fixture in getattr(item, "fixturenames", ()) for item in items[last + 1:])
