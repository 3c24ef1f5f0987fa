"""loglm: instruction-based log analysis with one local language model."""
from __future__ import annotations

from loglm._loglm import (
    ContextLengthError,
    DeviceError,
    InternalError,
    LoglmError,
    ModelLoadError,
    TokenizerError,
    UnsupportedModelError,
    __version__,
)

__all__ = [
    "ContextLengthError",
    "DeviceError",
    "InternalError",
    "LoglmError",
    "ModelLoadError",
    "TokenizerError",
    "UnsupportedModelError",
    "__version__",
]
