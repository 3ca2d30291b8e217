"""The written report: a self-contained page with embedded PNGs, written atomically; the CLI and the Prefect task."""

from __future__ import annotations

import base64
import logging
import os
import re
from html import escape
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from lifecycle.records import BaseModelRef, Lineage
from lifecycle.status import VersionStatus
from registry.service import open_registry
from reporting.publish import write_report
from slm_cli.main import app
from tests.unit.reporting.world import MODEL, OPERATOR_REASON, V3_GATE_REASON

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_page_embeds_every_plot_and_fetches_nothing(store, tmp_path):
    out = tmp_path / "report.html"
    write_report(store, MODEL, out)
    page = out.read_text(encoding="utf-8")
    images = _images(page)
    # traffic, one per rollout (2), drift, gates
    assert len(images) == 5 and all(i.startswith(PNG_SIGNATURE) for i in images)
    assert "<script" not in page and "<link" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_page_shows_rollback_reasons_gate_verdicts_and_an_intact_chain(store, tmp_path):
    out = tmp_path / "report.html"
    write_report(store, MODEL, out)
    page = out.read_text(encoding="utf-8")
    assert escape(OPERATOR_REASON) in page and OPERATOR_REASON not in page  # free text is escaped
    assert "[fail] model_error_rate: 100/200 vs champion 0/200" in page  # v4's rollback in shadow
    assert escape(V3_GATE_REASON) in page
    assert 'gate verdict <span class="badge fail">fail</span>' in page
    assert 'gate verdict <span class="badge pass">pass</span>' in page
    assert '<span class="badge intact">intact</span>' in page and "badge broken" not in page


def test_a_tampered_chain_shows_broken_on_the_page(store, tmp_path):
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"))
    out = tmp_path / "report.html"
    write_report(store, MODEL, out)
    page = out.read_text(encoding="utf-8")
    assert '<span class="badge broken">broken</span>' in page and "badge intact" not in page
    assert "events were deleted or inserted" in page


def test_the_file_is_replaced_whole_or_not_at_all(store, tmp_path, monkeypatch):
    out = tmp_path / "reports" / "report.html"
    write_report(store, MODEL, out)
    first = out.read_bytes()
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    with store.engine.begin() as conn:  # a change, so the page differs and is rewritten
        conn.execute(text("UPDATE audit_events SET actor = 'x' WHERE seq = 1"))
    write_report(store, MODEL, out)
    ((src, dst),) = renamed
    assert dst == out and src.parent == out.parent and src != out  # a sibling temp file, renamed over it
    second = out.read_bytes()
    assert second != first and second.rstrip().endswith(b"</html>")

    def fail(src, dst):
        raise OSError("disk full")

    # An older page on disk, so the new one differs whatever the clock says (a page equal to the file on disk is
    # not rewritten; a second edit of the same broken audit row changes only the "generated" time, which two
    # writes within one second share).
    stale = second.replace(b"</html>", b"<!-- an older report --></html>")
    out.write_bytes(stale)
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(store, MODEL, out)
    assert out.read_bytes() == stale  # the last good report stays
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind


def test_cli_writes_the_default_path_and_prints_it(home):
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    path = home / "reports" / f"{MODEL}.html"
    assert result.output.strip() == str(path)
    assert _images(path.read_text(encoding="utf-8"))


def test_cli_out_option_and_an_unknown_model(home, tmp_path):
    out = tmp_path / "elsewhere.html"
    assert CliRunner().invoke(app, ["report", "--model", MODEL, "--out", str(out)]).exit_code == 0
    assert out.is_file()
    result = CliRunner().invoke(app, ["report", "--model", "no-such-model"])
    assert result.exit_code == 2
    assert "'no-such-model' has no versions" in result.output and "models there: intent-router" in result.output


def test_a_version_with_no_history_yet_gives_a_sensible_page(tmp_path, monkeypatch):
    monkeypatch.setenv("SLM_HOME", str(tmp_path / "fresh"))
    monkeypatch.delenv("SLM_DATABASE_URL", raising=False)
    lineage = Lineage(base_model=BaseModelRef(model_id="local://base/x", revision="0" * 64), prompt_format="f")
    with open_registry() as registry:
        registry.register(MODEL, staged=None, status=VersionStatus.CANDIDATE, reason="just registered", actor="t",
                          lineage=lineage, evals=[], task="banking77")
        write_report(registry.store, MODEL, tmp_path / "fresh.html")
    page = (tmp_path / "fresh.html").read_text(encoding="utf-8")
    for words in ("no traffic split or champion recorded yet", "no rollout recorded", "no drift check recorded",
                  "no evals recorded", "no rollback recorded", "just registered"):
        assert words in page
    assert not _images(page)


def test_publish_report_links_the_file_as_an_artifact(home, monkeypatch):
    import tasks.report as report_task

    links = []
    monkeypatch.setattr(report_task, "create_link_artifact", lambda **kw: links.append(kw))
    path = report_task.publish_report.fn(MODEL)
    assert path == home / "reports" / f"{MODEL}.html" and path.is_file()
    ((link,),) = [links]
    assert link["key"] == "lifecycle-report-intent-router" and link["link"] == path.as_uri()
    assert link["link"].startswith("file:///") and "champion v1" in link["description"]


def test_publish_report_never_fails_its_flow(home, monkeypatch, caplog):
    import tasks.report as report_task

    monkeypatch.setattr(report_task, "create_link_artifact", lambda **kw: pytest.fail("nothing to link"))
    with caplog.at_level(logging.WARNING):
        assert report_task.publish_report.fn("no-such-model") is None
    assert "lifecycle report of no-such-model not published: NothingToReport" in caplog.text


@pytest.mark.parametrize(("model", "key"), [("intent-router", "lifecycle-report-intent-router"),
                                            ("Intent_Router2", "lifecycle-report-intent-router2")])
def test_artifact_keys_use_only_what_prefect_allows(model, key):
    from tasks.report import artifact_key

    assert artifact_key(model) == key
    assert re.fullmatch(r"[a-z0-9-]+", artifact_key(model))
