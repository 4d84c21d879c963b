"""The RNDL matrix: configuration x adversary -> share of application bytes recovered."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

__all__ = ["Matrix", "Outcome"]

_SHORT = {"ML-KEM-768": "ML-KEM", "ML-KEM-1024": "ML-KEM", "QKD (rekey)": "QKD"}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one adversary recovered from one configuration's recordings."""

    configuration: str
    adversary: str
    recovered_bytes: int
    total_bytes: int
    #: Components whose secrets the adversary could not obtain (what protected the rest).
    protected_by: tuple[str, ...]
    note: str = ""

    @property
    def share(self) -> float:
        return self.recovered_bytes / self.total_bytes if self.total_bytes else 0.0


@dataclass(frozen=True, slots=True)
class Matrix:
    configurations: tuple[str, ...]
    adversaries: tuple[str, ...]
    outcomes: tuple[Outcome, ...]

    def get(self, configuration: str, adversary: str) -> Outcome:
        for o in self.outcomes:
            if o.configuration == configuration and o.adversary == adversary:
                return o
        raise KeyError(f"no outcome for {configuration} x {adversary}")

    def to_json(self) -> dict[str, Any]:
        return {
            "configurations": list(self.configurations),
            "adversaries": list(self.adversaries),
            "outcomes": [
                {**asdict(o), "protected_by": list(o.protected_by), "share": round(o.share, 6)}
                for o in self.outcomes
            ],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def table(
        self, title: str = "Record now, decrypt later: share of application bytes recovered"
    ) -> Table:
        table = Table(
            title=title,
            caption="under 0%: the components whose secrets the adversary could not obtain",
        )
        table.add_column("configuration", style="bold", no_wrap=True)
        for adversary in self.adversaries:
            table.add_column(adversary.replace("+", "+\n"), justify="center", overflow="fold")
        for config in self.configurations:
            row = [config]
            for adversary in self.adversaries:
                o = self.get(config, adversary)
                if o.share >= 0.999:
                    cell = "[red]100%[/red]"
                elif o.recovered_bytes == 0:
                    guard = "+".join(_SHORT.get(p, p) for p in o.protected_by) or "-"
                    cell = f"[green]0%[/green]\n[dim]{guard.replace('+', ' ')}[/dim]"
                else:
                    cell = f"[yellow]{o.share:.0%}[/yellow]"
                row.append(cell)
            table.add_row(*row)
        return table

    def write_png(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        data = np.array(
            [[self.get(c, a).share * 100 for a in self.adversaries] for c in self.configurations]
        )
        fig, ax = plt.subplots(
            figsize=(1.6 + 1.3 * len(self.adversaries), 1.5 + 0.8 * len(self.configurations))
        )
        image = ax.imshow(data, cmap="RdYlGn_r", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(self.adversaries)), self.adversaries, rotation=35, ha="right")
        ax.set_yticks(range(len(self.configurations)), self.configurations)
        for i, config in enumerate(self.configurations):
            for j, adversary in enumerate(self.adversaries):
                o = self.get(config, adversary)
                label = f"{data[i, j]:.0f}%"
                if o.recovered_bytes == 0 and o.protected_by:
                    label += "\n" + "\n".join(_SHORT.get(p, p) for p in o.protected_by)
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white")
        ax.set_title("Application bytes a future adversary recovers from recordings")
        fig.colorbar(image, ax=ax, label="% recovered")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
