"""``ftadapt analyze features``: the domain gap as defined, the bounded per-class reductions, the embeddings, and the
figures and numbers of the command on tiny checkpoints over the synthetic set."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from figure_checks import panels

from ftadapt.analysis import feature_space
from ftadapt.analysis.alignment import ClassMoments, domain_gap
from ftadapt.analysis.embedding import embed
from ftadapt.analysis.features import DomainFeatures, Reservoir, label_on_grid, pick_images
from ftadapt.checkpoint import save_checkpoint
from ftadapt.cli import main
from ftadapt.errors import UsageError
from ftadapt.labels import IGNORE_INDEX
from ftadapt.models.registry import create_model

SOURCE_SIZE, TARGET_SIZE = "160x96", "128x64"


def _moments(ids, feats, channels=16):
    m = ClassMoments(19, channels)
    m.add(np.asarray(ids), np.asarray(feats))
    return m


def test_domain_gap_is_zero_for_identical_clouds_large_for_separated_ones_and_scale_free():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(4000, 16))  # unit variance per channel: mean squared distance to the centroid ≈ 16
    ids = np.zeros(len(cloud), int)
    assert domain_gap(_moments(ids, cloud), _moments(ids, cloud), 0) == pytest.approx(0.0, abs=1e-9)
    shift = np.zeros(16)
    shift[3] = 40.0  # centroids 40 apart, pooled RMS spread 4 → gap 10
    other = rng.normal(size=(4000, 16))
    assert domain_gap(_moments(ids, cloud), _moments(ids, other + shift), 0) == pytest.approx(10.0, rel=0.03)
    same_law = domain_gap(_moments(ids, cloud), _moments(ids, other), 0)
    assert same_law < 0.05  # two samples of one distribution: only sampling noise
    scaled = domain_gap(_moments(ids, 7 * cloud), _moments(ids, 7 * (other + shift)), 0)
    assert scaled == pytest.approx(domain_gap(_moments(ids, cloud), _moments(ids, other + shift), 0), rel=1e-9)


def test_class_moments_hold_exact_means_and_spreads_per_class():
    feats = np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0], [1.0, 0.0], [5.0, 5.0]])
    ids = np.array([2, 2, 2, 7, IGNORE_INDEX])
    m = _moments(ids, feats, channels=2)
    assert m.count[2] == 3 and m.count[7] == 1 and m.count.sum() == 4  # the ignore position is skipped
    assert m.mean_norm(2) == pytest.approx((5 + 0 + 10) / 3)
    np.testing.assert_allclose(m.centroid(2), [3.0, 4.0])
    assert m.spread2(2) == pytest.approx((0 + 25 + 25) / 3)  # mean squared distance to (3, 4)
    assert math.isnan(m.spread2(7)) and math.isnan(m.mean_norm(5))
    assert math.isnan(domain_gap(m, m, 7))  # one position: no spread to measure in


def test_the_reduction_of_a_feature_map_matches_the_definition():
    """DomainFeatures.add (torch, where the model runs) gives the moments ClassMoments.add computes in numpy."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.rand(16, 6, 10, generator=gen) * 5
    label = torch.randint(0, 4, (6, 10), generator=gen)
    label[0, :3] = IGNORE_INDEX
    reduced = DomainFeatures.empty(16, [0, 1, 2, 3], points=5, norms=20, seed=0, domain="source")
    reduced.add(feats, label)
    flat, ids = feats.flatten(1).T.double().numpy(), label.flatten().numpy()
    expected = _moments(ids, flat)
    for name in ("count", "total", "sq", "norm_sum"):
        np.testing.assert_allclose(getattr(reduced.moments, name), getattr(expected, name), rtol=1e-5)
    assert reduced.positions == 60 and reduced.mean_norm == pytest.approx(np.linalg.norm(flat, axis=1).mean(), 1e-5)
    vectors, classes = reduced.sample()
    assert vectors.shape == (20, 16) and sorted(set(classes.tolist())) == [0, 1, 2, 3]
    for v, c in zip(vectors, classes):  # each sampled vector is a position of its class
        assert (np.abs(flat - v).max(axis=1) < 1e-5)[ids == c].any()
    assert reduced.norm_sample().shape == (20,)


