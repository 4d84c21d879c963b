"""``hybridchan bench``: run the benchmarks of a source checkout (what ``make bench`` runs).

    hybridchan bench                      # every benchmarks/bench_*.py
    hybridchan bench --only bench_handshake --only bench_qkd --quick

Figures are ratios against baselines measured in the same run; they go to
``benchmarks/results.json``, and ``--quick`` rows (a smoke check) to
``benchmarks/results-quick.json`` (``--only`` replaces just those modules' rows there).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from hybridchan.cli._paths import check_output_file

__all__ = ["bench"]


@click.command()
@click.option(
    "--quick",
    is_flag=True,
    help="Shorter runs: a smoke check, not figures. Rows go to benchmarks/results-quick.json "
    "(unless --output), so benchmarks/results.json keeps the measured figures.",
)
@click.option(
    "--only", "only", multiple=True, metavar="MODULE", help="e.g. bench_kem (repeatable)."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Results file (default: benchmarks/results.json; with --quick "
    "benchmarks/results-quick.json).",
)
def bench(quick: bool, only: tuple[str, ...], output: Path | None) -> None:
    """Run the benchmarks and print the table of figures and ratios."""
    check_output_file(output, "--output")
    try:
        runner = importlib.import_module("benchmarks.__main__")
    except ImportError:
        raise click.ClickException(
            "the benchmarks live in the source tree (benchmarks/), not in the installed "
            "package: run this from a checkout installed with `make venv`, or `make bench`"
        ) from None
    argv = ["--quick"] if quick else []
    if only:
        argv += ["--only", *only]
    if output is not None:
        argv += ["--output", str(output)]
    raise SystemExit(runner.main(argv))
