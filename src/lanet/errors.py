"""The one exception type a user can cause.

Every error that bad input can trigger (a missing file, a wrong layout, an unknown class name, a corrupt
image, an empty split, a landmark file whose point count does not match) is raised as :class:`LanetError`
with the offending path or value in its message. The CLI prints it as one line and exits non-zero.
"""

from __future__ import annotations


class LanetError(Exception):
    """A problem with the user's input: files, layouts, labels, configuration values."""