def test_reservoir_keeps_the_smallest_keys_whatever_the_batches():
    rng = np.random.default_rng(1)
    keys = rng.random(5000)
    rows = np.arange(5000)[:, None]
    for batches in ([5000], [7] * 714 + [2], [1000, 1, 3999]):
        res, start = Reservoir(50), 0
        for n in batches:
            chunk = slice(start, start + n)
            res.offer(keys[chunk], lambda i, chunk=chunk: rows[chunk][i])
            start += n
        assert res.size == 50
        assert sorted(res.rows[:, 0].tolist()) == sorted(np.argsort(keys)[:50].tolist())


def test_every_model_is_sampled_at_the_same_positions():
    """The random keys depend on the images and labels only: two models see the same sampled positions."""
    label = torch.randint(0, 3, (8, 12), generator=torch.Generator().manual_seed(2))
    where = torch.arange(96, dtype=torch.float32).reshape(1, 8, 12)  # channel 0 = the position's index
    picked = []
    for scale in (1.0, 3.0):
        reduced = DomainFeatures.empty(2, [0, 1, 2], points=4, norms=10, seed=5, domain="target")
        for _ in range(3):
            reduced.add(torch.cat([where, torch.rand(1, 8, 12) * scale]), label)
        picked.append(sorted(reduced.sample()[0][:, 0].tolist()))
    assert picked[0] == picked[1]


def test_labels_reach_the_feature_grid_by_nearest_sampling():
    label = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [IGNORE_INDEX] * 4, [2, 2, 3, 3]])
    assert label_on_grid(label, (2, 2)).tolist() == [[0, 1], [IGNORE_INDEX, IGNORE_INDEX]]
    assert pick_images(5, 9, 0) == [0, 1, 2, 3, 4]
    chosen = pick_images(100, 10, 3)
    assert chosen == sorted(chosen) and len(set(chosen)) == 10 and chosen == pick_images(100, 10, 3)


