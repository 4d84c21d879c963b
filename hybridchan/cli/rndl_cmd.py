"""``hybridchan rndl``: record real sessions, then let future adversaries try them."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from hybridchan.cli._paths import CHART_SUFFIXES, check_output_file, write_error
from hybridchan.rndl import experiment
from hybridchan.rndl.oracle import ADVERSARIES

_CONFIG_NAMES = [c.name for c in experiment.CONFIGURATIONS]
_ADVERSARY_NAMES = [a.name for a in ADVERSARIES]


@click.command()
@click.option(
    "--config",
    "configs",
    multiple=True,
    type=click.Choice(_CONFIG_NAMES),
    help="Configurations to record (repeatable; default: all).",
)
@click.option(
    "--adversary",
    "adversaries",
    multiple=True,
    type=click.Choice(_ADVERSARY_NAMES),
    help="Adversaries to play (repeatable; default: all).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the recordings (.hcap) and certificates here (default: a temporary folder).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON on stdout.")
@click.option(
    "--json-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the JSON matrix to this file.",
)
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Draw the matrix as a chart (.png, .svg or .pdf).",
)
def rndl(
    configs: tuple[str, ...],
    adversaries: tuple[str, ...],
    workdir: Path | None,
    as_json: bool,
    json_out: Path | None,
    png: Path | None,
) -> None:
    """Record-now-decrypt-later: record the same conversation under every configuration
    over real TCP, then let each future adversary try to decrypt the recordings by
    recomputing the key schedule with only what it can break.
    """
    check_output_file(json_out, "--json-out")
    check_output_file(png, "--png", suffixes=CHART_SUFFIXES)
    if workdir is not None:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(
                f"cannot create {workdir}: {exc.strerror}", param_hint="--workdir"
            ) from None
    chosen = [c for c in experiment.CONFIGURATIONS if not configs or c.name in configs]
    advs = [a for a in ADVERSARIES if not adversaries or a.name in adversaries]
    err = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="hybridchan-rndl-") as tmp:
        folder = workdir if workdir is not None else Path(tmp)
        with err.status("recording sessions") as status:
            matrix = experiment.run(folder, chosen, advs, progress=lambda msg: status.update(msg))
    for target, write in ((json_out, matrix.write_json), (png, matrix.write_png)):
        if target is not None:
            try:
                write(target)
            except OSError as exc:
                raise write_error(target, exc) from None
    if as_json:
        click.echo(json.dumps(matrix.to_json(), indent=2))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(matrix.table())
    for adversary in advs:
        console.print(f"[bold]{adversary.name}[/bold]: {adversary.description}")
    if workdir is not None:
        console.print(f"recordings kept in {workdir}")
    if png is not None:
        console.print(f"chart written to {png}")
