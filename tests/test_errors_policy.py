"""One error policy: everything loglm raises is a :class:`loglm.LoglmError` subclass.

Two checks. The walk calls each public function of the modules that follow the policy
with bad arguments and asserts the class of what comes back (``CALLS`` must name every
public function, or ``NO_BAD_CALL`` must say why it cannot be called badly). The scan
reads every ``python/loglm/*.py`` with ``ast`` and fails on a ``raise`` of a class that
is not loglm's; ``NOT_YET_CONVERTED`` lists the modules still being converted, and
shrinks to nothing as they are.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, List, Tuple, Type

import pytest

import loglm
from loglm import errors

PACKAGE = Path(loglm.__file__).resolve().parent
#: Allow-listed modules that other changes are adding (drop from here once they exist).
BEING_WRITTEN = {"inputs.py", "report.py"}

#: Modules whose every raise is already a loglm class (and whose public functions the walk calls).
POLICY_MODULES = ("metrics", "datasets", "evaluate", "embed", "answers", "prompts", "models", "train", "scale")

#: Modules still raising built-in exceptions: the scan skips them. Remove a name once
#: its module is converted; the scan then holds it to the policy.
NOT_YET_CONVERTED = {
    "collab.py", "parsing.py", "tasks.py", "cli.py", "model.py", "remote.py", "serve.py", "report.py",
    "inputs.py", "pytest_plugin.py",
}

#: Public callables that take no argument (or only build result objects loglm makes itself).
NO_BAD_CALL = {
    "metrics.BleuResult": "built by metrics.bleu from the Rust core's tuple",
    "metrics.RougeResult": "built by metrics.rouge from the Rust core's array",
    "embed.default_encoder_dir": "takes no argument",
    "models.adapters_dir": "takes no argument",
    "models.cache_dir": "takes no argument",
    "models.default_adapter_path": "takes no argument",
    "models.default_model_path": "takes no argument",
    "models.qwen25_coder_path": "takes only a cache folder, created when missing (the call joins 400 MB)",
    "evaluate.to_markdown": "formats the result dict evaluate() returns",
    "evaluate.write_results": "writes the result dict evaluate() returns",
    "answers.Verdict": "a record parse_verdict fills in",
    "train.Example": "a record the tokenizer step fills in",
    "train.FinetuneResult": "a record finetune fills in",
    "train.end_of_turn_id": "takes a loaded LogLM (checked by tests/test_train.py)",
    "train.build_example": "takes a loaded LogLM (checked by tests/test_train.py)",
}

Call = Tuple[str, Callable[[Path], Any], Type[BaseException]]


def _missing(tmp: Path) -> Path:
    return tmp / "does-not-exist"


def _calls() -> List[Call]:
    """(``module.function``, a bad call, the loglm class it must raise)."""
    from loglm import answers, datasets, embed, evaluate, metrics, models, prompts, scale, train

    bad_input, bad_type = errors.InvalidInputError, errors.InvalidTypeError
    no_data = errors.DatasetNotFoundError
    return [
        # metrics
        ("metrics.parsing_scores", lambda t: metrics.parsing_scores("a", "a", "a"), bad_type),
        ("metrics.parsing_scores", lambda t: metrics.parsing_scores(["a"], ["a", "b"], ["a"]), bad_input),
        ("metrics.rand_index", lambda t: metrics.rand_index([1, 2], [1]), bad_input),
        ("metrics.adjusted_rand_index", lambda t: metrics.adjusted_rand_index([1, 2], [1]), bad_input),
        ("metrics.variable_mask", lambda t: metrics.variable_mask(3, "x"), bad_type),  # type: ignore[arg-type]
        ("metrics.classification_scores", lambda t: metrics.classification_scores(["a"], ["a", "b"]), bad_input),
        ("metrics.classification_scores", lambda t: metrics.classification_scores([None], ["a"]), bad_input),
        ("metrics.session_scores", lambda t: metrics.session_scores([1], ["a", "b"], ["a"]), bad_input),
        ("metrics.session_labels", lambda t: metrics.session_labels([1, None], ["a", "b"]), bad_input),
        ("metrics.bleu", lambda t: metrics.bleu("a", ["a"]), bad_type),
        ("metrics.bleu", lambda t: metrics.bleu(["a"], ["a", "b"]), bad_input),
        ("metrics.sentence_bleu", lambda t: metrics.sentence_bleu(["a"], [None]), bad_input),
        ("metrics.rouge", lambda t: metrics.rouge(["a"], ["a"], types=[]), bad_input),
        ("metrics.llamafactory_scores", lambda t: metrics.llamafactory_scores(["a"], ["a", "b"]), bad_input),
        # datasets (an explicit root that does not exist: nothing is downloaded)
        ("datasets.data_root", lambda t: datasets.data_root(_missing(t)), no_data),
        ("datasets.dataset_file", lambda t: datasets.dataset_file("loglm/x.json", t), no_data),
        ("datasets.load_instructions", lambda t: datasets.load_instructions(_missing(t)), no_data),
        ("datasets.load_instructions", lambda t: datasets.load_instructions(capability="no such"), bad_input),
        ("datasets.load_irs_test", lambda t: datasets.load_irs_test("no such task"), bad_input),
        ("datasets.load_loghub", lambda t: datasets.load_loghub("NoSuchSystem"), bad_input),
        ("datasets.load_loghub", lambda t: datasets.load_loghub("HDFS", split="dev"), bad_input),
        ("datasets.load_parsing", lambda t: datasets.load_parsing("NoSuchSystem"), bad_input),
        ("datasets.loghub_systems", lambda t: datasets.loghub_systems(_missing(t)), no_data),
        ("datasets.load_logprompt", lambda t: datasets.load_logprompt("NoSuchSystem"), bad_input),
        ("datasets.load_anomaly", lambda t: datasets.load_anomaly("hdfs"), bad_input),
        ("datasets.load_anomaly", lambda t: datasets.load_anomaly("bgl", split="dev"), bad_input),
        ("datasets.load_hdfs_sessions", lambda t: datasets.load_hdfs_sessions(split="dev"), bad_input),
        ("datasets.load_hdfs_templates", lambda t: datasets.load_hdfs_templates(_missing(t)), no_data),
        ("datasets.load_hdfs_logs", lambda t: datasets.load_hdfs_logs(_missing(t)), no_data),
        ("datasets.build_instructions", lambda t: datasets.build_instructions(anomalies=[("x", "maybe")]), bad_input),
        # evaluate (checked before any model loads)
        ("evaluate.evaluate", lambda t: evaluate.evaluate("no such task"), bad_input),
        ("evaluate.evaluate_parsing", lambda t: evaluate.evaluate_parsing(None, systems=["NoSuchSystem"]), bad_input),
        ("evaluate.evaluate_anomaly", lambda t: evaluate.evaluate_anomaly(None, systems=["hdfs"]), bad_input),
        ("evaluate.evaluate_irs", lambda t: evaluate.evaluate_irs(None, tasks=["no such task"]), bad_input),
        # embed
        ("embed.SentenceEncoder", lambda t: embed.SentenceEncoder.load(_missing(t)), errors.ModelNotFoundError),
        # answers
        ("answers.extract_template", lambda t: answers.extract_template(None, "x"), bad_type),  # type: ignore[arg-type]
        ("answers.normalize_template", lambda t: answers.normalize_template(3), bad_type),  # type: ignore[arg-type]
        ("answers.parse_label", lambda t: answers.parse_label(3), bad_type),  # type: ignore[arg-type]
        ("answers.parse_verdict", lambda t: answers.parse_verdict(b"normal"), bad_type),  # type: ignore[arg-type]
        ("answers.clean_text", lambda t: answers.clean_text(b"x"), bad_type),  # type: ignore[arg-type]
        ("answers.verdict_schema", lambda t: answers.verdict_schema("300"), bad_type),  # type: ignore[arg-type]
        ("answers.verdict_schema", lambda t: answers.verdict_schema(0), bad_input),
        ("answers.trim_to_words", lambda t: answers.trim_to_words(3, 5), bad_type),  # type: ignore[arg-type]
        ("answers.trim_to_words", lambda t: answers.trim_to_words("a b.", 0), bad_input),
        # prompts
        ("prompts.alpaca_prompt", lambda t: prompts.alpaca_prompt(None), bad_type),  # type: ignore[arg-type]
        ("prompts.fence", lambda t: prompts.fence(3), bad_type),  # type: ignore[arg-type]
        ("prompts.parsing_chat", lambda t: prompts.parsing_chat(3), bad_type),  # type: ignore[arg-type]
        ("prompts.anomaly_prompt", lambda t: prompts.anomaly_prompt(None), bad_type),  # type: ignore[arg-type]
        ("prompts.explain_prompt", lambda t: prompts.explain_prompt("no such task", "x"), bad_input),
        ("prompts.ask_prompt", lambda t: prompts.ask_prompt("x", "one string, not a list"), bad_type),
        ("prompts.with_examples", lambda t: prompts.with_examples("x", [("user turn", 3)]), bad_type),  # type: ignore[list-item]
        ("prompts.default_instruction", lambda t: prompts.default_instruction("summary"), bad_input),
        # models
        ("models.resolve", lambda t: models.resolve(_missing(t) / "m.gguf"), errors.ModelNotFoundError),
        ("models.resolve", lambda t: models.resolve("no-such-model-name"), errors.ModelNotFoundError),
        ("models.resolve_adapters", lambda t: models.resolve_adapters(3), bad_input),
        ("models.adapter_sha256", lambda t: models.adapter_sha256(3), bad_type),  # type: ignore[arg-type]
        ("models.sha256_file", lambda t: models.sha256_file(_missing(t)), errors.ModelNotFoundError),
        ("models.sha256_file", lambda t: models.sha256_file(t), errors.ModelNotFoundError),  # a folder
        # train (no torch needed: everything is checked before it loads)
        ("train.load_records", lambda t: train.load_records(_missing(t) / "d.json"), no_data),
        ("train.load_records", lambda t: train.load_records([{"instruction": 1}]), bad_input),
        ("train.split_heldout", lambda t: train.split_heldout(10, 1.0), bad_input),
        ("train.FinetuneSettings", lambda t: train.FinetuneSettings(lr=-1), bad_input),
        ("train.finetune", lambda t: train.finetune(_missing(t), [], t / "out"), bad_input),
        ("train.finetune", lambda t: train.finetune(_missing(t), _missing(t) / "d.json", t / "out"), no_data),
        # scale (arguments are checked before Ray starts)
        ("scale.ModelPool", lambda t: scale.ModelPool(model=3), bad_type),  # type: ignore[arg-type]
        ("scale.parse_dataset", lambda t: scale.parse_dataset(None, workers=0), bad_input),
        ("scale.detect_anomalies_dataset", lambda t: scale.detect_anomalies_dataset(None, threads=0), bad_input),
    ]


def _public(module: str) -> List[str]:
    mod = importlib.import_module(f"loglm.{module}")
    names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
    return [f"{module}.{n}" for n in names
            if (inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n)))
            and getattr(getattr(mod, n), "__module__", "") == mod.__name__
            and not issubclass_safe(getattr(mod, n), BaseException)]


def issubclass_safe(obj: Any, cls: type) -> bool:
    return inspect.isclass(obj) and issubclass(obj, cls)


def test_every_public_function_is_walked() -> None:
    walked = {name for name, _, _ in _calls()}
    missing = [n for m in POLICY_MODULES for n in _public(m) if n not in walked and n not in NO_BAD_CALL]
    assert missing == [], f"add a bad call for these to CALLS (or a reason to NO_BAD_CALL): {missing}"
    stale = [n for n in NO_BAD_CALL if n in walked]
    assert stale == []


@pytest.mark.parametrize("name,call,expected", _calls(), ids=[f"{c[0]}-{i}" for i, c in enumerate(_calls())])
def test_bad_arguments_raise_a_loglm_error(name: str, call: Callable[[Path], Any], expected: Type[BaseException],
                                          tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLM_DATA_DIR", str(data_dir))  # the datasets in place: nothing is downloaded
    with pytest.raises(loglm.LoglmError) as info:
        call(tmp_path)
    assert isinstance(info.value, expected), f"{name} raised {type(info.value).__name__}: {info.value}"


def test_the_standard_kinds_still_match() -> None:
    """Callers that catch the built-in kinds keep working."""
    assert issubclass(errors.InvalidTypeError, TypeError) and issubclass(errors.InvalidTypeError, ValueError)
    assert issubclass(errors.DatasetNotFoundError, FileNotFoundError)
    assert issubclass(errors.MissingDependencyError, ImportError)
    from loglm import datasets

    assert datasets.DatasetNotFoundError is errors.DatasetNotFoundError


# ---------------------------------------------------------------- the static scan

#: Names a ``raise`` may use: loglm's classes, and re-raising what was caught.
LOGLM_CLASSES = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, errors.LoglmError)}
BUILTIN_EXCEPTIONS = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
#: Built-ins that are signals, not errors: a generator's end, Ctrl-C passed on.
ALLOWED_BUILTINS = {"StopIteration", "StopAsyncIteration", "KeyboardInterrupt", "SystemExit", "NotImplementedError"}


def _raised_name(node: ast.Raise) -> str:
    """The class name a ``raise`` names: ``X`` of ``raise X(...)``, ``raise X`` or
    ``raise mod.X(...)``; ``""`` for a bare ``raise``."""
    exc = node.exc
    if exc is None:
        return ""
    if isinstance(exc, ast.Call):
        exc = exc.func
    if isinstance(exc, ast.Attribute):
        return exc.attr
    if isinstance(exc, ast.Name):
        return exc.id
    return "<expression>"


def _offences(path: Path) -> List[str]:
    """``file:line: raise Name`` for each raise of a class that is not loglm's. A raised
    local variable (``raise e``, the caught exception) passes when it is lower case."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise):
            continue
        name = _raised_name(node)
        if name == "" or name in LOGLM_CLASSES or name in ALLOWED_BUILTINS:
            continue
        if name[:1].islower() and name not in BUILTIN_EXCEPTIONS:  # `raise err` of a caught exception
            continue
        out.append(f"{path.name}:{node.lineno}: raise {name}")
    return out


def test_no_module_raises_a_builtin_exception() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files, PACKAGE
    offences = [o for f in files if f.name not in NOT_YET_CONVERTED for o in _offences(f)]
    assert offences == [], "raise a loglm.errors class instead:\n" + "\n".join(offences)


def test_the_scan_sees_a_builtin_raise(tmp_path: Path) -> None:
    """The scan itself: it flags built-in and foreign classes, passes loglm's and re-raises."""
    f = tmp_path / "m.py"
    f.write_text("import x\n"
                 "def a():\n    raise ValueError('no')\n"
                 "def b():\n    raise x.SomeError\n"
                 "def c():\n    raise InvalidInputError('ok')\n"
                 "def d():\n    try:\n        pass\n    except OSError as err:\n        raise err\n    raise\n"
                 "def e():\n    raise errors.DatasetNotFoundError('ok') from None\n")
    assert _offences(f) == ["m.py:3: raise ValueError", "m.py:5: raise SomeError"]


def test_the_allow_list_names_real_files() -> None:
    """A file in the allow-list that no longer exists (renamed, merged) is a stale entry."""
    present = {f.name for f in PACKAGE.glob("*.py")}
    stale = sorted(NOT_YET_CONVERTED - present - BEING_WRITTEN)
    assert stale == []
