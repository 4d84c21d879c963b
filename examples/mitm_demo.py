"""Active attacks on hybridchan channels through a man-in-the-middle relay.

Alice asks Bob to "transfer 100 EUR to account 1234" over real loopback TCP, under
every configuration (classical, pqc, hybrid, qkd-only, hybrid+qkd), while Eve sits in
the middle:

  (a) Eve without the victims' keys (own CA, own QKD link): the handshake fails;
  (b) Eve with a stolen authentication key *during* the handshake (the server's
      certificate key; for QKD: the links' bootstrap authentication): she reads
      everything and redirects the money -- QKD included;
  (c) the key stolen *after* the session: the recording stays secret;
  (d) Eve on the quantum channel: the QKD link aborts, hybrid+qkd fails closed, or
      falls back to hybrid where the policy allows, and says so.

    python examples/mitm_demo.py

Prints key IDs and alerts, never key material.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from hybridchan.rndl import active


def _short(data: bytes, limit: int = 40) -> str:
    text = data.decode("utf-8", "replace").replace("\n", " | ").strip(" |")
    return text if len(text) <= limit else text[: limit - 1] + "..."


def _mitm_table(title: str, results: list[active.MitmResult]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("configuration", "Eve holds", "Alice", "Bob", "Eve read", "Bob received"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.configuration,
            r.attacker_holds or "-",
            "OK" if r.client.handshake_completed else f"{r.client.error}\n{r.client.alert}",
            "OK" if r.server.handshake_completed else f"{r.server.error}\n{r.server.alert}",
            _short(r.attacker.read_from_client) or "[green]nothing[/green]",
            _short(r.server.received) or "-",
        )
    return table


def main() -> None:
    console = Console()
    console.rule("[bold](a) man in the middle WITHOUT the victims' keys")
    console.print(_mitm_table("", [active.mitm_without_keys(n) for n in active.CONFIGURATIONS]))
    extra = active.mitm_without_keys("hybrid+qkd", eve_controls_qkd_links=True)
    console.print(
        "hybrid+qkd with Eve holding the QKD links but not the certificate key: "
        f"Alice -> {extra.client.error} {extra.client.alert}; Eve read "
        f"{len(extra.attacker_read)} bytes."
    )

    console.rule("[bold](b) man in the middle WITH a stolen authentication key")
    stolen = [active.mitm_with_stolen_keys(n) for n in active.CONFIGURATIONS]
    console.print(_mitm_table("", stolen))
    for r in stolen:
        if "QKD" in r.client.components:
            console.print(
                f"{r.configuration}: Alice used QKD key(s) {', '.join(r.client.qkd_key_ids)}, "
                f"Bob used {', '.join(r.server.qkd_key_ids)} -- two links, both ending at Eve."
            )
    console.print(
        "[bold]Alice got her expected confirmation; Bob paid account 6666. "
        "QKD, like every key exchange, needs authentication.[/bold]"
    )

    console.rule("[bold](c) key stolen AFTER the session; the recording stays secret")
    table = Table()
    for column in ("configuration", "stolen later", "stayed unknown", "Eve recovered", "referee"):
        table.add_column(column, overflow="fold")
    for name in active.CONFIGURATIONS:
        c = active.stolen_key_after_session(name)
        table.add_row(
            name,
            c.stolen,
            ", ".join(c.missing),
            f"{len(c.attacker_recovered)} bytes",
            f"{len(c.referee_recovered)} bytes",
        )
    console.print(table)
    console.print(f"why ({c.configuration}): {c.attacker_failure}")
    console.print(
        "(referee = the same attack, attack_hybridchan, with an oracle granting everything)"
    )

    console.rule("[bold](d) eavesdropper on the quantum channel")
    d = active.quantum_channel_eavesdropper(1.0)
    console.print(
        f"link with {d.eavesdropper}: QBER {d.qber:.1%} (threshold {d.qber_threshold:.0%}), "
        f"aborted={d.link_aborted} ({d.abort_reason}), key delivered: {d.key_bits_delivered} bits"
    )
    console.print(f"policy hybrid+qkd, fail closed : {d.fail_closed_client.describe()}")
    console.print(f"    reason: {d.fail_closed_client.detail}")
    console.print(f"allow_fallback=True           : {d.fallback_client.describe()}")


if __name__ == "__main__":
    main()
