"""The CLI's frame: one module per command, library errors in the CLI's words, bugs keep their traceback."""

from __future__ import annotations

import pytest

from sta.cli import app
from sta.cli.app import COMMANDS, build_parser, describe, main
from sta.cli.output import spell_flags
from sta.errors import InvalidInput, RunFailed


def _failing(monkeypatch, error: BaseException) -> None:
    def run(args):
        raise error

    monkeypatch.setattr("sta.cli.plot.run", run)
    parser = app.build_parser
    monkeypatch.setattr(app, "build_parser", lambda: _with_run(parser(), run))


def _with_run(parser, run):
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["plot"]
    sub.set_defaults(run=run)
    return parser


def test_library_parameters_are_spelled_as_flags():
    assert spell_flags("use `hf_model`, not `ckpt_path`") == "use --hf-model, not --ckpt-path"
    assert spell_flags("check `num_classes` and `img_size`") == "check --nb-classes and --input-size"
    assert spell_flags("export it with `sta export`") == "export it with `sta export`"  # not a parameter


def test_an_sta_error_is_one_line_with_flags(monkeypatch, capsys):
    _failing(monkeypatch, InvalidInput("`exported` brings its own r: drop `r`", param="r"))
    assert main(["plot", "x.json"]) == 2
    assert capsys.readouterr().err == "sta plot: error: --exported brings its own r: drop --r\n"


def test_a_run_without_result_exits_1(monkeypatch, capsys):
    _failing(monkeypatch, RunFailed("no video was scored"))
    assert main(["plot", "x.json"]) == 1
    assert capsys.readouterr().err == "sta plot: no video was scored\n"


def test_an_os_error_about_a_file_is_one_line(monkeypatch, capsys):
    _failing(monkeypatch, PermissionError(13, "Permission denied", "/root/out.json"))
    assert main(["plot", "x.json"]) == 2
    assert capsys.readouterr().err == "sta plot: error: /root/out.json: permission denied\n"


@pytest.mark.parametrize("bug", [ValueError("shape mismatch deep inside"), RuntimeError("bug"), KeyError("k"),
                                 ImportError("cannot import name x"), OSError("no file named")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(monkeypatch, bug):
    """A plain ValueError / ImportError / OSError is not the user's to fix: no one-line message hides it."""
    _failing(monkeypatch, bug)
    assert describe(bug) is None
    with pytest.raises(type(bug)):
        main(["plot", "x.json"])


def test_debug_is_accepted_after_the_command_and_shows_the_traceback(monkeypatch):
    _failing(monkeypatch, InvalidInput("bad"))
    with pytest.raises(InvalidInput):
        main(["plot", "x.json", "--debug"])


def test_each_command_is_one_small_module_that_parses_and_dispatches():
    names = [command.NAME for command in COMMANDS]
    assert len(set(names)) == len(names) == 11
    for command in COMMANDS:
        lines = len(open(command.__file__, encoding="utf-8").read().splitlines())
        assert lines <= 150, f"{command.__name__}: {lines} lines"
        assert callable(command.add_arguments) and callable(command.run) and command.HELP


def int_options():
    """(command, flag) for every option of every command whose value is a whole number."""
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        for action in sub._actions:
            # --r is held to the model's group size once the model is known (a one-line error naming the limit)
            if action.option_strings and action.option_strings[0] != "--r" and action.type is not None \
                    and takes_whole_numbers(action.type):
                yield name, action.option_strings[0]


def takes_whole_numbers(parse) -> bool:
    import argparse

    try:
        return parse("3") == 3 and type(parse("3")) is int
    except (argparse.ArgumentTypeError, ValueError):
        return False


@pytest.mark.parametrize(("command", "flag"), list(int_options()))
def test_every_count_is_bounded_when_it_is_parsed(command, flag, capsys):
    """`--batch-size 100000000` used to reach torch's allocator, `--timing-rounds 100000000` never ended."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, flag, "100000000"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "at most" in err and flag in err and len(err.strip().splitlines()) == 1