def test_embeddings_are_two_dimensional_and_seeded():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 6])
    for method in ("pca", "tsne"):
        xy = embed(points, method, seed=1, threads=1)
        assert xy.shape == (60, 2) and np.isfinite(xy).all()
        np.testing.assert_array_equal(xy, embed(points, method, seed=1, threads=1))
        # two separated clouds stay apart: every point is nearer its own cloud's centre
        centres = np.stack([xy[:30].mean(0), xy[30:].mean(0)])
        nearest = np.linalg.norm(xy[:, None] - centres[None], axis=2).argmin(1)
        assert (nearest == np.repeat([0, 1], 30)).all()
    with pytest.raises(UsageError, match="at least 5 sampled points"):
        embed(points[:4], "tsne")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny models with different weights, saved as checkpoint folders."""
    root = tmp_path_factory.mktemp("analysis")
    paths = []
    for seed, method in ((0, "source-only"), (1, "norm-only")):
        torch.manual_seed(seed)
        model = create_model("tiny")
        paths.append(root / method)
        save_checkpoint(paths[-1], model_state=model.state_dict(), model_config=model.config,
                        meta={"method": method, "step": 3, "metrics": {}})
    return paths


def _run_analysis(synthetic, checkpoints, out, monkeypatch, capsys, *extra):
    """Run the command, keeping each figure it saves; returns (figures by file name, payload, table text)."""
    saved = {}
    original = feature_space.save_png

    def keep(fig, path, **kwargs):
        saved[path.name] = (fig, original(fig, path, **kwargs))
        return saved[path.name][1]

    monkeypatch.setattr(feature_space, "save_png", keep)
    main(["analyze", "features", "--checkpoint", f"so={checkpoints[0]}", "--checkpoint", str(checkpoints[1]),
          "--source", f"gta5:{synthetic.gta5_root}", "--target", f"cityscapes:{synthetic.cityscapes_root}",
          "--source-size", SOURCE_SIZE, "--target-size", TARGET_SIZE, "--images", "3", "--points", "12",
          "--device", "cpu", "--workers", "0", "--threads", "1", "--out", str(out),
          "--json", str(out.parent / "f.json"), *extra])
    payload = json.loads((out.parent / "f.json").read_text())
    return saved, payload, capsys.readouterr().out


@pytest.mark.slow
def test_analyze_features_draws_one_panel_per_model_and_writes_every_number(synthetic, checkpoints, tmp_path,
                                                                            monkeypatch, capsys):
    out = tmp_path / "features"
    saved, payload, table = _run_analysis(synthetic, checkpoints, out, monkeypatch, capsys)
    assert sorted(p.name for p in out.iterdir()) == ["embedding.csv", "feature_norms.png", "features.json",
                                                     "features_pca.png", "features_tsne.png"]
    assert json.loads((out / "features.json").read_text()) == payload
    names = ["so", "norm-only"]
    assert [m["name"] for m in payload["models"]] == names
    for file in ("features_pca.png", "features_tsne.png", "feature_norms.png"):
        fig, png = saved[file]
        drawn = panels(fig, png)
        assert [title for title, _ in drawn] == names, file
        assert all(std > 5 for _, std in drawn), (file, drawn)  # not blank: points or bars drawn in each
    # Every number of the table is in the JSON (as printed, 2 decimals).
    shown = {float(v) for v in re.findall(r"(?<![\w.])\d+\.\d\d(?![\d])", table.split("|f| =")[0])}
    held = set()
    for r in payload["results"].values():
        held |= {round(v, 2) for v in (r["mean_norm"]["source"], r["mean_norm"]["target"], r["mean_gap"])}
        for c in r["classes"].values():
            held |= {round(v, 2) for v in (c["mean_norm"]["source"], c["mean_norm"]["target"], c["gap"])
                     if v is not None}
    assert shown and shown <= held
    hist = payload["norm_histogram"]
    assert len(hist["bin_edges"]) == 61
    for model in names:
        for domain in ("source", "target"):
            counts = hist["counts"][model][domain]
            sampled = min(payload["results"][model]["positions"][domain], 100_000)
            assert sum(counts["counts"]) + counts["below_first_edge"] == sampled
    rows = (out / "embedding.csv").read_text().splitlines()
    assert rows[0] == "model,method,domain,class,x,y"
    per_class = payload["results"]["so"]["classes"].values()
    n_points = sum(c["sampled"]["source"] + c["sampled"]["target"] for c in per_class)
    assert len(rows) - 1 == 2 * 2 * n_points  # two models, two embeddings


@pytest.mark.slow
def test_plot_classes_restrict_the_scatter_not_the_numbers(synthetic, checkpoints, tmp_path, monkeypatch, capsys):
    saved, payload, _ = _run_analysis(synthetic, checkpoints, tmp_path / "f", monkeypatch, capsys,
                                      "--method", "pca", "--classes", "road,building,car,sky",
                                      "--plot-classes", "road,car")
    assert payload["classes"] == ["road", "building", "car", "sky"] and payload["plot_classes"] == ["road", "car"]
    assert set(payload["figures"]) == {"pca", "norms"}
    assert {c for c, v in payload["results"]["so"]["classes"].items() if v["sampled"]["source"]} <= {"road", "car"}
    fig, _ = saved["features_pca.png"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[2:] == ["road", "car"]


@pytest.mark.parametrize("extra, message", [
    (["--classes", "road,bogus"], "unknown class 'bogus'"),
    (["--classes", "road", "--plot-classes", "car"], "not measured: car"),
])
def test_bad_analysis_options_fail_with_one_clear_line(synthetic, checkpoints, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "features", "--checkpoint", str(checkpoints[0]), "--source", f"gta5:{synthetic.gta5_root}",
              "--target", f"cityscapes:{synthetic.cityscapes_root}", "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", ["ensemble.onnx", "meta.json"])
def test_a_file_given_as_checkpoint_is_named_not_a_traceback(synthetic, checkpoints, tmp_path, capsys, bad):
    """``analyze features --checkpoint model.onnx`` read meta.json inside the file's path before any check and ended
    in NotADirectoryError."""
    (tmp_path / bad).write_bytes(b"\x08\x08")
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "features", "--checkpoint", str(tmp_path / bad), "--source", f"gta5:{synthetic.gta5_root}",
              "--target", f"cityscapes:{synthetic.cityscapes_root}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and f"{tmp_path / bad} is a" in err and "not a checkpoint folder" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_earlier_analysis_files_are_refused_unless_overwrite_and_others_kept(synthetic, checkpoints, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "features.json").write_text("{}")  # an earlier analysis
    argv = ["analyze", "features", "--checkpoint", str(checkpoints[0]), "--source", f"gta5:{synthetic.gta5_root}",
            "--target", f"cityscapes:{synthetic.cityscapes_root}", "--source-size", SOURCE_SIZE, "--target-size",
            TARGET_SIZE, "--images", "2", "--points", "5", "--method", "pca", "--device", "cpu", "--workers", "0",
            "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"--out {out / 'features.json'} already exists" in err and "pass --overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["features.json", "notes.txt"]
    main([*argv, "--overwrite"])
    assert (out / "notes.txt").read_text() == "mine" and (out / "features_pca.png").is_file()
    assert json.loads((out / "features.json").read_text())["results"]
