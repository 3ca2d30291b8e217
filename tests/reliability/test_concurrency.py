"""Concurrency: racing rollout starts and racing promotions, on SQLite and PostgreSQL, over real connections.

Each racer has its own store (its own engine and connection pool) — a thread, or a forked process as the
CLI, a flow run and the automation would be — and a barrier lines them up, so they hit the model lock
together. Every race runs ``REPEATS`` times on fresh models; a lost race must leave nothing behind.

* Two rollouts of one model started at once (two candidates, or the same candidate twice — an event
  delivered twice): exactly one runs, the other gets :class:`RolloutInProgress` naming it; the start's
  effects (split, challenger alias) are carried out once.
* Promotions racing with ``expected_champion``: exactly one wins, the others change nothing.
  Without it they serialize: every promotion lands, one after the other, and the champion's history is one
  unbroken chain that ends at the champion; ``previous`` is the one it replaced.

After every race the audit chain verifies.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from lifecycle.rollout_plan import RolloutPlan
from lifecycle.status import Alias, VersionStatus
from registry import rollout_exec
from registry.rollouts import RolloutInProgress, active_rollout, get_rollout
from registry.store import ConcurrentChangeError, RegistryStore
from registry.traffic import get_split

REPEATS = 5
GUARD = [{"metric": "model_error_rate", "direction": "lower_is_better", "regression": 0.3}]
PLAN = RolloutPlan.model_validate({
    "name": "race", "version": 1,
    "stage_defaults": {"min_requests_per_arm": 30, "max_duration_s": 3600, "guardrails": GUARD},
    "stages": [{"name": "shadow", "share": 0}, {"name": "canary", "share": 50}, {"name": "full", "share": 100}]})

Outcome = tuple[str, object]  # ("ok", result) or (exception class name, the exception's message or candidate)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with request.getfixturevalue("pg_database")() as url:
        yield url


def setup_model(url: str, model: str, versions: int) -> None:
    """``versions`` candidates, v1 promoted champion."""
    store = RegistryStore.open(url)
    try:
        for _ in range(versions):
            store.register_version(model, status=VersionStatus.CANDIDATE, prompt_format="f", reason="race",
                                   actor="test", publish=lambda k: (f"local://models/{model}/v{k}", {}))
        store.promote(model, 1, actor="test", reason="first champion")
    finally:
        store.close()


def _outcome(call: Callable[[], object]) -> Outcome:
    try:
        return "ok", call()
    except RolloutInProgress as exc:
        return "RolloutInProgress", exc.running.candidate
    except Exception as exc:  # the race's verdict, asserted by the caller: any other error fails the test there
        return type(exc).__name__, str(exc)


def _begin(store: RegistryStore, model: str, candidate: int, run_id: str) -> object:
    state = rollout_exec.begin(store, model, candidate, PLAN, actor=run_id, emit=lambda *a: None, flow_run_id=run_id)
    return state.candidate


def _promote(store: RegistryStore, model: str, number: int, expected: int | None) -> object:
    kwargs = {} if expected is None else {"expected_champion": expected}
    return store.promote(model, number, actor=f"promoter-{number}", reason="race", **kwargs)


def _racer(url: str, barrier, fn: Callable[..., object], args: tuple) -> Outcome:
    """Open a store of its own (engine, pool, the migration check) first: the race is about the writes, so
    the barrier sits right before the call."""
    store = RegistryStore.open(url)
    try:
        barrier.wait(timeout=60)
        return _outcome(lambda: fn(store, *args))
    finally:
        store.close()


def _in_child(url: str, barrier, queue, index: int, fn, args) -> None:
    queue.put((index, _racer(url, barrier, fn, args)))


def race(url: str, fn: Callable[..., object], calls: list[tuple], how: str) -> list[Outcome]:
    """``fn(store, *args)`` for every args of ``calls`` at once, each with its own store, in threads or in
    forked processes (the CLI, a flow run, the automation); the outcomes in the order of ``calls``."""
    if how == "threads":
        barrier = threading.Barrier(len(calls))
        outcomes: list[Outcome | None] = [None] * len(calls)

        def run(index: int, args: tuple) -> None:
            outcomes[index] = _racer(url, barrier, fn, args)

        threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(calls)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        return outcomes
    ctx = multiprocessing.get_context("fork")  # a child opens its own engine; nothing of the parent's is used
    barrier, queue = ctx.Barrier(len(calls)), ctx.Queue()
    procs = [ctx.Process(target=_in_child, args=(url, barrier, queue, i, fn, a)) for i, a in enumerate(calls)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return [results[i] for i in range(len(calls))]


def actions(store: RegistryStore, model: str, prefix: str) -> list[str]:
    return [e.action for e in store.audit_events()
            if e.action.startswith(prefix) and (e.subject == model or e.subject.startswith(f"{model}:"))]


@pytest.mark.parametrize("how", ["threads", "processes"])
@pytest.mark.parametrize("same_candidate", [False, True], ids=["two-candidates", "same-candidate-twice"])
def test_two_rollouts_started_at_once_exactly_one_runs(db_url, how, same_candidate):
    store = RegistryStore.open(db_url)
    started, resumed = time.perf_counter(), 0
    try:
        for rep in range(REPEATS):
            model = f"race-{how}-{int(same_candidate)}-{rep}"
            setup_model(db_url, model, versions=3)
            candidates = [2, 2] if same_candidate else [2, 3]
            outcomes = race(db_url, _begin, [(model, c, f"run-{k}") for k, c in enumerate(candidates)], how)

            if same_candidate and active_rollout(store, model).revision == 3:
                # The barrier lines them up, but a loaded machine may still run one racer's start far enough
                # before the other reads that the other finds the rollout stored and resumes it (a re-run of a
                # killed flow looks the same to the registry), taking over as its driver: after the first
                # finished its start (both ok), or while it was carrying out the start's effects (the first is
                # then told the rollout is in progress). Still one rollout, started once, its effects carried
                # out once.
                resumed += 1
                running = active_rollout(store, model)
                assert sorted(outcomes) in ([("ok", 2), ("ok", 2)], [("RolloutInProgress", 2), ("ok", 2)]), outcomes
                assert outcomes[int(running.flow_run_id.removeprefix("run-"))] == ("ok", 2)  # the driver got ok
                drivers = [e.actor for e in store.audit_events() if e.subject == f"{model}:v2"
                           and e.action == "rollout.effects"]
                assert actions(store, model, "rollout.") == ["rollout.started", "rollout.effects", "rollout.effects"]
                assert running.flow_run_id == drivers[-1] and running.revision == 3 and running.pending == []
                winner = 2
            else:
                winners = [result for what, result in outcomes if what == "ok"]
                assert len(winners) == 1, outcomes
                winner = winners[0]
                assert sorted(outcomes) == [("RolloutInProgress", winner), ("ok", winner)], outcomes  # told who runs
                running = active_rollout(store, model)
                assert running.candidate == winner and running.pending == [] and running.revision == 2
                assert running.flow_run_id == f"run-{outcomes.index(('ok', winner))}"  # the winner drives it
                assert actions(store, model, "rollout.") == ["rollout.started", "rollout.effects"]
            if not same_candidate:
                assert get_rollout(store, model, 5 - winner) is None  # the loser left no row
            split = get_split(store, model)
            assert (split.champion, split.shadow, split.challenger, split.revision) == (1, winner, None, 1)
            assert store.aliases(model) == {"champion": 1, "challenger": winner}
            # The start's effects were carried out once.
            assert actions(store, model, "traffic.") == ["traffic.split"]
            assert [m.version for m in store.alias_history(model, Alias.CHALLENGER)] == [winner]
        result = store.verify_audit()
        assert result.ok, result.problems
    finally:
        store.close()
    print(f"rollout start race ({how}, same candidate {same_candidate}): {REPEATS} races in "
          f"{time.perf_counter() - started:.1f} s; {resumed} ran one after the other (resumed)")


def champion_chain(store: RegistryStore, model: str) -> list[int | None]:
    """The champion's history as the versions it passed through; asserts each move starts where the last ended."""
    moves = store.alias_history(model, Alias.CHAMPION)
    for before, after in zip(moves, moves[1:], strict=False):
        assert after.previous_version == before.version, moves
    assert moves[0].previous_version is None
    return [m.version for m in moves]


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_promotions_racing_with_expected_champion_exactly_one_wins(db_url, how):
    store = RegistryStore.open(db_url)
    started = time.perf_counter()
    try:
        for rep in range(REPEATS):
            model = f"promote-cas-{how}-{rep}"
            setup_model(db_url, model, versions=5)
            outcomes = race(db_url, _promote, [(model, n, 1) for n in (2, 3, 4, 5)], how)

            won = [n for n, (what, _) in zip((2, 3, 4, 5), outcomes, strict=True) if what == "ok"]
            assert len(won) == 1, outcomes
            winner = won[0]
            assert outcomes[winner - 2] == ("ok", 1)  # it replaced v1
            assert all(what == ConcurrentChangeError.__name__ and "another promotion won" in str(message)
                       for n, (what, message) in zip((2, 3, 4, 5), outcomes, strict=True) if n != winner), outcomes
            assert store.aliases(model) == {"champion": winner, "previous": 1}
            assert champion_chain(store, model) == [1, winner]
            assert [m.version for m in store.alias_history(model, Alias.PREVIOUS)] == [1]
            statuses = {v.number: v.status for v in store.list_versions(model)}
            assert statuses == {n: VersionStatus.PROMOTED if n in (1, winner) else VersionStatus.CANDIDATE
                                for n in range(1, 6)}  # the losers changed nothing
        result = store.verify_audit()
        assert result.ok, result.problems
    finally:
        store.close()
    print(f"promotion race with expected_champion ({how}): {REPEATS} races of 4 in "
          f"{time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_promotions_racing_without_expected_champion_serialize(db_url, how):
    """Without a compare-and-swap every promotion lands: they queue on the model lock, and the history shows
    them in the order they got it — never two champions, never a move that starts from a stale champion."""
    store = RegistryStore.open(db_url)
    started = time.perf_counter()
    try:
        for rep in range(REPEATS):
            model = f"promote-{how}-{rep}"
            setup_model(db_url, model, versions=4)
            outcomes = race(db_url, _promote, [(model, n, None) for n in (2, 3, 4)], how)

            assert [what for what, _ in outcomes] == ["ok"] * 3, outcomes
            chain = champion_chain(store, model)
            assert chain[0] == 1 and sorted(chain[1:]) == [2, 3, 4], chain
            # Each promotion returned the champion it replaced: the one just before it in the chain.
            replaced = {n: result for n, (_, result) in zip((2, 3, 4), outcomes, strict=True)}
            assert replaced == {chain[k]: chain[k - 1] for k in range(1, 4)}
            assert store.aliases(model) == {"champion": chain[-1], "previous": chain[-2]}
            assert [m.version for m in store.alias_history(model, Alias.PREVIOUS)] == chain[:-1]
            assert all(v.status is VersionStatus.PROMOTED for v in store.list_versions(model))
            # The first champion's move, then champion and previous for each of the three promotions.
            assert actions(store, model, "alias.") == ["alias.moved"] * (1 + 3 * 2)
        result = store.verify_audit()
        assert result.ok, result.problems
    finally:
        store.close()
    print(f"promotion race without expected_champion ({how}): {REPEATS} races of 3 in "
          f"{time.perf_counter() - started:.1f} s")
