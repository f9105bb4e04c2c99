"""The command line itself: --version, --help for every command, and the exit codes
(0 ok, 1 a failure while running, 2 a usage error, 3 a guard stop, 130 interrupted)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tacotrain.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (sub)command path of the parser: ("prepare",), ("corpus", "mini"), ..."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name)
                yield from _commands(sub, (*path, name))


def _parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


COMMANDS = sorted(_commands(build_parser()))


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python -m tacotrain.cli ARGS`` in a fresh process (the real exit status)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "tacotrain.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_the_commands_found_are_the_known_ones():
    top = sorted(p[0] for p in COMMANDS if len(p) == 1)
    assert top == sorted(["prepare", "corpus", "train", "synth", "eval", "demo", "vocode",
                          "export", "track", "tune", "monitor", "serve"])
    assert {("corpus", "mini"), ("track", "sync"), ("tune", "report"),
            ("tune", "dashboard")} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_naming_its_options(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tacotrain {' '.join(path)} ")
    for action in _parser_of(path)._actions:
        for option in action.option_strings:
            shown = re.search(rf"(^|[\s\[,]){re.escape(option)}(?![\w-])", out, re.M)
            assert bool(shown) == (action.help != argparse.SUPPRESS), (path, option)


def test_version_is_the_installed_distribution_version(capsys):
    expected = f"tacotrain {importlib.metadata.version('tacotrain')}\n"
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == expected
    proc = _run("--version")  # python -m tacotrain.cli: the package's __main__
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, "")
    script = Path(sys.executable).with_name("tacotrain")  # the pyproject entry point
    if script.exists():
        done = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode, done.stdout) == (0, expected)


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--version" in out
    codes = out[out.index("exit codes:"):]
    found = dict(re.findall(r"^  (\d+) +(.+)$", codes, re.M))
    assert sorted(found, key=int) == ["0", "1", "2", "3", "130"]
    assert found["0"].startswith("done")
    assert found["1"].startswith("a failure while running")
    assert found["2"].startswith("a usage error")
    assert found["3"].startswith("train only: stopped by the guard")
    assert found["130"].startswith("interrupted")
    import tacotrain.cli as cli  # the module docstring documents the same codes

    for code in ("* 0:", "* 1: a failure while running", "* 2: a usage error", "* 3:",
                 "* 130: interrupted"):
        assert code in cli.__doc__, code


@pytest.mark.parametrize("argv", [["prepare", "c", "--out", "d", "--bogus"],
                                  ["nosuchcommand"],
                                  ["synth", "--text", "Hi.", "--out", "x.wav"],  # no source
                                  ["corpus", "mini", "--out", "x", "--lang", "de"]])
def test_argparse_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: tacotrain" in capsys.readouterr().err


def test_usage_errors_found_by_the_commands_exit_2(tmp_path, capsys):
    # an unknown --set key: nothing is read or written
    code = main(["prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "d"),
                 "--set", "prepare.max_secnds=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration")
    assert "prepare.max_secnds: unknown key" in err
    assert not (tmp_path / "d").exists()
    code = main(["synth", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "x")])
    assert code == 2
    assert capsys.readouterr().err == "error: give exactly one of --text or --text-file\n"
    code = main(["train", "--config", "tiny", "--data", str(tmp_path / "nodata"), "--out",
                 str(tmp_path / "r"), "--resume", "--init-from", str(tmp_path / "x.pt")])
    assert code == 2
    assert "does not combine with --resume" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_process_exits_2_on_an_unknown_flag():
    proc = _run("eval", "--checkpoint", "x.pt", "--data", "d", "--bogus")
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr


def test_a_garbage_checkpoint_exits_1_naming_the_file(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 40)
    wav = tmp_path / "x.wav"
    code = main(["synth", "--checkpoint", str(garbage), "--text", "Hi.", "--out", str(wav),
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and str(garbage) in err and "Traceback" not in err
    assert not wav.exists()
    proc = _run("synth", "--checkpoint", str(garbage), "--text", "Hi.", "--out", str(wav),
                "--device", "cpu")
    assert proc.returncode == 1
    assert str(garbage) in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_input_exits_1_naming_it(tmp_path, capsys):
    code = main(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "d")])
    assert code == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_main_maps_what_a_command_raises(monkeypatch, tmp_path, capsys):
    from tacotrain.audio import AudioReadError
    from tacotrain.config import ConfigError
    from tacotrain.extras import MissingExtra
    from tacotrain.infer.checkpoint import CheckpointError
    from tacotrain.train.trainer import StopRequested

    argv = ["export", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o")]
    for exc, code in ((CheckpointError("x.pt: bad"), 1), (AudioReadError("a.wav: bad"), 1),
                      (ConfigError("a.b: unknown key"), 2),
                      (MissingExtra("x needs y: pip install 'tacotrain[z]'"), 2),
                      (KeyboardInterrupt(), 130), (StopRequested(tmp_path / "c.pt"), 130)):
        def raise_it(args, exc=exc):
            raise exc

        monkeypatch.setattr("tacotrain.cli.export.cmd_export", raise_it)
        assert main(argv) == code, exc
        err = capsys.readouterr().err
        assert err == ("interrupted\n" if code == 130 else f"error: {exc}\n")

    def boom(args):
        raise ZeroDivisionError("a bug")  # not a known error: the traceback is kept

    monkeypatch.setattr("tacotrain.cli.export.cmd_export", boom)
    with pytest.raises(ZeroDivisionError):
        main(argv)
