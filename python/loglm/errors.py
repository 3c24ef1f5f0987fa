"""The exception hierarchy of loglm.

Every error loglm raises derives from :class:`LoglmError`. Errors that are also
a standard kind of error derive from that built-in too, so ``except ValueError``
and ``except FileNotFoundError`` keep working:

- :class:`InvalidInputError` (``ValueError``): bad arguments or unusable input
  text (empty batch, ``max_new_tokens=0``, non-UTF-8 bytes, length mismatch...).
- :class:`InvalidTypeError` (an :class:`InvalidInputError`, also ``TypeError``): an
  argument of the wrong type (a single string where a list of strings is expected...).
- :class:`ContextLengthError` (``ValueError``): a prompt does not fit the context.
- :class:`ModelNotFoundError` (``FileNotFoundError``): a model path that does not
  exist, or the default model package that is not installed;
  :class:`LogFileNotFoundError` (also ``FileNotFoundError``) for a log file, or a glob
  that matches no file.
- :class:`DatasetNotFoundError` (``FileNotFoundError``): a data file (a dataset under
  ``LOGLM_DATA_DIR`` that could not be downloaded, instruction records to tune on).
- :class:`MissingDependencyError` (``ImportError``): an optional extra is not installed
  (``loglm[train]``, ``loglm[ray]``...); the message says what to install.
- :class:`NotFittedError` (an :class:`InvalidInputError`, also ``AttributeError``): an
  estimator used before ``fit``.
- :class:`ModelLoadError`: a model file that is truncated, corrupt or incomplete;
  :class:`UnsupportedModelError` for a well-formed model loglm cannot run.
- :class:`AdapterError` (a :class:`ModelLoadError`): a LoRA adapter that is malformed,
  does not fit the base model's shapes or uses an option loglm cannot merge (DoRA,
  ``modules_to_save``, trained biases...); :class:`AdapterNotFoundError` (also a
  ``FileNotFoundError``) when its folder or files are missing.
- :class:`TokenizerError`: missing or unusable tokenizer or chat template.
- :class:`DeviceError`: a device not compiled in or not present.
- :class:`NumericalError`: the model produced NaN or infinite values (broken
  weights or configuration that slipped past the load-time checks); raised
  instead of answering with nonsense.
- :class:`InternalError`: a bug in loglm (a caught Rust panic included).
- :class:`RemoteError`: a model server (``LogLM.remote``) answered with an error;
  :class:`ServerUnavailableError` (also ``ConnectionError``) when it cannot be reached
  or stays overloaded after the retries, :class:`AuthenticationError` for a rejected
  API key, :class:`BadRequestError` (also ``ValueError``) for a request it refused.

The Rust core raises these same classes (the remote ones come from Python only).
"""
from __future__ import annotations

import os
from typing import Any, Optional


class LoglmError(Exception):
    """Base class of every error raised by loglm."""


class InvalidInputError(LoglmError, ValueError):
    """An argument or input text loglm cannot use."""


class InvalidTypeError(InvalidInputError, TypeError):
    """An argument of the wrong type. Also a ``TypeError`` (and, as an
    :class:`InvalidInputError`, a ``ValueError``)."""


class NotFittedError(InvalidInputError, AttributeError):
    """An estimator (``CollaborativeDetector``) used before ``fit`` (also ``AttributeError``,
    as scikit-learn's ``NotFittedError``)."""


class ContextLengthError(InvalidInputError):
    """A prompt (plus ``max_new_tokens``) does not fit the model's context window."""


class ModelNotFoundError(LoglmError, FileNotFoundError):
    """A model file or folder, or the default model package, is missing."""


class DatasetNotFoundError(LoglmError, FileNotFoundError):
    """A data file is missing: a dataset that is neither under ``LOGLM_DATA_DIR`` nor
    downloadable, or a file of instruction records."""


class MissingDependencyError(LoglmError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
class LogFileNotFoundError(LoglmError, FileNotFoundError):
    """A log file named by a path, a command-line argument or a glob does not exist."""


class ModelLoadError(LoglmError):
    """A model file is missing pieces, truncated or corrupt."""


class UnsupportedModelError(ModelLoadError):
    """The model is well formed but uses an architecture or tensor type loglm cannot run."""


class AdapterError(ModelLoadError):
    """A LoRA adapter is malformed, does not fit the base model, or cannot be merged."""


class AdapterNotFoundError(AdapterError, FileNotFoundError):
    """A LoRA adapter folder, or its ``adapter_config.json`` / ``adapter_model.safetensors``, is missing."""


class TokenizerError(LoglmError):
    """The tokenizer or chat template is missing or unusable."""


class DeviceError(LoglmError):
    """The requested device is not available in this build or on this machine."""


class NumericalError(LoglmError):
    """The model produced NaN or infinite values (broken weights or configuration)."""


class InternalError(LoglmError):
    """A bug in loglm, including a Rust panic caught at the boundary. Please report it."""


class RemoteError(LoglmError):
    """A model server answered with an error. ``status`` (HTTP status, 0 when there was
    no answer), ``code`` (the server's error code, if any) and ``url`` tell which."""

    def __init__(self, message: str, *, status: int = 0, code: Optional[str] = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.url = url


class ServerUnavailableError(RemoteError, ConnectionError):
    """The model server cannot be reached (refused, timed out) or stayed unavailable
    (429 / 5xx) after the retries."""


class AuthenticationError(RemoteError):
    """The model server rejected the API key (HTTP 401 / 403)."""


class BadRequestError(RemoteError, InvalidInputError):
    """The model server refused the request as invalid (HTTP 400, 404, 413...):
    bad parameters, an unknown model, a body or a prompt that is too large."""


def require_str(value: Any, name: str) -> str:
    """``value`` when it is a ``str``; else :class:`InvalidTypeError` naming ``name``
    (the one check behind "must be a str" messages)."""
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def require_path(value: Any, name: str) -> "os.PathLike[str] | str":
    """``value`` when it is a ``str`` or ``os.PathLike``; else :class:`InvalidTypeError`."""
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidTypeError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    return value


__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "RemoteError",
    "ServerUnavailableError",
    "AdapterError",
    "AdapterNotFoundError",
    "ContextLengthError",
    "DatasetNotFoundError",
    "DeviceError",
    "InternalError",
    "InvalidInputError",
    "InvalidTypeError",
    "NumericalError",
    "LoglmError",
    "MissingDependencyError",
    "LogFileNotFoundError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotFittedError",
    "TokenizerError",
    "UnsupportedModelError",
    "require_path",
    "require_str",
]
