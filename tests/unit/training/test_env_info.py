"""Environment facts recorded in lineage: versions, hardware, code commit."""

from __future__ import annotations

import subprocess

from training.env_info import git_commit, hardware, library_versions


def test_library_versions_name_the_stack():
    versions = library_versions()
    assert set(versions) == {"python", "torch", "transformers", "peft", "tokenizers"}
    assert all(versions.values())


def test_hardware_is_described():
    assert "cores" in hardware() or " x " in hardware()


def test_hardware_names_the_threads_the_work_ran_with_not_the_count_restored_since():
    import torch

    if torch.cuda.is_available():  # a GPU is named instead
        return
    assert hardware(threads=1).endswith(", 1 torch threads")
    assert hardware(threads=3).endswith(", 3 torch threads")


def test_git_commit_outside_a_repository_is_none(tmp_path):
    assert git_commit(tmp_path) == (None, False)


def test_git_commit_reads_head_and_dirtiness(tmp_path):
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("x")
    assert git_commit(tmp_path) == (None, True)
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    commit, dirty = git_commit(tmp_path)
    assert commit is not None and len(commit) == 40 and dirty is False
    (tmp_path / "a.txt").write_text("y")
    assert git_commit(tmp_path) == (commit, True)
