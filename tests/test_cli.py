"""The command line's surface: help for every flag, and user errors as one line before any write."""

import argparse
import json
import subprocess
from pathlib import Path

import pytest
from _processes import python_m

from ldnas_jax.cli import COMMANDS, build_parser, main
from ldnas_jax.commands import demo, reproduce

REPO = Path(__file__).parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_option_of_every_command_has_help_and_shows_its_default_once():
    commands = _subparsers(build_parser("ldnas"))
    assert sorted(commands) == sorted(COMMANDS)
    for name, parser in commands.items():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            flag = action.option_strings[-1]
            assert action.help and action.help.strip(), f"{name} {flag} has no help"
            shown = parser.formatter_class(parser.prog)._get_help_string(action)
            assert shown.count("(default:") <= 1, f"{name} {flag}: {shown}"
        assert "``" not in text and ":func:" not in text, f"raw RST in {name} --help"
    # e.g. the flags the issue found without help, and a default that was printed twice
    help_of = lambda command, flag: next(
        a.help for a in commands[command]._actions if flag in a.option_strings
    )
    for command, flag in (
        ("demo", "--seed"),
        ("demo", "--fisher-examples"),
        ("distances", "--model"),
        ("distances", "--epochs"),
        ("distances", "--batch-size"),
        ("distances", "--epsilon"),
        ("distances", "--estimator"),
        ("distances", "--sigma"),
        ("distances", "--normalize"),
    ):
        assert help_of(command, flag), (command, flag)
    hand = commands["reproduce"].format_help().split("--hand-designed HAND_DESIGNED")[-1]
    assert hand.split("--no-baselines")[0].count("densenet121") == 1
    assert "(default: runs/demo)" in commands["demo"].format_help()


def test_no_help_states_an_empty_or_unset_default():
    commands = _subparsers(build_parser("ldnas"))
    for name, parser in commands.items():
        text = " ".join(parser.format_help().split())  # undo the line wrapping
        for empty in ("(default: )", "(default: None)", "(default: [])", "(default: False)"):
            assert empty not in text, f"{name} --help says {empty}"
        if name != "demo":  # an offline TFDS error's hint names the flag as --help shows it
            assert "--mnist-dir DIR" in text, name
    actions = commands["reproduce"]._actions
    help_of = {a.option_strings[0]: a.help for a in actions if a.option_strings}
    assert "(unset: exactly --epochs)" in help_of["--max-epochs"]
    assert "(default: 1000)" in help_of["--max-train"]


def test_every_command_caps_training_examples_with_max_train():
    for name, parser in _subparsers(build_parser("ldnas")).items():
        flags = {flag for action in parser._actions for flag in action.option_strings}
        assert "--max-train" in flags, name
        assert "--subset" not in parser.format_help(), name


def test_reproduce_still_reads_the_old_subset_name_with_a_note(tmp_path, capsys):
    parser = build_parser("ldnas")
    settings = reproduce.resolve_settings(parser.parse_args(["reproduce", "--subset", "7"]))
    assert settings.max_train == 7 and not hasattr(settings, "subset")
    assert "note: command line: --subset is now --max-train" in capsys.readouterr().err
    config = tmp_path / "old.json"
    config.write_text(json.dumps({"subset": 5}))
    from_file = parser.parse_args(["reproduce", "--config", str(config)])
    assert reproduce.resolve_settings(from_file).max_train == 5
    assert f"note: config {config}: --subset is now --max-train" in capsys.readouterr().err
    both = parser.parse_args(["reproduce", "--config", str(config), "--max-train", "9"])
    assert reproduce.resolve_settings(both).max_train == 9  # the flag beats the file
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["reproduce", "--subset", "7", "--max-train", "3", "--out", str(out)]) == 2
    assert "--subset is the old name of --max-train" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.slow
def test_the_module_s_help_names_the_program_and_is_plain_text():
    result = subprocess.run(**python_m("--help", cwd=REPO))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m ldnas_jax ")
    assert "``" not in result.stdout and "demo" in result.stdout


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["distances", "--tasks", "E0", "E9"], "unknown task 'E9'"),
        (["distances", "--tasks", "E0"], "at least 2"),
        (["distances", "--tasks", "E0", "E0"], "repeat"),
        (["distances", "--sigma", "-1"], "--sigma"),
        (["demo", "--target", "E66"], "unknown task 'E66'"),
        (["demo", "--epochs", "0"], "--epochs"),
        (["demo", "--baselines", "E1", "NOPE"], "unknown task 'NOPE'"),
        (["reproduce", "--hand-designed", "alexnet"], "unknown hand-designed models"),
        (["reproduce", "--search-targets", "E9", "--tasks", "E0", "E1"], "search targets"),
        (["transfer-check", "--tasks", "E0", "E1", "E4", "--estimator", "guess"], "estimator"),
        (["distances", "--npz-source", "broken"], "NAME=PATH"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_a_user_error_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)] if argv != ["nonsense"] else argv) == 2
    assert message in _one_line_error(capsys)
    assert not out.exists()


def test_a_typo_in_the_demo_target_leaves_the_directory_free_for_the_rerun(tmp_path, capsys):
    out = tmp_path / "D"
    assert main(["demo", "--target", "E66", "--out", str(out)]) == 2
    assert "E66" in _one_line_error(capsys)
    assert not out.exists()  # nothing written: no config.json to refuse the rerun with
    # The corrected command passes every check (running it is test_demo's business).
    args = build_parser("ldnas").parse_args(
        ["demo", "--target", "E6", "--out", str(out), "--max-train", "16"]
    )
    plan = demo.check(args)
    assert plan.target.name == "E6" and [d.name for d in plan.baselines] == ["E1", "E3", "E5", "E7"]
    assert not out.exists()


@pytest.mark.slow
def test_the_installed_module_reports_a_user_error_without_a_traceback(tmp_path):
    result = subprocess.run(**python_m("distances", "--tasks", "E0", "E9", cwd=tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown task 'E9'")
    assert result.stderr.count("\n") == 1, result.stderr
    assert list(tmp_path.iterdir()) == []
