"""The README's two commands (the smoke install and the test command) and what CI runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def readme_command(lead: str) -> str:
    """The one-line bash block after the paragraph that starts with `lead`."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    at = text.index(lead)
    block = re.search(r"```bash\n(.+?)\n```", text[at:], re.DOTALL)
    assert block is not None
    return block.group(1).strip()


def venv_of(command: str) -> str:
    made = re.findall(r"python3 -m venv (\S+)", command)
    assert len(made) == 1, command
    assert f". {made[0]}/bin/activate" in command  # the command works inside the virtualenv it made
    return made[0]


def test_the_smoke_install_and_the_test_command_use_virtualenvs_of_their_own():
    smoke = readme_command("**Run the whole chain offline")
    tests = readme_command("**Run the tests**")
    torch = re.compile(r"torch==(\S+)")
    # they pin different torch versions: one virtualenv for both would replace the smoke install's torch
    assert torch.findall(smoke) != torch.findall(tests)
    assert venv_of(smoke) != venv_of(tests)
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for venv in (venv_of(smoke), venv_of(tests)):
        assert f"{venv}/" in ignored or (venv.startswith(".venv-") and ".venv-*/" in ignored)


def test_ci_runs_every_step_of_the_readmes_test_command_in_order():
    steps = [s.strip() for s in readme_command("**Run the tests**").split("&&")]
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    at = 0
    for step in steps:
        assert step in lines[at:], f"{step!r} is not a line of .ci/run (after line {at})"
        at = lines.index(step, at) + 1


def test_the_real_tiers_skip_reason_names_what_is_missing_and_where_it_comes_from(monkeypatch):
    import kohya_wrap.sdscripts.checkout as checkout

    # tests/conftest.py by its path: `import conftest` may find the process tier's
    spec = importlib.util.spec_from_file_location("tests_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    monkeypatch.setattr(checkout, "locate", lambda *a, **k: object())

    def without(*names: str):  # every other module is installed
        return lambda name, *a: None if name in names else object()

    monkeypatch.setattr(importlib.util, "find_spec", without("torchvision"))
    assert conftest.real_trainer_missing() == (
        "real tier skipped: torchvision is not installed (install torch and torchvision for your platform, see README)"
    )
    monkeypatch.setattr(importlib.util, "find_spec", without("voluptuous"))
    assert (
        conftest.real_trainer_missing() == "real tier skipped: the [train] extra is not installed (missing voluptuous)"
    )


@pytest.mark.parametrize("lead", ["**Run the whole chain offline", "**Run the tests**"])
def test_each_command_is_one_line(lead):
    assert "\n" not in readme_command(lead)


def usage_commands() -> list[list[str]]:
    """Every command of the README's Usage block, as argv after `kohya-wrap` (comments and [optional] parts left out)."""
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index("## Usage") :]
    block = block[block.index("```bash\n") + 8 : block.index("\n```", block.index("```bash\n"))]
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"\s#.*$", "", line)
        line = re.sub(r"\[[^\[\]]*(\[[^\[\]]*\][^\[\]]*)*\]", "", line)  # [--backend ray [--ray-address ADDR]]
        argv = shlex.split(line)
        if argv and argv[0] == "kohya-wrap":
            commands.append(argv[1:])
    return commands


def test_every_usage_command_gives_what_its_command_requires():
    import click

    from kohya_wrap.cli import cli
    from kohya_wrap.errors import KohyaWrapError

    commands = usage_commands()
    assert len(commands) > 15
    for argv in commands:
        command: click.Command = cli
        args = list(argv)
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            found = command.get_command(click.Context(command), args[0])
            assert found is not None, argv
            command, args = found, args[1:]
        try:
            command.make_context(argv[0], args)
        except click.MissingParameter as e:
            raise AssertionError(f"kohya-wrap {' '.join(argv)}: {e.format_message()}") from None
        except click.BadParameter:
            pass  # a path that does not exist here; its shape is right
        except KohyaWrapError as e:
            assert "does not exist" in e.message, argv  # the same, said as bad input (options.ExistingFolder)
    said = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "`presets export RUN_DIR -o FILE.toml`" in said
