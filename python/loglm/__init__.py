"""loglm: instruction-based log analysis with one local language model."""
from __future__ import annotations

from loglm._loglm import __version__
from loglm.errors import (
    ContextLengthError,
    DeviceError,
    InternalError,
    InvalidInputError,
    LoglmError,
    ModelLoadError,
    ModelNotFoundError,
    TokenizerError,
    UnsupportedModelError,
)

__all__ = [
    "ContextLengthError",
    "DeviceError",
    "InternalError",
    "InvalidInputError",
    "LoglmError",
    "ModelLoadError",
    "ModelNotFoundError",
    "TokenizerError",
    "UnsupportedModelError",
    "__version__",
]
