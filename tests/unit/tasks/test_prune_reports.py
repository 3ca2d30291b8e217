"""The monitor keeps the newest ``reports_kept`` Evidently reports of a model and deletes the rest."""

import os

from tasks.monitor import prune_reports


def test_only_the_newest_reports_are_kept_and_nothing_else_is_touched(tmp_path):
    for k in range(5):
        report = tmp_path / f"drift-2026112{k}T000000Z-run{k}.html"
        report.write_text("<html/>")
        os.utime(report, (1_000_000 + k, 1_000_000 + k))
    other = tmp_path / "notes.html"
    other.write_text("mine")
    deleted = prune_reports(tmp_path, keep=2)
    assert sorted(p.name for p in deleted) == [f"drift-2026112{k}T000000Z-run{k}.html" for k in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift-20261123T000000Z-run3.html",
                                                         "drift-20261124T000000Z-run4.html", "notes.html"]
    assert prune_reports(tmp_path, keep=2) == []
