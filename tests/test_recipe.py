"""docs/reproduce.md runs: every command of the Table 1 recipe, on the synthetic data, with the tiny model, released
checkpoints faked in their official layouts (tiny widths), and a few steps — so the recipe cannot rot."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from test_convert import official, trained_tiny

from ftadapt.cli import main

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
# What the test adds to the recipe's commands so that they run in seconds on a CPU (later options win).
TRAIN_EXTRA = ["--steps", "2", "--set", "stop_at=0", "--set", "data.source_size=64x32", "--set",
               "data.target_size=64x32", "--set", "data.num_workers=0", "--set", "check_data=false", "--set",
               "tensorboard=false", "--set", "device=cpu", "--set", "log_every=1"]
EVAL_EXTRA = ["--size", "64x32", "--device", "cpu", "--workers", "1"]


def recipe_commands() -> list[str]:
    """The ``ftadapt`` command lines of the recipe's ``sh`` blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", RECIPE.read_text(), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("ftadapt ")]


def _released(folder: Path, gta5_root: Path) -> None:
    """The files the recipe downloads, faked in their official layouts with tiny widths."""
    folder.mkdir(parents=True)
    torch.save(official(trained_tiny("clan", "full").state_dict(), "deeplab-init"),
               folder / "DeepLab_resnet_pretrained_init-f81d91e8.pth")
    torch.save(official(trained_tiny("clan", "full", seed=1).state_dict(), "clan"), folder / "CLAN_GTA5.pth")
    torch.save(official(trained_tiny("multi", "reduced", seed=2).state_dict(), "maxsquare"),
               folder / "MaxSquare_IW_Multi.pth")
    for name, seed in (("FTA_norm_only.pth", 3), ("FTA_CLAN_norm.pth", 4)):
        torch.save(official(trained_tiny("clan", "full", seed=seed).state_dict(), "feature-to-adapt"), folder / name)
    for name, heads in (("GTA2Cityscapes_multi-ed35151c.pth", "multi"), ("cityscapes_oracle-b7b9934.pth", "single")):
        torch.save(official(trained_tiny(heads, "reduced", seed=5).state_dict(), "adaptsegnet"), folder / name)
    ids = sorted(int(p.stem) for p in (gta5_root / "images").glob("*.png"))
    (folder / "gta5_train.txt").write_text("".join(f"{i}\n" for i in ids[:4]))  # MaxSquare's integer-id format


def _argv(line: str, env: dict[str, str]) -> list[str]:
    words = shlex.split(_expand(line, env))[1:]
    if words[0] == "train":
        multi = words[1].startswith("maxsquare") or "deeplabv2-r101-multi-reduced" in words
        return [*words, "--model", "tiny-multi" if multi else "tiny", *TRAIN_EXTRA]
    if words[0] == "eval":
        return [*words, *EVAL_EXTRA]
    return words


def _expand(line: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line)


def test_the_recipe_names_every_row_and_matches_the_presets():
    from ftadapt.config import TrainConfig, flatten
    from ftadapt.config.presets import preset_table

    text = RECIPE.read_text()
    for key, default, presets in preset_table(flatten(TrainConfig())):
        assert f"| `{key}` | {default} | {presets} |" in text, f"docs/reproduce.md lacks the preset row of {key}"
    for row in ("AdaptSegNet", "Source only", "Only Norm loss", "CLAN", "CLAN + Norm", "CLAN + Norm*", "MaxSquare",
                "MaxSquare + Norm*", "Oracle"):
        assert f"| {row} |" in text and f'"{row}=' in text, row
    commands = recipe_commands()
    assert len(commands) >= 30
    # the released models come first, and every released file is converted with the family that wrote it
    assert commands[0].startswith("ftadapt convert --from feature-to-adapt")
    assert any("--fusion fta-code --flip" in line for line in commands)
    assert any(line.startswith("ftadapt train source-only --source cityscapes:") for line in commands)


@pytest.mark.slow
def test_every_command_of_the_recipe_runs(synthetic, tmp_path, capsys):
    env = {"GTA5": str(synthetic.gta5_root), "CITYSCAPES": str(synthetic.cityscapes_root),
           "RELEASED": str(tmp_path / "released"), "RUNS": str(tmp_path / "runs"), "RESULTS": str(tmp_path / "res")}
    _released(tmp_path / "released", synthetic.gta5_root)
    for line in recipe_commands():
        argv = _argv(line, env)
        try:
            main(argv)
        except SystemExit as exc:
            raise AssertionError(f"recipe command failed ({exc.code}): {' '.join(argv)}\n"
                                 f"{capsys.readouterr().err[-2000:]}") from None
    results, runs = Path(env["RESULTS"]), Path(env["RUNS"])
    for name, fusion, flip in (("released-clan-norm-star", "fta-code", True), ("clan-norm-star", "fta-code", True),
                               ("released-clan-norm-star-sound", "probs", True), ("clan-norm-star-noflip", "logits",
                                                                                  False)):
        protocol = json.loads((results / f"{name}.json").read_text())["ensemble"]["protocol"]
        assert (protocol["fusion"], protocol["flip"]) == (fusion, flip), name
    assert json.loads((results / "maxsquare-own-protocol.json").read_text())["protocol"]["gt_resolution"] == "input"
    maxsquare_run = json.loads((runs / "maxsquare" / "config.json").read_text())
    assert (maxsquare_run["freeze_bn_affine"], maxsquare_run["data"]["augment"]) == ("stem", "maxsquare")
    assert maxsquare_run["data"]["source_list"].endswith("gta5_train.txt")
    assert maxsquare_run["init"].endswith("maxsquare-source/checkpoints/last")  # the multi-level source model
    assert json.loads((runs / "oracle" / "config.json").read_text())["data"]["source"].startswith("cityscapes:")
    schedule = json.loads((results / "clan-norm-plan.json").read_text())
    assert schedule["config"]["loss.damping_steps"] == 150_000 and not (runs / "clan-norm-plan").exists()
    table = (results / "table1.md").read_text()
    for row in ("Source only", "Only Norm loss", "CLAN + Norm* ensemble", "MaxSquare + Norm* ensemble", "Oracle",
                "paper: MaxSquare + Norm*", "CLAN + Norm − CLAN"):
        assert f"| {row} |" in table, row
    assert (results / "table1.csv").read_text().startswith("kind,method,road,")
    released = (results / "table1-released.md").read_text()
    for row in ("AdaptSegNet", "CLAN + Norm* (CLAN first) ensemble", "Oracle", "paper: CLAN + Norm"):
        assert f"| {row} |" in released, row
