"""Stateful, standalone Amazon Pay API v2 emulator (aiohttp). See emulator/README.md."""

from .app import create_app
from .server import RunningEmulator, run_emulator
from .state import EMULATOR_KEY, Emulator, EmulatorConfig

__all__ = [
    "EMULATOR_KEY",
    "Emulator",
    "EmulatorConfig",
    "RunningEmulator",
    "create_app",
    "run_emulator",
]
