"""``hybridchan qkd simulate``: run the simulated decoy-state BB84 link and report.

A thin adapter over :mod:`qkd.sim`: options become :class:`~qkd.sim.LinkParams` /
:class:`~qkd.sim.PostProcessingParams` (which validate them), the link runs with a seeded
generator, and the result is shown as a table, JSON or a key-rate-vs-distance chart.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from typing import Any

import click
import numpy as np

from hybridchan.cli._paths import CHART_SUFFIXES, check_output_file, write_error
from qkd.sim import (
    BlockStats,
    LinkParams,
    LinkResult,
    ParameterError,
    PostProcessingParams,
    QKDLink,
    QKDSimError,
    analytic_key_rate,
    parse_eve,
    pulses_for_raw_key,
)

__all__ = ["qkd"]


@click.group()
def qkd() -> None:
    """Simulate a QKD link and its post-processing."""


def _pulses(value: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (e.g. 1e9)") from None
    if not math.isfinite(number) or number != int(number):
        raise click.BadParameter(f"{value!r} is not a whole number of pulses")
    return int(number)


@qkd.command()
@click.option("--distance", type=float, default=25.0, show_default=True, help="Fiber length in km.")
@click.option("--alpha", type=float, default=0.21, show_default=True, help="Fiber loss, dB/km.")
@click.option(
    "--eta-bob", type=float, default=0.045, show_default=True, help="Bob's detection efficiency."
)
@click.option("--dark-count", type=float, default=1.7e-6, show_default=True, help="Y0 per pulse.")
@click.option("--misalignment", type=float, default=0.033, show_default=True, help="e_d.")
@click.option("--mu", type=float, default=0.48, show_default=True, help="Signal intensity.")
@click.option("--nu", type=float, default=0.1, show_default=True, help="Weak decoy intensity.")
@click.option("--p-signal", type=float, default=0.8, show_default=True)
@click.option("--p-decoy", type=float, default=0.15, show_default=True)
@click.option("--p-vacuum", type=float, default=0.05, show_default=True)
@click.option("--p-z", type=float, default=0.5, show_default=True, help="Z-basis probability.")
@click.option("--rep-rate", type=float, default=1e9, show_default=True, help="Pulses per second.")
@click.option("--eve", default="none", show_default=True, help="none | intercept-resend:P | pns")
@click.option("--block-pulses", default="2e8", show_default=True, help="Pulses per block.")
@click.option("--blocks", type=click.IntRange(1, 10_000), default=3, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--finite-key/--asymptotic",
    default=False,
    show_default=True,
    help="Finite-key length (Lim et al. 2014); needs ~3e6 raw key bits per block "
    "(e.g. --block-pulses 1.5e9 at 10 km).",
)
@click.option("--sample-fraction", type=float, default=0.05, show_default=True)
@click.option("--qber-threshold", type=float, default=0.11, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True),
    help="Write a chart of key rate vs distance (.png, .svg or .pdf).",
)
@click.option(
    "--plot-raw-bits",
    type=click.IntRange(1000, 10**8),
    default=100_000,
    show_default=True,
    help="Raw key bits per simulated point of the plot.",
)
def simulate(**opts: Any) -> None:
    """Simulate decoy-state BB84 (GYS parameters by default) and post-process every block."""
    check_output_file(opts["plot"], "--plot", suffixes=CHART_SUFFIXES)
    try:
        link, post = _build(opts)
        result = _run(link, post, seed=opts["seed"], blocks=opts["blocks"], quiet=opts["as_json"])
        points = (
            _plot(opts["plot"], link, post, opts["seed"], opts["plot_raw_bits"])
            if opts["plot"]
            else None
        )
    except QKDSimError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise write_error(opts["plot"], exc) from None
    if opts["as_json"]:
        data = result.to_json()
        if points is not None:
            data["plot"] = {"file": opts["plot"], "points": points}
        click.echo(json.dumps(data, indent=2))
    else:
        _summary(result)
        if points is not None:
            click.echo(f"plot written to {opts['plot']}")


#: The link's fields and the ``simulate`` options (click names) that set them.
_LINK_OPTIONS: dict[str, str] = {
    "distance_km": "distance",
    "alpha_db_per_km": "alpha",
    "eta_bob": "eta_bob",
    "dark_count": "dark_count",
    "misalignment": "misalignment",
    "mu_signal": "mu",
    "mu_decoy": "nu",
    "p_signal": "p_signal",
    "p_decoy": "p_decoy",
    "p_vacuum": "p_vacuum",
    "p_z": "p_z",
    "rep_rate_hz": "rep_rate",
}


def _build(opts: dict[str, Any]) -> tuple[LinkParams, PostProcessingParams]:
    try:
        link = LinkParams(
            **{field: opts[name] for field, name in _LINK_OPTIONS.items()},
            eve=parse_eve(opts["eve"]),
        )
        post = PostProcessingParams(
            pulses_per_block=_pulses(opts["block_pulses"]),
            sample_fraction=opts["sample_fraction"],
            qber_threshold=opts["qber_threshold"],
            finite_key=opts["finite_key"],
        )
    except ParameterError as exc:
        raise click.UsageError(_in_option_names(str(exc))) from None
    return link, post


#: Parameter fields as this command's options name them, for error messages.
_OPTION_OF: dict[str, str] = {
    field: "--" + name.replace("_", "-")
    for field, name in {
        **_LINK_OPTIONS,
        "pulses_per_block": "block_pulses",
        "sample_fraction": "sample_fraction",
        "qber_threshold": "qber_threshold",
    }.items()
}
_FIELD_NAMES = re.compile(r"\b(" + "|".join(map(re.escape, _OPTION_OF)) + r")\b")


def _in_option_names(message: str) -> str:
    """A parameter error as the user typed it: ``--distance``, not ``distance_km``."""
    return _FIELD_NAMES.sub(lambda m: _OPTION_OF[m.group(1)], message)


def _run(
    link: LinkParams, post: PostProcessingParams, *, seed: int, blocks: int, quiet: bool
) -> LinkResult:
    from rich.console import Console
    from rich.progress import Progress

    qkd_link = QKDLink(link, post, rng=np.random.default_rng(seed))
    console = Console(stderr=True, quiet=quiet)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {link.distance_km:g} km", total=blocks)

        def advance(_: BlockStats) -> None:
            progress.advance(task)

        return qkd_link.run(blocks, progress=advance)


def _fmt(value: float, spec: str = ".4f") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _summary(result: LinkResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"QKD link, {result.link.distance_km:g} km, eve={result.link.eve.describe()}"
    )
    for col in (
        "#",
        "det",
        "raw",
        "QBER",
        "leak",
        "f",
        "Y1>=",
        "e1<=",
        "l_asym",
        "l_fin",
        "out",
        "auth",
        "status",
    ):
        table.add_column(col, justify="right", no_wrap=col != "status")
    for b in result.blocks:
        table.add_row(
            str(b.index),
            str(b.detections),
            str(b.raw_key),
            _fmt(b.qber_sample),
            str(b.leaked_ec),
            _fmt(b.ec_efficiency, ".3f"),
            _fmt(b.y1_lower, ".3e"),
            _fmt(b.e1_upper),
            _fmt(b.length_asymptotic, ".0f"),
            _fmt(b.length_finite, ".0f"),
            str(b.final_bits),
            str(b.auth_bits_consumed),
            b.abort_reason or "ok",
        )
    console = Console()
    if not console.is_terminal:  # pipes and logs: do not squeeze the table to 80 columns
        console = Console(width=160)
    console.print(table)
    analytic = analytic_key_rate(result.link, f=1.22)
    console.print(
        f"secret key: {result.secret_bits} bits from {result.pulses:.3g} pulses = "
        f"{result.key_rate_per_pulse:.3e} bit/pulse = {result.key_rate_bps / 1e3:.3g} kbit/s at "
        f"{result.link.rep_rate_hz:.3g} Hz (analytic GLLP decoy, f=1.22: {analytic:.3e} bit/pulse); "
        + (
            f"authentication used {result.auth_fraction:.2%} of the distilled key; "
            if math.isfinite(result.auth_fraction)
            else f"no key distilled, {result.auth_bits_consumed} authentication bits spent; "
        )
        + f"wall time {result.elapsed_s:.2f} s"
    )


def _plot(
    path: str, link: LinkParams, post: PostProcessingParams, seed: int, raw_bits: int
) -> list[dict[str, float]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distances = np.linspace(0, 150, 151)
    curve = [analytic_key_rate(dataclasses.replace(link, distance_km=d), f=1.22) for d in distances]
    exact = [
        analytic_key_rate(
            dataclasses.replace(link, distance_km=d), f=1.22, exact_single_photon=True
        )
        for d in distances
    ]
    points = []
    rng = np.random.default_rng(seed)
    for d in (0, 20, 40, 60, 80, 100, 120):
        here = dataclasses.replace(link, distance_km=float(d))
        pulses = int(min(1e15, max(1e4, pulses_for_raw_key(here, raw_bits))))
        local = dataclasses.replace(post, pulses_per_block=pulses)
        stats = QKDLink(here, local, rng=rng).run_block()
        points.append(
            {
                "distance_km": float(d),
                "asymptotic_bits_per_pulse": max(0.0, stats.length_asymptotic / pulses)
                if not math.isnan(stats.length_asymptotic)
                else 0.0,
                "delivered_bits_per_pulse": stats.final_bits / pulses,
                "ec_efficiency": stats.ec_efficiency,
            }
        )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(distances, np.maximum(curve, 1e-12), label="GLLP, vacuum+weak decoy bound (f=1.22)")
    ax.semilogy(
        distances, np.maximum(exact, 1e-12), "--", label="GLLP, exact Y1/e1 (infinite decoys)"
    )
    f_meas = [p["ec_efficiency"] for p in points if not math.isnan(p["ec_efficiency"])]
    if f_meas:
        f_mean = float(np.mean(f_meas))
        matched = [
            analytic_key_rate(
                dataclasses.replace(link, distance_km=d),
                f=f_mean,
                sample_fraction=post.sample_fraction,
            )
            for d in distances
        ]
        ax.semilogy(
            distances,
            np.maximum(matched, 1e-12),
            ":",
            label=f"same bound, f={f_mean:.2f} (measured), {post.sample_fraction:.0%} sample",
        )
    sim = [
        (p["distance_km"], p["asymptotic_bits_per_pulse"])
        for p in points
        if p["asymptotic_bits_per_pulse"] > 0
    ]
    if sim:
        ax.semilogy(
            *zip(*sim, strict=True), "o", label="simulated (Cascade leak, asymptotic length)"
        )
    if link.eve.describe() != "none":
        _no_eve_reference(ax, link, distances, with_eve=curve)
    ax.set_ylim(1e-8, 1e-2)
    ax.set_xlabel("distance (km)")
    ax.set_ylabel("secret key rate (bit/pulse)")
    ax.set_title(
        f"Decoy-state BB84, mu={link.mu_signal}, nu={link.mu_decoy}, eta_Bob={link.eta_bob}, "
        f"eve={link.eve.describe()}",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return points


def _no_eve_reference(
    ax: Any, link: LinkParams, distances: np.ndarray, *, with_eve: list[float]
) -> None:
    """With an eavesdropper the curves may be zero everywhere (nothing to draw on a log
    axis): show the same link without her, and say so when no key is left at all."""
    quiet = dataclasses.replace(link, eve=parse_eve("none"))
    reference = [
        analytic_key_rate(dataclasses.replace(quiet, distance_km=d), f=1.22) for d in distances
    ]
    ax.semilogy(
        distances, np.maximum(reference, 1e-12), color="grey", alpha=0.6, label="same link, no Eve"
    )
    if max(with_eve) <= 0:
        ax.text(
            0.5,
            0.5,
            f"eve={link.eve.describe()}: no secret key at any distance\n"
            "(the errors she causes leave nothing after privacy amplification)",
            transform=ax.transAxes,
            ha="center",
            fontsize=9,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(qkd())
