"""Errors a user can cause and fix.

Every such error ends the CLI with its one-paragraph message on stderr and a non-zero
exit status, never a traceback. Code raises the most specific class; the CLI only looks
at ``exit_code``.
"""

from __future__ import annotations


class PixgenError(Exception):
    """An error with a message meant for the user (exit status 2 unless said otherwise)."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class RecipeError(PixgenError):
    """The recipe (YAML, a field, an override) is wrong."""


class PluginLoadError(PixgenError):
    """A plugin could not be imported or registered (duplicate name, broken file)."""


class PluginRunError(PixgenError):
    """A plugin raised while the run was going; the message names it and its file."""

    exit_code = 1


class LossNotFinite(PixgenError):
    """The weighted loss became NaN or infinite; no later step can recover from it."""

    exit_code = 1


class WeightsError(PixgenError):
    """Model weights are missing, corrupt, unsafe or cannot be fetched."""


class DeviceError(PixgenError):
    """The requested device (cuda, mps) is not available."""


class RunInterrupted(PixgenError):
    """The run was stopped with Ctrl-C; its finished work was saved."""

    exit_code = 130


class UnknownPlugin(PixgenError):
    """No plugin of that name (and kind) is installed or loaded."""
