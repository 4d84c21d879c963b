"""``hybridchan qkd simulate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

from click.testing import CliRunner
from matplotlib.figure import Figure

from hybridchan.cli.qkd_cmd import qkd


def test_simulate_json() -> None:
    result = CliRunner().invoke(
        qkd, ["simulate", "--blocks", "2", "--block-pulses", "1e8", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["secret_bits"] > 0 and len(data["blocks"]) == 2
    assert data["link"]["eve"] == "none"
    assert 0 < data["auth_fraction"] < 1


def test_simulate_table_with_eve_aborts() -> None:
    result = CliRunner().invoke(
        qkd,
        ["simulate", "--blocks", "1", "--block-pulses", "1e8", "--eve", "intercept-resend:0.8"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "QBER above threshold" in result.output and "secret key: 0 bits" in result.output


def test_simulate_rejects_bad_options() -> None:
    runner = CliRunner()
    bad = runner.invoke(qkd, ["simulate", "--eve", "tap"])
    assert bad.exit_code == 2 and "unknown eavesdropper" in bad.output
    bad = runner.invoke(qkd, ["simulate", "--nu", "0.9"])
    assert bad.exit_code == 2 and "--nu < --mu" in bad.output
    bad = runner.invoke(qkd, ["simulate", "--block-pulses", "lots"])
    assert bad.exit_code == 2 and "not a number" in bad.output


def test_simulate_plot(tmp_path: Path) -> None:
    """A PNG with the simulated points; the matched curve names the sample actually used."""
    out = tmp_path / "rate.png"
    labels: list[str] = []
    savefig = Figure.savefig

    def record(fig: Figure, *args: Any, **kwargs: Any) -> None:
        labels.extend(fig.axes[0].get_legend_handles_labels()[1])
        savefig(fig, *args, **kwargs)

    with mock.patch.object(Figure, "savefig", record):
        result = CliRunner().invoke(
            qkd,
            [
                "simulate",
                "--blocks",
                "1",
                "--block-pulses",
                "1e7",
                "--sample-fraction",
                "0.1",
                "--plot",
                str(out),
                "--json",
                "--plot-raw-bits",
                "20000",
            ],
        )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(label.endswith("(measured), 10% sample") for label in labels), labels
    points = json.loads(result.output)["plot"]["points"]
    assert len(points) == 7 and all(p["asymptotic_bits_per_pulse"] > 0 for p in points[:6])
