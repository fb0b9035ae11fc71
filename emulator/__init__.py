"""Stateful, standalone Amazon Pay API v2 emulator (aiohttp). See emulator/README.md."""

from .app import EMULATOR_KEY, Emulator, EmulatorConfig, create_app
from .server import RunningEmulator, run_emulator

__all__ = [
    "EMULATOR_KEY",
    "Emulator",
    "EmulatorConfig",
    "RunningEmulator",
    "create_app",
    "run_emulator",
]
