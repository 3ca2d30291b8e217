"""The benchmark task's answer reuse: a second run re-answers only the spot check, a changed input re-answers all."""

import json

from evaluation.answers import AnswerStore
from lifecycle.prompting import INTENT_V1
from tasks.evaluation import Weights, score_on
from tests.unit.evaluation.test_benchmark import ALLOWED, Scripted


class Backend(Scripted):
    prompt_format = INTENT_V1


def golden(tmp_path, n=10, name="g"):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"item {i}", "completion": f"label{i % 3}"}) + "\n"
                            for i in range(n)))
    return {name: path}


def champion_rows(backend):
    return sum(n for adapter, n in backend.calls if adapter is None)


def test_the_second_benchmark_reuses_the_champions_answers(tmp_path):
    store, gold = AnswerStore(tmp_path / "answers"), golden(tmp_path, n=40)
    weights = {"m:v1": Weights(base="b@1", adapter="none"), "challenger": Weights(base="b@1", adapter="a" * 64)}
    first_backend = Backend()
    first = score_on(first_backend, {"m:v1": None, "challenger": "good"}, gold, ALLOWED, 2, weights, store)
    assert champion_rows(first_backend) == 1 + 40  # warm-up + every item
    again = Backend()
    second = score_on(again, {"m:v1": None, "challenger": "good"}, gold, ALLOWED, 2, weights, store)
    assert champion_rows(again) == 1 + 5 * 2  # warm-up + batches 0, 4, 8, 12 and 16 of 20 (every 4th)
    assert second["m:v1"][0].exact_match == first["m:v1"][0].exact_match
    # the challenger's answers were stored too: promoted, it is the next retrain's known champion
    promoted = {"m:v2": Weights(base="b@1", adapter="a" * 64)}
    third = Backend()
    score_on(third, {"m:v2": "good"}, gold, ALLOWED, 2, promoted, store)
    assert sum(n for _adapter, n in third.calls) == 1 + 5 * 2


def test_another_golden_set_or_champion_is_answered_afresh(tmp_path):
    store = AnswerStore(tmp_path / "answers")
    weights = {"m:v1": Weights(base="b@1", adapter="none")}
    score_on(Backend(), {"m:v1": None}, golden(tmp_path), ALLOWED, 2, weights, store)
    bigger = Backend()
    score_on(bigger, {"m:v1": None}, golden(tmp_path, n=12), ALLOWED, 2, weights, store)
    assert champion_rows(bigger) == 1 + 12
    other = Backend()
    score_on(other, {"m:v1": None}, golden(tmp_path), ALLOWED, 2, {"m:v1": Weights(base="b@2", adapter="none")}, store)
    assert champion_rows(other) == 1 + 10


def test_stale_stored_answers_fall_back_to_answering_everything(tmp_path):
    store, gold = AnswerStore(tmp_path / "answers"), golden(tmp_path)
    weights = {"m:v1": Weights(base="b@1", adapter="none")}
    # "good" answers stored under the base's key: the spot check disagrees, and the run answers everything
    score_on(Backend(), {"m:v1": "good"}, gold, ALLOWED, 2, weights, store)
    backend = Backend()
    reports = score_on(backend, {"m:v1": None}, gold, ALLOWED, 2, weights, store)
    assert reports["m:v1"][0].exact_match == 0.5


def test_a_retired_versions_answers_are_forgotten_unless_a_live_version_has_its_weights(tmp_path):
    from datetime import UTC, datetime

    from lifecycle.records import BaseModelRef, Lineage, ModelVersion
    from lifecycle.status import VersionStatus
    from tasks.evaluation import forget_answers

    def version(number, status, adapter_sha):
        return ModelVersion(model="m", number=number, status=status, created_at=datetime.now(UTC), artifact_uri="x",
                            prompt_format=INTENT_V1.identity,
                            lineage=Lineage(base_model=BaseModelRef(model_id="b", revision="1"),
                                            prompt_format=INTENT_V1.identity),
                            files={"adapter_model.safetensors": adapter_sha, "adapter_config.json": "c" * 64})

    store, gold = AnswerStore(tmp_path / "answers"), golden(tmp_path)
    for sha in ("a" * 64, "b" * 64):
        score_on(Backend(), {"m:v": "good"}, gold, ALLOWED, 2, {"m:v": Weights(base="b@1", adapter=sha)}, store)
    assert len(list((tmp_path / "answers").glob("*.json"))) == 2
    versions = [version(1, "promoted", "a" * 64), version(2, "archived", "b" * 64), version(3, "archived", "a" * 64)]
    # v3 shares v1's weights and v1 still serves: its answers stay
    assert forget_answers(store, versions, 3) == []
    dropped = forget_answers(store, versions, 2)
    assert len(dropped) == 1 and not dropped[0].exists()
    assert len(list((tmp_path / "answers").glob("*.json"))) == 1
    retired_too = [v.model_copy(update={"status": VersionStatus.DECOMMISSIONED}) if v.number == 1 else v
                   for v in versions]
    assert len(forget_answers(store, retired_too, 3)) == 1


def test_answers_remembered_at_registration_are_the_ones_the_next_benchmark_reuses(tmp_path):
    from datetime import UTC, datetime

    from lifecycle.records import BaseModelRef, Lineage, ModelVersion
    from tasks.evaluation import remember_answers

    store, gold = AnswerStore(tmp_path / "answers"), golden(tmp_path, n=40)
    first = score_on(Backend(), {"m:v1": None}, gold, ALLOWED, 2)  # no store: as the bootstrap scores v1
    v1 = ModelVersion(model="m", number=1, status="promoted", created_at=datetime.now(UTC), artifact_uri="x",
                      prompt_format=INTENT_V1.identity, evals=first["m:v1"],
                      lineage=Lineage(base_model=BaseModelRef(model_id="b", revision="1"),
                                      prompt_format=INTENT_V1.identity))
    assert remember_answers(v1, store) == 1
    again = Backend()
    score_on(again, {"m:v1": None}, gold, ALLOWED, 2, {"m:v1": Weights(base="b@1", adapter="none")}, store)
    assert champion_rows(again) == 1 + 5 * 2  # warm-up + the spot check only: the remembered answers were found
