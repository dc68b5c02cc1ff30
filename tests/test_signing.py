"""Signed checkpoints (Ed25519) and verification of every checkpoint field (DESIGN §10)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import transit_arrow as ta


def keypair(folder: Path, name: str) -> tuple[Ed25519PrivateKey, Path, Path]:
    """A key, and its private (PKCS#8 PEM) and public (SubjectPublicKeyInfo PEM) files."""
    key = Ed25519PrivateKey.generate()
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, private, public


@pytest.fixture
def filled(log: ta.Log) -> ta.Log:
    s = log.create_stream("s")
    s.append([{"x": i} for i in range(5)])
    s.flush()
    return log


def signature_entry(report: ta.VerifyReport) -> ta.VerifyEntry:
    [entry] = [e for e in report.entries if e.check == "signature"]
    return entry


def test_signed_checkpoint_verifies_with_trusted_key(filled: ta.Log, tmp_path: Path) -> None:
    """A checkpoint signed with a key verifies against that key (object, PEM, raw, hex), and
    survives a JSON round trip with its signature."""
    key, _, public = keypair(tmp_path, "a")
    cp = filled.stream("s").checkpoint(sign_with=key)
    assert cp.signature is not None and cp.public_key is not None
    again = ta.Checkpoint.from_json(cp.to_json())
    assert again == cp
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for trusted in (key.public_key(), public.read_bytes(), raw, raw.hex(), [raw.hex()]):
        report = filled.verify(again, trusted_keys=trusted)
        assert report.ok, str(report)
        assert "trusted key" in signature_entry(report).detail
    # Without trusted keys the signature is still checked (and says no signer was required).
    assert "pass trusted keys" in signature_entry(filled.verify(again)).detail


def test_untrusted_or_altered_or_unsigned_fails(filled: ta.Log, tmp_path: Path) -> None:
    """Signed by another key, altered after signing (any field), or not signed at all when
    trusted keys are required: verification fails with the reason."""
    key, _, _ = keypair(tmp_path, "a")
    other, _, _ = keypair(tmp_path, "b")
    cp = filled.stream("s").checkpoint(kind="release", sign_with=key)
    report = filled.verify(cp, trusted_keys=other.public_key())
    assert not report.ok
    assert "not one of the 1 trusted key" in signature_entry(report).detail
    for change in ({"kind": "other"}, {"created_at": "2000-01-01T00:00:00Z"}):
        altered = dataclasses.replace(cp, **change)  # type: ignore[arg-type]
        entry = signature_entry(filled.verify(altered))
        assert not entry.ok and "altered after signing" in entry.detail
    unsigned = cp.unsigned
    entry = signature_entry(filled.verify(unsigned, trusted_keys=key.public_key()))
    assert not entry.ok and "not signed" in entry.detail
    resigned = dataclasses.replace(
        cp,
        public_key=other.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex(),
    )
    assert not signature_entry(filled.verify(resigned)).ok
    with pytest.raises(ta.InvalidInputError, match="not an Ed25519 private key"):
        filled.stream("s").checkpoint(sign_with=b"short")
    with pytest.raises(ta.InvalidInputError, match="trusted_keys applies"):
        filled.verify("s", trusted_keys=key.public_key())


def test_every_checkpoint_field_is_checked(filled: ta.Log) -> None:
    """A checkpoint whose head offset, root or generation does not match the history fails;
    its head offset is checked even when the root is right."""
    cp = filled.stream("s").checkpoint()
    assert filled.verify(cp).ok
    report = filled.verify(dataclasses.replace(cp, head_offset=cp.head_offset - 1))
    [failure] = report.failures
    assert "head offset" in failure.detail
    assert (failure.expected, failure.found) == (str(cp.head_offset - 1), str(cp.head_offset))
    assert not filled.verify(dataclasses.replace(cp, root="ab" * 32)).ok
    assert not filled.verify(dataclasses.replace(cp, generation=cp.generation + 5)).ok
    assert not filled.verify(dataclasses.replace(cp, generation=-1)).ok
    with pytest.raises(ta.StreamNotFoundError):
        filled.verify(dataclasses.replace(cp, stream="nope"))


def test_cli_sign_and_trust(filled: ta.Log, tmp_path: Path) -> None:
    """`transit checkpoint --sign KEYFILE` prints a signed checkpoint; `transit verify
    --checkpoint FILE --trust PUBKEY` passes with the signer's key and fails (exit 1, one
    `error:` line) with another key or an altered file."""
    root = filled.uri
    filled.close()
    _, private, public = keypair(tmp_path, "a")
    _, _, stranger = keypair(tmp_path, "b")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "transit_arrow", *args], capture_output=True, text=True
        )

    made = run("checkpoint", root, "s", "--sign", str(private), "--output", "json")
    assert made.returncode == 0, made.stderr
    cp_file = tmp_path / "cp.json"
    cp_file.write_text(made.stdout)
    assert json.loads(made.stdout)["signature"]
    ok = run("verify", root, "--checkpoint", str(cp_file), "--trust", str(public))
    assert ok.returncode == 0, ok.stderr
    assert "ok   signature" in ok.stdout
    bad = run("verify", root, "--checkpoint", str(cp_file), "--trust", str(stranger))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert bad.stderr.startswith("error: verification FAILED")
    data = json.loads(made.stdout)
    data["kind"] = "forged"
    cp_file.write_text(json.dumps(data))
    altered = run("verify", root, "--checkpoint", str(cp_file), "--trust", str(public))
    assert altered.returncode == 1 and "altered after signing" in altered.stdout
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00\xff not a key")
    refused = run("checkpoint", root, "s", "--sign", str(garbage))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: not an Ed25519 private key")
