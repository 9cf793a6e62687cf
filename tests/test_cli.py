"""The command line as a whole: every command and benchmark is listed, and every size option is W×H."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ftadapt.cli import cli
from ftadapt.commands.common import SizeType

COMMANDS = {"demo", "data", "convert", "train", "eval", "report", "analyze", "visualize", "export", "inspect",
            "build-engine", "predict", "bench"}
BENCHMARKS = {"train-step", "accuracy", "latency", "gpu"}  # the user benchmarks; nothing else
INVESTIGATIONS = {"eval-speed", "export-speed", "loader-speed"}


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")


def _size_options():
    """(command path, option) for every option that takes a size or a frame size."""
    for path, command in _commands(cli):
        for param in command.params:
            if isinstance(param, click.Option) and ("size" in param.name or param.name.endswith("_frame")):
                yield path, param


def test_help_lists_every_command_and_benchmark():
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"]).output
    assert all(f"  {name} " in listed for name in COMMANDS), listed
    assert set(cli.commands["bench"].commands) == BENCHMARKS
    bench = runner.invoke(cli, ["bench", "--help"]).output
    assert all(f"  {name} " in bench for name in BENCHMARKS), bench
    for path, _command in _commands(cli):
        result = runner.invoke(cli, [*path.split(), "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)


def test_the_investigations_are_apart_from_the_user_benchmarks():
    """They run as ``python -m ftadapt.commands.investigate NAME`` and appear in no help of ``ftadapt``."""
    from ftadapt.commands.investigate import investigations

    assert set(investigations.commands) == INVESTIGATIONS
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"]).output + runner.invoke(cli, ["bench", "--help"]).output
    assert not any(name in listed for name in INVESTIGATIONS)
    for name in INVESTIGATIONS:
        result = runner.invoke(investigations, [name, "--help"])
        assert result.exit_code == 0 and "--json" in result.output, (name, result.output)


def test_every_size_option_is_width_by_height():
    options = list(_size_options())
    assert len(options) >= 12  # data synth ×2, eval, export, build-engine ×2, predict, bench ×6 …
    for path, option in options:
        if option.hidden:  # the deprecated H×W spellings, kept for one release with a warning
            assert option.metavar == "HxW" and option.name.startswith("legacy_"), (path, option.name)
            continue
        assert isinstance(option.type, SizeType), f"{path} {option.opts[0]} is not a W×H size"
        assert option.type.convert("640x480", option, None) == (640, 480)
        assert option.type.convert("640X480", option, None) == (640, 480)
        for bad, message in (("640*480", "is not WIDTHxHEIGHT"), ("480", "is not WIDTHxHEIGHT"),
                             ("x480", "is not WIDTHxHEIGHT"), ("640x480x3", "is not WIDTHxHEIGHT"),
                             ("-640x480", "is not WIDTHxHEIGHT"), ("640x", "is not WIDTHxHEIGHT"),
                             ("0x480", "at least")):
            with pytest.raises(click.BadParameter, match=message):
                option.type.convert(bad, option, None)


@pytest.mark.parametrize("argv", [["data", "synth", "--out", "x", "--source-size", "320by180"],
                                  ["eval", "--pred-dir", ".", "--gt-dir", ".", "--size", "512"],
                                  ["bench", "train-step", "--source-size", "1280:720"]])
def test_a_malformed_size_is_a_usage_error_that_names_the_order(argv):
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and "is not WIDTHxHEIGHT in pixels (width first), e.g. 1024x512" in result.output
