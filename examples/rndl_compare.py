"""Record-now-decrypt-later, end to end, in one script.

Runs the same conversation over real TCP under every configuration (hybridchan's
classical / pqc / hybrid / qkd-only / hybrid+qkd channels and OpenSSL's TLS 1.3
baselines), records the wire bytes, then lets each future adversary try to
decrypt the recordings by recomputing the key schedule with only what it can
break. Prints the matrix and writes rndl.json and rndl.png next to the
recordings.

    python examples/rndl_compare.py [OUTPUT_DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from hybridchan.rndl import experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "output_dir",
        nargs="?",
        type=Path,
        default=Path("rndl-output"),
        help="recordings and results",
    )
    out = parser.parse_args().output_dir
    console = Console()
    try:
        (out / "recordings").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.exit(f"rndl_compare: cannot create {out / 'recordings'}: {exc.strerror}")
    matrix = experiment.run(out / "recordings", progress=lambda m: console.print(f"[dim]{m}[/dim]"))
    console.print(matrix.table())
    matrix.write_json(out / "rndl.json")
    matrix.write_png(out / "rndl.png")
    hybrid_qkd = matrix.get("hybrid+qkd", "quantum+ml-kem")
    console.print(
        f"\nEven with X25519 AND ML-KEM broken, hybrid+qkd gave up {hybrid_qkd.recovered_bytes} "
        f"of {hybrid_qkd.total_bytes} bytes: protected by {', '.join(hybrid_qkd.protected_by)}."
    )
    console.print(f"recordings, rndl.json and rndl.png are in {out}/")


if __name__ == "__main__":
    main()
