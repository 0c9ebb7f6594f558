"""The base of every error rpm reports to a user as one line.

Each stage raises its own subclass (``StoreError``, ``SessionError``, ``SplitError``, ``TrainError``,
``ReportError``, ``PredictError``, ...); the message names the file or option and the problem. The
CLI (``cli.py``) prints any :class:`RpmError` as ``error: <message>`` and exits 1, or 2 for an
:class:`OptionError` (as for the usage errors the option parser finds itself).
"""

from __future__ import annotations


class RpmError(Exception):
    """A problem with the user's input, files or environment, explained by its message alone."""


class OptionError(RpmError, ValueError):
    """A command-line option (or option combination) that cannot be used; the message starts with it."""


class DatasetError(RpmError, ValueError):
    """A dataset-level file (labels, folds, pairing) that stops the whole preprocessing run; the message
    names it. (A problem confined to one session fails that session only: ``SessionError``.)"""
