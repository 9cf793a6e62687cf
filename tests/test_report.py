"""``ftadapt report``: evaluation results as the paper's Table 1 (rows, deltas against a baseline, Markdown, CSV)."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ftadapt.cli import cli
from ftadapt.errors import UsageError
from ftadapt.evaluation.metrics import ConfusionMatrix, EvalResult
from ftadapt.evaluation.protocols import ADAPTSEGNET
from ftadapt.evaluation.report import PAPER_TABLE_1, deltas, read_results


def _result(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    cm = ConfusionMatrix()
    gt = rng.integers(0, 18, (40, 40)).astype(np.uint8)  # class 18 never in the ground truth …
    pred = np.where(rng.random((40, 40)) < 0.7, gt, rng.integers(0, 18, (40, 40))).astype(np.uint8)  # … nor predicted
    cm.update(gt, pred)
    return EvalResult.from_confusion(cm, n_images=1, protocol=ADAPTSEGNET.describe()).to_dict()


@pytest.fixture
def files(tmp_path):
    single, pair = tmp_path / "clan.json", tmp_path / "ens.json"
    single.write_text(json.dumps(_result(0)))
    pair.write_text(json.dumps({"members": {"norm-only": _result(1)}, "ensemble": _result(2), "delta_vs": "x"}))
    return single, pair


def test_rows_from_single_and_grouped_results_and_deltas(files):
    single, pair = files
    (clan, clan_notes), (ens, ens_notes) = read_results(single, label="CLAN"), read_results(pair)
    rows = clan + ens
    assert clan_notes == ens_notes == []
    assert [r.label for r in rows] == ["CLAN", "norm-only", "ensemble"]
    clan = json.loads(single.read_text())
    assert list(rows[0].iou) == clan["per_class_iou"] and rows[0].miou == clan["miou"] and rows[0].iou[18] is None
    (d_norm, d_ens) = deltas(rows, "CLAN")
    assert d_ens.label == "ensemble − CLAN" and d_ens.iou[18] is None
    assert d_ens.miou == pytest.approx(rows[2].miou - rows[0].miou)
    assert d_norm.iou[3] == pytest.approx(rows[1].iou[3] - rows[0].iou[3])
    with pytest.raises(UsageError, match="--baseline 'Oracle' names no row"):
        deltas(rows, "Oracle")


def test_cli_writes_markdown_and_csv_with_the_papers_rows(files, tmp_path):
    single, pair = files
    md, table = tmp_path / "t1.md", tmp_path / "t1.csv"
    result = CliRunner().invoke(cli, ["report", f"CLAN={single}", str(pair), "--baseline", "CLAN", "--paper",
                                      "--out", str(md), "--out", str(table)])
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert text.splitlines()[0].startswith("| Method | Road | Sdwk |") and text in result.output
    assert "| paper: CLAN + Norm | 88.83 |" in text and "45.67 |" in text and "Difference to CLAN" in text
    assert "| paper: Source only (AdaptSegNet's ResNet-101 baseline) | 75.80 |" in text
    assert ('- the paper prints car 84.73 and bicycle 36.66 for "CLAN + Norm", which do not average to its 45.67; the '
            "authors' results_best.txt has 83.73 and 35.66, used here\n") in text
    assert f"| CLAN | {json.loads(single.read_text())['per_class_iou'][0]:.2f} |" in text
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [r["kind"] for r in rows].count("delta") == 2 + len(PAPER_TABLE_1)
    assert rows[0]["method"] == "CLAN" and rows[0]["bicycle"] == "" and float(rows[0]["road"]) > 0


@pytest.mark.parametrize("name", list(PAPER_TABLE_1))
def test_every_paper_row_averages_to_its_printed_miou(name):
    """The 19-class mean of a paper row is its printed mIoU within the rounding of the printed values: ±0.01 for a row
    printed to two decimals, ±0.05 for one printed to one (the paper's car 84.73 and bicycle 36.66 of "CLAN + Norm"
    were typos this catches)."""
    row = PAPER_TABLE_1[name]
    *iou, miou = row.values
    assert len(iou) == 19 and row.decimals in (1, 2)
    assert abs(sum(iou) / len(iou) - miou) <= {1: 0.05, 2: 0.01}[row.decimals] + 1e-9, (name, sum(iou) / len(iou))


def test_without_paper_no_paper_rows_or_notes(files):
    result = CliRunner().invoke(cli, ["report", str(files[0])])
    assert result.exit_code == 0, result.output
    assert "paper:" not in result.output and "Notes:" not in result.output


@pytest.mark.parametrize("argv, message", [
    (["missing.json"], "no results file missing.json"),
    (["{bad}"], "is not a JSON results file"),
    (["{empty}"], "holds no evaluation result"),
    (["{good}", "--out", "t.txt"], "expected a .md or .csv file name"),
])
def test_bad_inputs_are_named(tmp_path, files, argv, message):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text("{}")
    paths = {"bad": tmp_path / "bad.json", "empty": tmp_path / "empty.json", "good": files[0]}
    argv = [a.format(**paths) for a in argv]
    from ftadapt.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["report", *argv])
    assert exc.value.code == 2


def test_rows_must_be_told_apart_and_a_path_may_hold_an_equals_sign(tmp_path, capsys):
    """Two runs' ``eval.json`` both became rows named "eval" (and --baseline eval took the first); a path with "="
    in it (``runs/lr=1e-3/eval.json``) was split into a label and a missing file."""
    from ftadapt.cli import main

    for run, seed in (("lr=1e-3", 0), ("lr=1e-2", 1)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "eval.json").write_text(json.dumps(_result(seed)))
    a, b = tmp_path / "lr=1e-3" / "eval.json", tmp_path / "lr=1e-2" / "eval.json"
    with pytest.raises(SystemExit) as exc:
        main(["report", str(a), str(b)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"two rows are labelled 'eval' (from {a} and {b})" in err and "LABEL=PATH" in err
    main(["report", f"small={a}", f"large={b}", "--baseline", "small"])
    text = capsys.readouterr().out
    assert "| small |" in text and "| large |" in text and "large − small" in text
    with pytest.raises(SystemExit):  # a missing path keeps its "=" too: the message names the whole path
        main(["report", str(tmp_path / "lr=5" / "eval.json")])
    assert f"no results file {tmp_path / 'lr=5' / 'eval.json'}" in capsys.readouterr().err
