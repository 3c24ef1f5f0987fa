"""loglm: instruction-based log analysis with one local language model.

>>> import loglm
>>> model = loglm.LogLM.load()          # the embedded default model
>>> model.generate("What does this log line mean? ...").text
"""
from __future__ import annotations

from loglm._loglm import __version__, build_info
from loglm.errors import (
    AuthenticationError,
    BadRequestError,
    AdapterError,
    AdapterNotFoundError,
    ContextLengthError,
    DeviceError,
    InternalError,
    InvalidInputError,
    InvalidTypeError,
    LoglmError,
    ModelLoadError,
    ModelNotFoundError,
    NumericalError,
    RemoteError,
    ServerUnavailableError,
    TokenizerError,
    UnsupportedModelError,
)
from loglm import metrics
from loglm.collab import CollaborativeDetector
from loglm.embed import SentenceEncoder
from loglm.model import BatchStats, ChoiceScores, GenerationResult, LogLM, TextStream
from loglm.parsing import ExtractedParameter, LogCluster, TemplateMiner, template_id, template_matches
from loglm.tasks import Answer, read_log_lines

from loglm import answers, datasets, evaluate, prompts  # noqa: E402  (submodules of the public API)

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "RemoteError",
    "ServerUnavailableError",
    "AdapterError",
    "AdapterNotFoundError",
    "CollaborativeDetector",
    "SentenceEncoder",
    "metrics",
    "Answer",
    "read_log_lines",
    "answers",
    "datasets",
    "evaluate",
    "prompts",
    "BatchStats",
    "ChoiceScores",
    "ContextLengthError",
    "ExtractedParameter",
    "LogCluster",
    "TemplateMiner",
    "template_id",
    "template_matches",
    "DeviceError",
    "GenerationResult",
    "InternalError",
    "InvalidInputError",
    "InvalidTypeError",
    "LogLM",
    "LoglmError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NumericalError",
    "TextStream",
    "TokenizerError",
    "UnsupportedModelError",
    "__version__",
    "build_info",
]
