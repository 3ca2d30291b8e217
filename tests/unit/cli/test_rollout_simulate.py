import json

from typer.testing import CliRunner

from slm_cli.main import app


def test_simulate_json_has_the_documented_keys():
    result = CliRunner().invoke(app, ["rollout", "simulate", "--runs", "100", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scenario"]["runs"] == 100 and report["scenario"]["p_challenger"] == 0.05
    assert 0 <= report["aa"]["false_rollback_rate"] <= 0.05
    assert report["regression"]["detection_rate"] >= 0.9
    assert report["regression"]["mean_requests_per_arm"] < report["fixed_horizon"]["requests_per_arm"]
    assert {"false_rollback_rate", "detection_rate", "mean_requests_per_arm"} <= set(report["previous_msprt"])
    for key in ("passing", "previous_passing"):
        assert report[key]["aa_pass_rate"] >= 0.95 and 0 <= report[key]["regression_pass_rate"] <= 0.1
    for key, spending in (("group_sequential", "obrien_fleming"), ("group_sequential_pocock", "pocock")):
        gs = report[key]
        assert (gs["spending"], gs["looks"], len(gs["requests_per_look"])) == (spending, 5, 5)
        assert gs["max_requests_per_arm"] == gs["requests_per_look"][-1] > 391
        assert {"false_rollback_rate", "detection_rate", "mean_requests_per_arm"} <= set(gs)


def test_simulate_table_names_every_rule():
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["rollout", "simulate", "--runs", "50", "--looks", "4"])
    assert result.exit_code == 0, result.output
    for rule in ("mSPRT", "previous mSPRT", "fixed horizon", "OBF, 4 looks", "Pocock, 4 looks", "naive z",
                 "no-regression test from its floor", "interval's bound below tau"):
        assert rule in result.output


def test_simulate_runs_a_success_rate_regression():
    # Feedback success 85 % -> 80 %: a lower rate is the harm; the fixed horizon is that of 15 % -> 20 %.
    result = CliRunner().invoke(app, ["rollout", "simulate", "--runs", "100", "--json", "--harmful", "lower",
                                      "--p-champion", "0.85", "--p-challenger", "0.80", "--tau", "0.05"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scenario"]["harmful"] == "lower" and report["fixed_horizon"]["requests_per_arm"] == 1248
    assert report["regression"]["detection_rate"] >= 0.9
    assert report["regression"]["mean_requests_per_arm"] < 1248
    table = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["rollout", "simulate", "--runs", "50", "--harmful",
                                                           "lower", "--p-champion", "0.85", "--p-challenger", "0.8"])
    assert table.exit_code == 0 and "success rate 85.0% vs 80.0%" in table.output


def test_simulate_refuses_a_scenario_without_a_regression():
    result = CliRunner().invoke(app, ["rollout", "simulate", "--p-challenger", "0.001"])
    assert result.exit_code == 2 and "must be above p_champion" in result.output
    result = CliRunner().invoke(app, ["rollout", "simulate", "--harmful", "lower", "--p-champion", "0.85",
                                      "--p-challenger", "0.9"])
    assert result.exit_code == 2 and "must be below p_champion" in result.output
    result = CliRunner().invoke(app, ["rollout", "simulate", "--max-per-arm", "10", "--batch", "50", "--runs", "10"])
    assert result.exit_code == 2 and "batch (50) must not exceed max_per_arm (10)" in " ".join(result.output.split())


def test_simulate_callers_reports_both_variances():
    args = ["rollout", "simulate-callers", "--runs", "100", "--icc", "0.1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scenario"]["icc"] == 0.1 and report["top_caller_share"] > 0.1
    assert report["by_caller"]["false_rollback_rate"] < report["independent"]["false_rollback_rate"]
    table = CliRunner(env={"COLUMNS": "200"}).invoke(app, args[:-1])
    assert table.exit_code == 0 and "by caller (the rollout's)" in table.output and "busiest" in table.output


def test_simulate_callers_names_a_bad_option():
    result = CliRunner().invoke(app, ["rollout", "simulate-callers", "--p-challenger", "0.01"])
    assert result.exit_code == 2 and "must be above p_champion" in result.output
    result = CliRunner().invoke(app, ["rollout", "simulate-callers", "--icc", "1"])
    assert result.exit_code == 2 and "icc" in result.output
