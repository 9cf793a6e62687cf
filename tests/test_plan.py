"""``ftadapt train --plan``: the schedule a run will follow, from the functions the training step calls, checked by hand
against the horizons of the paper's text and of its code (FTA train.py: NUM_STEPS = 150,000, PREHEAT_STEPS = 7,500,
constants whatever the run's steps)."""
from __future__ import annotations

import json

import pytest
from cli_runs import exit_code

from ftadapt.config import build_config
from ftadapt.errors import UsageError
from ftadapt.training.plan import parse_plan_steps, plan

LR, D_LR = 2.5e-4, 1e-4


def _rows(result):
    return {row["step"]: row for row in result["schedule"]}


def test_paper_code_at_the_papers_100k_steps_damps_over_the_codes_150k():
    """At 100,000 steps the code's norm damping 1 − 1.5·i/150,000 reaches 0 exactly at the end, the adversarial
    damping ends at 1/3, the warm-up and the D preheat end at 7,500, and G's adversarial term is weighted from the
    first step."""
    cfg = build_config({"method": "clan-norm", "preset": "paper-code"})
    rows = _rows(plan(cfg))
    assert sorted(rows) == [0, 7500, 25_000, 50_000, 75_000, 100_000]
    start, end = rows[0], rows[100_000]
    assert start["lr_g"] == 0 and start["lr_d"] == 0  # linear warm-up from 0
    assert rows[7500]["lr_g"] == pytest.approx(LR * (1 - 7500 / 100_000) ** 0.9)
    assert rows[7500]["lr_d"] == pytest.approx(D_LR * (1 - 7500 / 100_000) ** 0.9)
    assert start["terms"] == pytest.approx({"seg": 1.0, "norm_src": 1.5e-4, "norm_tgt": 1.5e-4, "adv": 1e-3,
                                            "d_src": 1.0, "d_tgt": 1.0, "weight": 2 * 0.009})
    assert end["terms"]["norm_src"] == 0 and end["terms"]["norm_tgt"] == 0
    assert end["terms"]["adv"] == pytest.approx(1e-3 / 3) and end["terms"]["weight"] == pytest.approx(0.018 / 3)
    assert rows[50_000]["terms"]["norm_src"] == pytest.approx(1.5e-4 * (1 - 1.5 * 50_000 / 150_000))
    assert start["plain_bce"] == ["d_tgt"] and rows[7500]["plain_bce"] == []


def test_the_codes_150k_steps_turn_the_norm_term_around_at_its_zero_crossing():
    cfg = build_config({"method": "norm-only", "preset": "paper-code", "steps": 150_000})
    rows = _rows(plan(cfg))
    assert 100_000 in rows and rows[100_000]["terms"]["norm_tgt"] == 0  # a zero crossing is a default step
    assert rows[112_500]["terms"]["norm_tgt"] == pytest.approx(-1.5e-4 * 0.125)
    assert all(row["lr_d"] is None for row in rows.values())  # no discriminator
    assert set(rows[0]["terms"]) == {"seg", "norm_src", "norm_tgt"}


def test_the_papers_text_damps_over_the_runs_steps():
    cfg = build_config({"method": "clan", "steps": 1000})
    assert cfg.loss.damping_steps == 0
    rows = _rows(plan(cfg))
    assert sorted(rows) == [0, 250, 500, 750, 1000]
    assert rows[500]["terms"]["adv"] == pytest.approx(0.5e-3) and rows[1000]["terms"]["adv"] == 0
    assert rows[0]["lr_g"] == LR  # no warm-up in the text
    assert rows[0]["plain_bce"] == []


def test_clan_code_preheats_both_adversarial_terms():
    cfg = build_config({"method": "clan", "preset": "clan-code", "steps": 20_000})
    assert 5000 in _rows(plan(cfg))  # the end of the preheats is a default step
    rows = _rows(plan(cfg, [0, 4999, 5000]))
    assert rows[0]["plain_bce"] == rows[4999]["plain_bce"] == ["adv", "d_tgt"] and rows[5000]["plain_bce"] == []


def test_maxsquare_terms_and_chosen_steps():
    cfg = build_config({"method": "maxsquare", "loss.self_guidance": "true", "loss.lambda_target": "0.09"})
    result = plan(cfg, parse_plan_steps("80000,0,3750,3750", cfg.steps))
    assert [row["step"] for row in result["schedule"]] == [0, 3750, 80_000]
    assert result["schedule"][0]["terms"] == pytest.approx({"seg": 1.0, "maxsquare": 0.09, "guidance": 0.009})
    assert result["config"]["model"] == "deeplabv2-r101-multi-reduced"
    assert result["config"]["data.source_size"] == [1280, 720]  # flat keys, JSON values


@pytest.mark.parametrize("text", ["0,x", "", "-1", "0,100001", "1.5"])
def test_bad_plan_steps(text):
    with pytest.raises(UsageError, match="expected whole steps from 0 to 100000"):
        parse_plan_steps(text, 100_000)


def test_train_plan_writes_nothing_but_the_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "clan-norm", "--plan", "--set", "preset=paper-code", "--plan-steps", "0,3750,80000",
            "--json", "plan.json"]
    assert exit_code(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
    result = json.loads((tmp_path / "plan.json").read_text())
    assert set(result) == {"config", "schedule"} and result["config"]["loss.damping_steps"] == 150_000
    assert [row["step"] for row in result["schedule"]] == [0, 3750, 80_000]
    assert result["schedule"][1]["lr_g"] == pytest.approx(LR * 3750 / 7500)  # inside the warm-up
    out = capsys.readouterr().out
    assert "loss.damping_steps = 150000" in out and "damping over 150,000 steps" in out
    header = next(line.split() for line in out.splitlines() if line.split()[:3] == ["step", "lr_g", "lr_d"])
    assert header[3:] == ["seg", "norm_src", "norm_tgt", "adv", "d_src", "d_tgt", "weight"]
    # a run folder is planned the same way, and still written nothing into
    assert exit_code(["train", "clan", "--plan", "--out", tmp_path / "run", "--json", "-"]) == 0
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--plan-steps", "0,1"], "--plan-steps chooses the steps --plan shows: add --plan"),
    (["--plan", "--plan-steps", "7,200000"], "step 200000 is outside the run"),
    (["--source", "gta5:x"], "Missing option '--out'"),
    (["--out", "run"], "Missing option '--source'"),
    (["--plan", "--resume", "--out", "run"], "--resume --plan: run holds no run to plan the rest of"),
])
def test_train_plan_usage_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert exit_code(["train", "clan", *argv]) != 0
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
