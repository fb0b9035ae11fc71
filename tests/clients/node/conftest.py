"""The Node client runs against the real service (in-process) and the emulator child process."""

from __future__ import annotations

from tests.e2e.conftest import app, clean_emulator, emulator, keys

__all__ = ["app", "clean_emulator", "emulator", "keys"]
