"""`scripts/buf_breaking.sh` against the released image and the previous commit, in a scratch repo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BUF = Path(sys.executable).parent / "buf"
CHARGE_PROTO = Path("protos/payments/amazonpay/v1/charge.proto")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    if not BUF.exists():
        pytest.fail(f"buf is a dev dependency (buf-bin) and must be at {BUF}")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(REPO / "protos", repo / "protos")
    shutil.copy(REPO / "buf.yaml", repo / "buf.yaml")
    (repo / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "buf_breaking.sh", repo / "scripts" / "buf_breaking.sh")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "released")
    return repo


def _run(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/buf_breaking.sh"],
        cwd=repo,
        env={**os.environ, "BUF": str(BUF)},
        capture_output=True,
        text=True,
    )


def _remove_a_field(repo: Path) -> None:
    path = repo / CHARGE_PROTO
    text = path.read_text()
    changed = re.sub(r"\n\s*string soft_descriptor = \d+;", "\n", text, count=1)
    assert changed != text
    path.write_text(changed)


def test_the_committed_released_image_matches_the_protos() -> None:
    result = _run(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "against the released API" in result.stdout


def test_an_additive_change_passes(scratch: Path) -> None:
    path = scratch / CHARGE_PROTO
    path.write_text(
        path.read_text() + "\n// A message added later.\nmessage AddedLater {\n"
        "  // A field.\n  string note = 1;\n}\n"
    )
    _git(scratch, "commit", "-qam", "additive")
    result = _run(scratch)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_break_is_caught_even_when_the_previous_commit_already_had_it(scratch: Path) -> None:
    _remove_a_field(scratch)
    _git(scratch, "commit", "-qam", "remove a field")
    _git(scratch, "commit", "-q", "--allow-empty", "-m", "an unrelated commit on top")
    result = _run(scratch)
    assert result.returncode == 100
    assert "BREAKING changes against the released API" in result.stderr
    assert "soft_descriptor" in result.stdout + result.stderr
