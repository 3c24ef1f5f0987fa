"""Task helpers of the five LogLM capabilities (placeholder; see issue 4)."""
from __future__ import annotations


class TaskMixin:
    """Log-analysis methods mixed into :class:`loglm.LogLM`."""
