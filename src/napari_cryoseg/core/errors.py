"""Exception types for problems the user can fix.

``str(err)`` of every :class:`CryoSegError` is a one-line message saying what was wrong
and what to do about it, so the CLI and the GUI can show it as-is (no traceback).
"""

from __future__ import annotations


class CryoSegError(Exception):
    """Base class: a problem the user can fix; str(err) is a one-line message saying what was wrong and what to do."""  # noqa: E501


class InputError(CryoSegError, ValueError):
    """Bad input: a file, folder, array or parameter that cannot be used as given."""


class ModelFileError(CryoSegError):
    """A model file that is missing, corrupt or incompatible."""


class OutputExistsError(InputError, FileExistsError):
    """The output file already exists and overwriting was not requested.

    It is both an :class:`InputError` (shown to the user) and a :class:`FileExistsError`.
    """
