"""Errors the user sees as one line (the CLI prints them and exits with status 2)."""

from __future__ import annotations


class StreamSpkError(Exception):
    """Base of every error caused by user input, files, devices or the environment."""


class AudioError(StreamSpkError):
    """An audio file that cannot be read or used (message names the file)."""


class ModelError(StreamSpkError):
    """A model checkpoint that is missing, corrupt or cannot be fetched."""


class DeviceError(StreamSpkError):
    """An audio or compute device that is missing or unusable."""


class ProfileError(StreamSpkError):
    """A speaker-profile store problem (bad name, unknown speaker, foreign database)."""
