"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/results.json``.

python -m benchmarks [--quick] [--only NAME ...] [--output PATH]

``--quick`` rows are a smoke check, not figures: they go to
``benchmarks/results-quick.json`` (git-ignored) unless ``--output`` is given, so a
quick run never overwrites the measured figures. With ``--only``, the other modules'
rows already in the output file are kept.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

import benchmarks

RESULTS: Final = Path(benchmarks.__file__).parent / "results.json"
QUICK_RESULTS: Final = RESULTS.with_name("results-quick.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs (smoke check); rows go to benchmarks/results-quick.json, not "
        "benchmarks/results.json, unless --output is given",
    )
    parser.add_argument("--only", nargs="*", default=None, help="module names, e.g. bench_kem")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results.json; with --quick "
        "benchmarks/results-quick.json)",
    )
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = QUICK_RESULTS if args.quick else RESULTS
    console = Console(stderr=True)
    available = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    unknown = sorted(set(args.only or ()) - set(available))
    if unknown:
        console.print(
            f"[red]no benchmark module {', '.join(unknown)}[/red]; available: "
            + ", ".join(available)
        )
        return 2
    names = [n for n in available if args.only is None or n in args.only]
    results: list[dict[str, object]] = []
    failed: list[str] = []
    for name in names:
        console.print(f"[bold]running {name}[/bold]")
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            for result in module.run(quick=args.quick):
                record = result.to_json()
                record["module"] = name
                results.append(record)
        except Exception:
            failed.append(name)
            console.print(f"[red]{name} failed:[/red]\n{traceback.format_exc()}")
        console.print(f"  {name}: {time.perf_counter() - started:.1f} s")
    if args.only is not None:  # keep the other modules' rows from an earlier run
        results = [r for r in _previous(args.output) if r.get("module") not in names] + results
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title=f"benchmarks ({args.output})")
    for col in ("name", "value", "unit", "baseline", "ratio", "target"):
        table.add_column(col)
    for r in results:
        table.add_row(
            str(r["name"]),
            f"{r['value']:.4g}",
            str(r["unit"]),
            f"{r['baseline']:.4g}" if "baseline" in r else "",
            f"{r['ratio']:.3g}" if "ratio" in r else "",
            str(r.get("target", "")),
        )
    Console(width=max(Console().width, 150)).print(table)
    _say_where(console, args.output, len(results), quick=args.quick)
    if failed:
        console.print(f"[red]failed modules: {', '.join(failed)}[/red]")
        return 1
    return 0


def _say_where(console: Console, output: Path, rows: int, *, quick: bool) -> None:
    console.print(f"wrote {rows} rows to {output}", soft_wrap=True)
    if quick:
        note = "--quick rows are a smoke check, not figures"
        if output.resolve() != RESULTS.resolve():
            note += f"; {RESULTS} is left as it is"
        console.print(note, soft_wrap=True)


def _previous(path: Path) -> list[dict[str, object]]:
    """Rows of an earlier results file, or none if it is missing or unreadable."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


if __name__ == "__main__":
    sys.exit(main())
