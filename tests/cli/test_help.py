"""Every option of every ``scaledet`` command explains itself and shows its default."""

from __future__ import annotations

import argparse

import pytest

from scaledet.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command path, parser)`` for the parser and every sub-command, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def test_every_option_has_a_help_text():
    missing = [f"scaledet {' '.join(path)} {'/'.join(a.option_strings) or a.dest}"
               for path, parser in COMMANDS for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and not (a.help or "").strip()]
    assert not missing, missing


@pytest.mark.parametrize("argv, shown", [
    (["train"], ["(default: 320)", "(default: 16)", "(default: runs/train)", "(default: adamw)"]),
    (["predict"], ["(default: 0.25)", "(default: runs/predict)"]),
    (["val"], ["(default: val)", "(default: 16)"]),
    (["info"], ["(default: 320)", "(default: 80)"]),
])
def test_defaults_are_shown(argv, shown, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's wrapping
    for fragment in shown:
        assert fragment in text, fragment
    assert "(default: None)" not in text and "(default: False)" not in text
