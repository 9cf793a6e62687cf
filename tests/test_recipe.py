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
TRAIN_EXTRA = ["--steps", "2", "--set", "data.source_size=64x32", "--set", "data.target_size=64x32", "--set",
               "data.num_workers=0", "--set", "check_data=false", "--set", "tensorboard=false", "--set",
               "device=cpu", "--set", "log_every=1"]
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
    for name, seed in (("MaxSquare_IW_Multi.pth", 2), ("MaxSquare_GTA5_source.pth", 3)):
        torch.save(official(trained_tiny("multi", "reduced", seed=seed).state_dict(), "maxsquare"), folder / name)
    ids = sorted(int(p.stem) for p in (gta5_root / "images").glob("*.png"))
    (folder / "gta5_train.txt").write_text("".join(f"{i}\n" for i in ids[:4]))  # MaxSquare's integer-id format


def _argv(line: str, env: dict[str, str]) -> list[str]:
    words = shlex.split(_expand(line, env))[1:]
    if words[0] == "train":
        model = "tiny-multi" if words[1].startswith("maxsquare") else "tiny"
        return [*words, "--model", model, *TRAIN_EXTRA]
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
    for row in ("Source only", "Only Norm loss", "CLAN", "CLAN + Norm", "CLAN + Norm*", "MaxSquare",
                "MaxSquare + Norm*"):
        assert f"| {row} |" in text and f'"{row}=' in text, row
    assert len(recipe_commands()) >= 20


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
    results = Path(env["RESULTS"])
    star = json.loads((results / "clan-norm-star.json").read_text())
    assert (star["ensemble"]["protocol"]["fusion"], star["ensemble"]["protocol"]["flip"]) == ("probs", True)
    noflip = json.loads((results / "clan-norm-star-noflip.json").read_text())
    assert noflip["ensemble"]["protocol"]["fusion"] == "logits"
    assert json.loads((results / "maxsquare-own-protocol.json").read_text())["protocol"]["gt_resolution"] == "input"
    maxsquare_run = json.loads((Path(env["RUNS"]) / "maxsquare" / "config.json").read_text())
    assert (maxsquare_run["freeze_bn_affine"], maxsquare_run["data"]["augment"]) == ("stem", "maxsquare")
    assert maxsquare_run["data"]["source_list"].endswith("gta5_train.txt")
    table = (results / "table1.md").read_text()
    for row in ("Source only", "Only Norm loss", "CLAN + Norm* ensemble", "MaxSquare + Norm* ensemble",
                "paper: MaxSquare + Norm*", "CLAN + Norm − CLAN"):
        assert f"| {row} |" in table, row
    assert (results / "table1.csv").read_text().startswith("kind,method,road,")
