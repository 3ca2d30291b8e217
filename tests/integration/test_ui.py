"""A person opening the Prefect UI of the `slm up` stack sees what the demo did: headless Chromium loads the
deployments, the flow runs and the artifacts, and the retrain and rollout run forms show every typed parameter
with its description (drawn from RetrainParams and RolloutParams, so a form a person fills is self-explaining).

Both UIs Prefect 3.9 serves are checked: the new one under /v2 (the default) and the older one at the root
(a click on "Switch to V1 UI" away). Chromium comes from `scripts/ensure-chromium.sh` (run by `make test`);
without it this test fails saying how to install it — CI never skips.

Screenshots: under the test's tmp dir, copied to ``.slm/reports/ui-check/<ui>/`` in the project (printed,
and named in any failure) so a person can look at what the browser saw.
"""

from __future__ import annotations

import shutil

import pytest

from tests.integration.ui import check_ui, find_chromium

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

DEPLOYMENTS = ("retrain", "rollout", "monitor", "decommission", "bootstrap")
# A registry name of its own: test_stack bootstraps intent-router on the same shared stack and expects to
# create its v1, whichever module runs first.
MODEL = "ui-router"


def form_texts(params_model: type) -> list[str]:
    """What the run form must show for a flow's parameter model: each field's title and description, as the
    JSON schema that Prefect stores with the deployment has them."""
    properties = params_model.model_json_schema()["properties"]
    undescribed = [name for name, prop in properties.items() if not prop.get("description")]
    assert not undescribed, f"{params_model.__name__} fields without a description: {undescribed}"
    return [text for prop in properties.values() for text in (prop["title"], prop["description"])]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser, looked up before the stack starts: without one the test fails at once, saying how to
    install it, instead of after a minute of `slm up`."""
    return find_chromium()


@pytest.fixture(scope="module")
def demo_run(stack):
    """(flow run name, artifact key) of a bootstrap flow run, in-process against the stack's API as the CLI
    runs it: a tiny model registered as champion, which publishes the ``bootstrap`` markdown artifact."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.bootstrap import BootstrapParams, bootstrap

    record, configs = stack
    with temporary_settings(updates={PREFECT_API_URL: record.api_url}):
        state = bootstrap(BootstrapParams(model=MODEL, task=str(configs / "task.yaml"),
                                          base_model=str(configs / "base_model.yaml")), return_state=True)
        assert state.is_completed(), state
        assert state.result().created, "the model already had a champion: no bootstrap artifact was published"
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(state.state_details.flow_run_id)
    return run.name, "bootstrap"


@pytest.mark.parametrize("ui_prefix", ["/v2", ""], ids=["ui-v2", "ui-v1"])
def test_the_ui_shows_deployments_runs_artifacts_and_typed_run_forms(chromium, stack, demo_run, ui_prefix, tmp_path):
    from lifecycle.config import RetrainParams
    from lifecycle.settings import project_root
    from tasks.rollout import RolloutParams

    record, _configs = stack
    run_name, artifact_key = demo_run
    seen = check_ui(record.ui_url, DEPLOYMENTS, expect_flow_run_names=[run_name], expect_artifact_keys=[artifact_key],
                    run_forms={"retrain": form_texts(RetrainParams), "rollout": form_texts(RolloutParams)},
                    screenshot_dir=tmp_path / "screenshots", ui_prefix=ui_prefix)

    assert [page.name for page in seen] == ["deployments", "runs", "artifacts", "run-form-retrain",
                                            "run-form-rollout"]
    stable = project_root() / ".slm" / "reports" / "ui-check" / (ui_prefix.strip("/") or "v1")
    stable.mkdir(parents=True, exist_ok=True)
    for page in seen:
        shutil.copy(page.screenshot, stable / page.screenshot.name)
    print(f"UI screenshots ({ui_prefix or '/'}): {stable}")
