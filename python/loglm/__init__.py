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
    DatasetNotFoundError,
    DeviceError,
    InternalError,
    InvalidInputError,
    InvalidTypeError,
    LoglmError,
    MissingDependencyError,
    LogFileNotFoundError,
    ModelLoadError,
    ModelNotFoundError,
    NotFittedError,
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
from loglm.parsing import (ExtractedParameter, LogCluster, MaskingInstruction, TemplateMiner, TemplateMinerConfig,
                           template_id, template_matches)
from loglm.inputs import LogLines, read_log_lines
from loglm.tasks import Answer

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
    "LogLines",
    "answers",
    "datasets",
    "evaluate",
    "prompts",
    "BatchStats",
    "ChoiceScores",
    "ContextLengthError",
    "DatasetNotFoundError",
    "ExtractedParameter",
    "LogCluster",
    "TemplateMiner",
    "TemplateMinerConfig",
    "MaskingInstruction",
    "template_id",
    "template_matches",
    "DeviceError",
    "GenerationResult",
    "InternalError",
    "InvalidInputError",
    "InvalidTypeError",
    "LogLM",
    "LoglmError",
    "MissingDependencyError",
    "LogFileNotFoundError",
    "ModelLoadError",
    "ModelNotFoundError",
    "NotFittedError",
    "NumericalError",
    "TextStream",
    "TokenizerError",
    "UnsupportedModelError",
    "__version__",
    "build_info",
]
