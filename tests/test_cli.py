"""The command-line entry point: every level answers --help; kem subcommands work."""

from __future__ import annotations

import importlib
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hybridchan.cli import main


def test_help_on_every_level() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0
    commands = main.list_commands(None)  # type: ignore[arg-type]
    assert "kem" in commands
    for name in commands:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        command = main.get_command(None, name)  # type: ignore[arg-type]
        for sub in getattr(command, "commands", {}):
            sub_result = runner.invoke(main, [name, sub, "--help"])
            assert sub_result.exit_code == 0, (name, sub, sub_result.output)


def test_kem_list_json_and_try() -> None:
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["kem", "list", "--json"]).output)
    usable = {(r["name"], r["backend"]) for r in listed if r["available"]}
    assert ("ML-KEM-768", "openssl") in usable
    result = runner.invoke(main, ["kem", "try", "X25519MLKEM768", "--rounds", "2"])
    assert result.exit_code == 0
    assert "both sides agree: yes" in result.output


def test_kem_try_unknown_name_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["kem", "try", "Kyber-9000"])
    assert result.exit_code != 0
    assert "unknown KEM 'Kyber-9000'; expected one of" in result.output


def _help_text(source: str) -> str:
    """A CLI module's docstring (``keygen_cmd``) or a command's --help text (``serve``)."""
    if source.endswith("_cmd"):
        return importlib.import_module(f"hybridchan.cli.{source}").__doc__ or ""
    command = main.get_command(click.Context(main), source)
    assert command is not None
    return command.help or ""


@pytest.mark.parametrize("source", ["bench_cmd", "ca_cmd", "keygen_cmd", "serve", "connect"])
def test_docstring_examples_parse(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``hybridchan ...`` example line in a command's docstring or --help is
    accepted by click."""
    lines = (line.strip() for line in _help_text(source).splitlines())
    examples = [line for line in lines if line.startswith("hybridchan ")]
    assert examples
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pki").mkdir()  # `ca issue --dir` must exist
    for example in examples:
        args = shlex.split(example, comments=True)[1:]
        if "<" in args:  # shell redirection of stdin
            args = args[: args.index("<")]
        command: click.Command | None = main
        while isinstance(command, click.Group):
            name, *args = args
            command = command.get_command(click.Context(command), name)
        assert command is not None, example
        command.make_context(command.name, args)  # raises UsageError on a bad example


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hybridchan", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "Commands" in out.stdout


def test_bench_only_replaces_its_own_rows(tmp_path: Path) -> None:
    """`hybridchan bench --only` runs the named module and keeps the other rows."""
    out = tmp_path / "results.json"
    out.write_text(json.dumps([{"name": "old/kem", "module": "bench_kem", "value": 0}, KEEP]))
    result = CliRunner().invoke(
        main, ["bench", "--only", "bench_kem", "--quick", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert KEEP in rows
    assert not any(r["name"] == "old/kem" for r in rows)
    measured = [r for r in rows if r.get("module") == "bench_kem" and r["unit"] == "ops/s"]
    assert measured and all(r["value"] > 0 for r in measured)  # not just "unavailable" rows


def test_bench_handshake_quick_reports_every_figure(tmp_path: Path) -> None:
    """The handshake benchmark runs end to end: the OpenSSL baseline must verify and
    negotiate X25519MLKEM768 (run() raises otherwise), and every figure is measured."""
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        main, ["bench", "--only", "bench_handshake", "--quick", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {
        "handshake/openssl-tls13",
        "handshake/full",
        "handshake/full/no-qkd",
        "handshake/full/primitives",
        "handshake/full/protocol-overhead",
        "handshake/qkd-psk",
        "handshake/qkd-psk/hybrid+qkd",
    }
    assert "X25519MLKEM768" in rows["handshake/openssl-tls13"]["notes"]
    assert all(r["value"] > 0 for name, r in rows.items() if not name.endswith("overhead"))


def test_bench_names_an_unknown_module(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = CliRunner().invoke(main, ["bench", "--only", "bench_kme_typo", "--output", str(out)])
    assert result.exit_code == 2
    assert "no benchmark module bench_kme_typo" in result.output and "bench_kem" in result.output
    assert not out.exists()


KEEP = {"name": "other/figure", "module": "bench_other", "value": 1.0, "unit": "x"}


FAKE_BENCH = """from benchmarks._common import Result


def run(quick: bool) -> list[Result]:
    return [Result("fake/figure", 2.0 if quick else 1.0, "x")]
"""


@pytest.fixture
def fake_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A benchmark module ``bench_fake`` and default results files, all in ``tmp_path``:
    these tests never touch benchmarks/results.json."""
    import benchmarks
    from benchmarks import __main__ as runner

    (tmp_path / "bench_fake.py").write_text(FAKE_BENCH)
    monkeypatch.setattr(benchmarks, "__path__", [*benchmarks.__path__, str(tmp_path)])
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(runner, "QUICK_RESULTS", tmp_path / "results-quick.json")
    yield tmp_path
    sys.modules.pop("benchmarks.bench_fake", None)


def test_bench_quick_keeps_the_real_figures(fake_bench: Path) -> None:
    """--quick rows go to results-quick.json; results.json keeps the measured figures."""
    real, quick = fake_bench / "results.json", fake_bench / "results-quick.json"
    real.write_text(json.dumps([{"name": "fake/figure", "module": "bench_fake", "value": 1.0}]))
    before = real.read_bytes()
    result = CliRunner().invoke(main, ["bench", "--quick", "--only", "bench_fake"])
    assert result.exit_code == 0, result.output
    assert real.read_bytes() == before
    assert [r["value"] for r in json.loads(quick.read_text())] == [2.0]
    assert f"wrote 1 rows to {quick}" in result.output
    assert (
        "smoke check, not figures" in result.output and f"{real} is left as it is" in result.output
    )


def test_bench_only_merges_within_the_chosen_file(fake_bench: Path) -> None:
    """--only replaces its module's rows and keeps the others, in whichever file is used."""
    real, quick = fake_bench / "results.json", fake_bench / "results-quick.json"
    old = {"name": "fake/old", "module": "bench_fake", "value": 0}
    for path in (real, quick):
        path.write_text(json.dumps([old, KEEP]))
    assert CliRunner().invoke(main, ["bench", "--quick", "--only", "bench_fake"]).exit_code == 0
    assert [r["name"] for r in json.loads(quick.read_text())] == ["other/figure", "fake/figure"]
    assert json.loads(real.read_text()) == [old, KEEP]
    assert CliRunner().invoke(main, ["bench", "--only", "bench_fake"]).exit_code == 0
    assert [r["value"] for r in json.loads(real.read_text())] == [1.0, 1.0]  # KEEP + full run
    chosen = fake_bench / "chosen.json"
    args = ["bench", "--quick", "--only", "bench_fake", "--output", str(chosen)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert [r["value"] for r in json.loads(chosen.read_text())] == [2.0]
    assert len(json.loads(quick.read_text())) == 2  # untouched by --output
