"""The demo builds the offline base model before its Prefect server is up (tasks.bootstrap.warm_base_cache):
the bootstrap flow's build_base must then find that build in the cache and not build again."""

from __future__ import annotations

import pytest

from tasks.bootstrap import BUILD_INFO, build_base, ensure_task_data, resolve_task, warm_base_cache


def test_the_warmed_base_is_the_one_the_bootstrap_finds(tmp_path, monkeypatch, write_tiny_configs):
    from lifecycle.settings import get_settings, project_root

    monkeypatch.setenv("SLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLM_CACHE_DIR", raising=False)
    configs = write_tiny_configs(tmp_path / "configs", model="router")
    folder = warm_base_cache(configs / "task.yaml", configs / "base_model.yaml")
    assert folder.parent == get_settings().cache and (folder / BUILD_INFO).is_file()
    stamp = (folder / BUILD_INFO).stat().st_mtime_ns
    weights = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    data = ensure_task_data(resolve_task.fn(configs / "task.yaml", project_root()), get_settings().home / "data")
    found, info = build_base.fn(data, configs / "base_model.yaml")
    assert found == folder and info.steps == 40
    # found, not rebuilt: nothing in the folder was written again
    assert (folder / BUILD_INFO).stat().st_mtime_ns == stamp
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == weights
    assert warm_base_cache(configs / "task.yaml", configs / "base_model.yaml") == folder


def test_the_demo_hands_a_failed_background_build_to_its_bootstrap_step():
    from slm_cli.demo import _Background

    def broken():
        raise FileNotFoundError("configs/base_model.yaml")

    background = _Background(broken, "test-broken")
    with pytest.raises(FileNotFoundError, match="base_model.yaml"):
        background.wait()
    done = []
    _Background(lambda: done.append(1), "test-ok").wait()
    assert done == [1]
