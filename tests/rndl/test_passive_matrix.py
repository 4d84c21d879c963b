"""The RNDL matrix, asserted: real sessions recorded over TCP, real adversaries.

Each cell comes from recomputing the key schedule out of the recording with only
what the adversary's oracle grants (see hybridchan.rndl.adversary).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from hybridchan.rndl import adversary, capture, experiment, oracle
from hybridchan.rndl.report import Matrix


@pytest.fixture(scope="module")
def analysis(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Matrix, list[experiment.Recording], oracle.Escrow]:
    recordings, escrow = experiment.record_sessions(tmp_path_factory.mktemp("rndl"))
    return experiment.analyse(recordings, escrow), recordings, escrow


def share(matrix: Matrix, config: str, adv: str) -> float:
    return matrix.get(config, adv).share


def test_every_recording_holds_the_whole_conversation(analysis) -> None:
    _, recordings, escrow = analysis
    expected_c2s, expected_s2c = (
        b"".join(m for who, m in experiment.CONVERSATION if who == speaker)
        for speaker in ("client", "server")
    )
    referee = oracle.Oracle(escrow, oracle.REFEREE)
    for r in recordings:
        rec = capture.read_capture(r.capture_path)
        assert len(rec.client_to_server) > len(expected_c2s)  # ciphertext plus handshake
        assert expected_c2s[:20] not in rec.client_to_server  # and none of it in clear
        # Positive control for every 0% cell: with every secret the recording opens fully.
        hybridchan = r.configuration.kind == "hybridchan"
        attack = adversary.attack_hybridchan if hybridchan else adversary.attack_tls13
        result = attack(rec, referee)
        assert result.client_to_server == expected_c2s, r.configuration.name
        assert result.server_to_client == expected_s2c, r.configuration.name


def test_quantum_adversary_reads_classical_sessions_entirely(analysis) -> None:
    matrix = analysis[0]
    for config in ("classical", "tls13-x25519"):
        assert share(matrix, config, "quantum") == 1.0


def test_hybrid_resists_the_quantum_adversary_unless_mlkem_also_falls(analysis) -> None:
    matrix = analysis[0]
    for config in ("hybrid", "pqc", "tls13-x25519mlkem768"):
        assert share(matrix, config, "quantum") == 0.0
        assert "ML-KEM-768" in matrix.get(config, "quantum").protected_by
        assert share(matrix, config, "quantum+ml-kem") == 1.0


def test_hybrid_plus_qkd_resists_even_a_broken_mlkem(analysis) -> None:
    matrix = analysis[0]
    outcome = matrix.get("hybrid+qkd", "quantum+ml-kem")
    assert outcome.recovered_bytes == 0
    assert outcome.protected_by == ("QKD",)
    assert share(matrix, "hybrid+qkd", "quantum+ml-kem+kme-erased") == 0.0
    # Only everything at once -- including a KME that kept its keys -- opens it.
    assert share(matrix, "hybrid+qkd", "quantum+ml-kem+kme-retained") == 1.0


def test_stealing_signing_keys_later_recovers_nothing(analysis) -> None:
    matrix = analysis[0]
    for config in matrix.configurations:
        assert share(matrix, config, "stolen-keys") == 0.0
        # ...and adds nothing to a quantum computer's haul.
        assert share(matrix, config, "quantum+stolen-keys") == share(matrix, config, "quantum")


def test_kme_compromise_leaks_only_the_qkd_component_and_only_if_keys_were_kept(analysis) -> None:
    matrix = analysis[0]
    for config in matrix.configurations:
        assert share(matrix, config, "kme-erased") == 0.0
    assert share(matrix, "qkd-only", "kme-retained") == 1.0  # QKD was its only component
    retained = matrix.get("hybrid+qkd", "kme-retained")
    assert retained.recovered_bytes == 0
    assert "QKD" not in retained.protected_by  # the QKD secret did leak...
    assert "ML-KEM-768" in retained.protected_by  # ...the PQ component still protects


def test_kme_compromise_is_a_stolen_store_file(analysis, tmp_path: Path) -> None:
    """Genuine: KME A's files hold none of the delivered QKD keys, KME B's hold them all,
    and the oracle hands out exactly what the stolen copy of the file holds."""
    _, recordings, escrow = analysis
    qkd = [r for r in recordings if r.configuration.uses_qkd]
    stores = qkd[0].kme_stores
    assert len(qkd) == 2 and stores is not None and all(r.kme_stores == stores for r in qkd)
    delivered = {key_id: escrow.qkd_keys[key_id] for r in qkd for key_id in r.qkd_key_ids}
    assert len(delivered) >= 6  # QKD keys, the QKD-PSK and the rekeys of both sessions

    def files(store: Path) -> bytes:
        return b"".join(p.read_bytes() for p in store.parent.glob(store.name + "*"))

    erased, retained = files(stores.erasing), files(stores.retaining)
    for key_id, key in delivered.items():
        assert key not in erased and oracle.read_stolen_store(stores.erasing, key_id) is None
        assert key in retained and oracle.read_stolen_store(stores.retaining, key_id) == key

    # Tamper with a copy of KME B's store: the oracle now hands out the tampered bits.
    tampered = tmp_path / "kme_b.sqlite"
    shutil.copyfile(stores.retaining, tampered)
    db = sqlite3.connect(tampered)
    db.execute("UPDATE keys SET bits = zeroblob(length(bits)) WHERE bits IS NOT NULL")
    db.commit()
    db.close()
    kme_retained = next(a for a in oracle.ADVERSARIES if a.name == "kme-retained")
    fake = oracle.Oracle(escrow, kme_retained, oracle.KMEStores(stores.erasing, tampered))
    key_id, key = next(iter(delivered.items()))
    assert fake.qkd_key(key_id) == bytes(len(key))
    qkd_only = next(r for r in qkd if r.configuration.name == "qkd-only")
    result = adversary.attack_hybridchan(capture.read_capture(qkd_only.capture_path), fake)
    assert result.recovered == 0
    # No file to steal, no key -- whatever the escrow holds.
    gone = oracle.KMEStores(tmp_path / "none.sqlite", tmp_path / "none.sqlite")
    with pytest.raises(oracle.NotGranted, match="no KME store file"):
        oracle.Oracle(escrow, kme_retained, gone).qkd_key(key_id)


def test_wrong_component_secret_decrypts_nothing(analysis) -> None:
    """Feed the adversary a wrong X25519 key: the AEAD refuses, nothing is 'recovered'."""
    _, recordings, escrow = analysis
    classical = next(r for r in recordings if r.configuration.name == "classical")
    fake = oracle.Escrow()
    for (alg, public), _private in escrow.kem_private.items():
        import kem

        fake.note_kem_key(alg, public, kem.get_kem("X25519").generate_keypair().private)
    result = adversary.attack_hybridchan(
        capture.read_capture(classical.capture_path), oracle.Oracle(fake, oracle.ADVERSARIES[0])
    )
    assert result.recovered == 0
    assert any("do not decrypt" in note for note in result.notes)


def test_report_outputs(analysis, tmp_path: Path) -> None:
    matrix = analysis[0]
    matrix.write_json(tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    assert len(data["outcomes"]) == len(matrix.configurations) * len(matrix.adversaries)
    assert {o["share"] for o in data["outcomes"]} <= {0.0, 1.0}
    matrix.write_png(tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rndl_json(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hybridchan.cli import main

    result = CliRunner().invoke(
        main,
        [
            "rndl",
            "--json",
            "--config",
            "classical",
            "--config",
            "hybrid",
            "--adversary",
            "quantum",
            "--workdir",
            str(tmp_path / "w"),
            "--png",
            str(tmp_path / "c.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    cells = {(o["configuration"], o["adversary"]): o["share"] for o in data["outcomes"]}
    assert cells == {("classical", "quantum"): 1.0, ("hybrid", "quantum"): 0.0}
    assert list((tmp_path / "w").rglob("*.hcap"))
    assert (tmp_path / "c.png").exists()
