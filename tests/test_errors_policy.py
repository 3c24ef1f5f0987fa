"""One error policy: everything loglm raises is a :class:`loglm.LoglmError` subclass.

Two checks. The walk calls each public function of the package's modules with bad
arguments and asserts the class of what comes back (``CALLS`` must name every public
function, or ``NO_BAD_CALL`` must say why it cannot be called badly). The scan reads every
``python/loglm/*.py`` with ``ast`` and fails on a ``raise`` of a class that is not loglm's
(a module's own class deriving from one, or a helper annotated to return one, counts as
loglm's); ``EXEMPT`` names the few raises that are another library's protocol, each with
its reason.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, List, Set, Tuple, Type

import pytest

import loglm
from loglm import errors

PACKAGE = Path(loglm.__file__).resolve().parent

#: Modules whose public functions the walk calls (the scan reads every module).
POLICY_MODULES = ("metrics", "datasets", "evaluate", "embed", "answers", "prompts", "models", "train", "scale",
                  "collab", "parsing", "tasks", "cli", "model", "remote", "serve", "report", "inputs",
                  "pytest_plugin", "retrieval", "errors", "anomaly")
#: Public modules the walk leaves out, each with why.
NOT_WALKED = {
    "protocols": "typing.Protocol classes and type aliases: nothing to call",
    "progress": "progress_bar is the package's own helper, called with loglm's arguments",
}

#: Raises of foreign classes the scan lets pass, by (file, class name), each with why.
EXEMPT = {
    ("pytest_plugin.py", "UsageError"): "pytest's own error for a bad command-line option or ini value: pytest "
                                        "prints it and exits with status 4, as for its own options",
    ("pytest_plugin.py", "AssertionError"): "a quality gate that fails is a failing test: pytest reports an "
                                            "AssertionError as a test failure, not as an error in the test",
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
    "parsing.ExtractedParameter": "a record TemplateMiner.extract_parameters fills in",
    "parsing.LogCluster": "a record TemplateMiner fills in from its template tree",
    "parsing.canonical_template": "takes any value as its str() (a template read from a file or a model answer)",
    "tasks.Answer": "a str with the facts of the answer the text helpers fill in",
    "cli.build_parser": "takes no argument",
    "cli.main": "answers a bad command line with exit status 2 (tests/test_cli.py), not an exception",
    "model.GenerationResult": "a record the engine fills in",
    "model.BatchStats": "a record the engine fills in",
    "model.ChoiceScores": "a record score_choices fills in",
    "model.TextStream": "wraps the engine's stream; made by LogLM.stream",
    "model.default_model": "takes no argument (and loads the default model)",
    "remote.RemoteTextStream": "wraps an HTTP response; made by RemoteLogLM.stream",
    "report.Claim": "a record parse_claims fills in",
    "report.Report": "the result build_report fills in",
    "inputs.LogLines": "a list of lines read_log_lines / as_log_lines fill in",
    "inputs.is_binary": "a predicate: any bytes are an answer, not an error",
    "inputs.parse_datetimes": "text it cannot read becomes NaT, not an error (tests/test_inputs.py)",
    "inputs.add_input_columns": "joins the LogLines that as_log_lines made to the DataFrame that parse made",
    "pytest_plugin.LoglmData": "built by the loglm_data fixture; missing data fails the test (tests/test_pytest_plugin.py)",
    "retrieval.Example": "a record ExampleBank fills in",
    "prompts.is_chat": "a predicate: any value is an answer, not an error",
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
        ("evaluate.score_irs", lambda t: evaluate.score_irs(None, None, "no such task"), bad_input),
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
        ("prompts.prompt_messages", lambda t: prompts.prompt_messages(3, None), bad_input),  # type: ignore[arg-type]
        ("prompts.check_text", lambda t: prompts.check_text(b"\xff", "the prompt"), bad_input),
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
        *_calls_of_the_facade(),
    ]


def _calls_of_the_facade() -> List[Call]:
    """The log-analysis facade: checked before any model loads or any server starts."""
    import pandas as pd

    from loglm import anomaly, collab, inputs, model, parsing, pytest_plugin, remote, report, retrieval, serve, tasks

    bad_input, bad_type = errors.InvalidInputError, errors.InvalidTypeError
    no_model = errors.ModelNotFoundError
    return [
        # collab
        ("collab.CollaborativeDetector", lambda t: collab.CollaborativeDetector().predict([["a"]]), errors.NotFittedError),
        ("collab.knn_vote", lambda t: collab.knn_vote([[1.0]], [0, 1], [[1.0]]), bad_input),
        ("collab.max_similarity", lambda t: collab.max_similarity([1.0], [[1.0]]), bad_input),
        ("collab.mask_line", lambda t: collab.mask_line(3), bad_type),  # type: ignore[arg-type]
        ("collab.session_embeddings", lambda t: collab.session_embeddings(None, [[]]), bad_input),  # type: ignore[arg-type]
        ("collab.sessions_by_block", lambda t: collab.sessions_by_block("blk_1 one line"), bad_type),
        ("collab.sessions_by_key", lambda t: collab.sessions_by_key(["a"], [1, 2]), bad_input),
        ("collab.sessions_by_time", lambda t: collab.sessions_by_time(["a", "b"], ["no time", "none"]), bad_input),
        ("collab.sessions_by_window", lambda t: collab.sessions_by_window(["a"], size=0), bad_input),
        ("collab.normalize_labels", lambda t: collab.normalize_labels(["maybe"]), bad_input),
        ("collab.CollaborativeDetector", lambda t: collab.CollaborativeDetector.load(_missing(t)), no_model),
        # parsing
        ("parsing.TemplateMiner", lambda t: parsing.TemplateMiner.load(_missing(t) / "s.json"), no_model),
        ("parsing.templates_table", lambda t: parsing.templates_table([("E1", "a <*>")]), bad_type),
        ("parsing.templates_table", lambda t: parsing.templates_table(pd.DataFrame({"Content": ["a"]})), bad_input),
        ("parsing.template_id", lambda t: parsing.template_id(3), bad_type),  # type: ignore[arg-type]
        ("parsing.template_matches", lambda t: parsing.template_matches("a <*>", None), bad_type),  # type: ignore[arg-type]
        ("parsing.ExampleRetriever", lambda t: parsing.ExampleRetriever([]), bad_input),
        # tasks (the mixin's own checks run before it asks the model anything)
        ("tasks.TaskMixin", lambda t: tasks.TaskMixin().fit_text("x", 0), bad_input),
        # model
        ("model.LogLM", lambda t: model.LogLM.load(_missing(t) / "m.gguf"), no_model),
        # remote (no server is contacted)
        ("remote.RemoteLogLM", lambda t: remote.RemoteLogLM("ftp://127.0.0.1"), bad_input),
        ("remote.approximate_choice_logprobs", lambda t: remote.approximate_choice_logprobs([], "ab"), bad_type),
        # serve (no model loads, no port opens)
        ("serve.LoglmServer", lambda t: serve.LoglmServer(None, max_request_bytes=0), bad_input),
        ("serve.serve", lambda t: serve.serve(_missing(t) / "m.gguf"), no_model),
        # report
        ("report.build_report", lambda t: report.build_report(_missing(t) / "x.log"), errors.LogFileNotFoundError),
        ("report.build_report", lambda t: report.build_report(["a"], on_fail="explode"), bad_input),
        ("report.detect_timestamps", lambda t: report.detect_timestamps("one line"), bad_type),
        ("report.parse_claims", lambda t: report.parse_claims("x", max_claims=-1), bad_input),
        ("report.claim_facts", lambda t: report.claim_facts(3), bad_type),  # type: ignore[arg-type]
        ("report.check_claim", lambda t: report.check_claim("x", ["a"]), bad_type),  # type: ignore[arg-type]
        ("report.ablation_attribution", lambda t: report.ablation_attribution(["a"], 3), bad_type),  # type: ignore[arg-type]
        # inputs
        ("inputs.read_log_lines", lambda t: inputs.read_log_lines(_missing(t) / "x.log"), errors.LogFileNotFoundError),
        ("inputs.as_log_lines", lambda t: inputs.as_log_lines([3]), bad_input),  # type: ignore[list-item]
        ("inputs.split_header", lambda t: inputs.split_header(b"2024-01-01 INFO x"), bad_type),  # type: ignore[arg-type]
        # pytest_plugin
        ("pytest_plugin.baseline_path", lambda t: pytest_plugin.baseline_path(3), bad_type),
        ("pytest_plugin.load_labelled", lambda t: pytest_plugin.load_labelled(_missing(t) / "x.csv"),
         errors.DatasetNotFoundError),
        ("pytest_plugin.record_metric", lambda t: pytest_plugin.record_metric("", 1.0), bad_input),
        ("pytest_plugin.assert_parsing", lambda t: pytest_plugin.assert_parsing(pd.DataFrame(), pd.DataFrame()), bad_input),
        ("pytest_plugin.assert_flags", lambda t: pytest_plugin.assert_flags(None, ["x"], threshold=2.0), bad_input),
        ("pytest_plugin.assert_text_scores", lambda t: pytest_plugin.assert_text_scores(["a"], ["a", "b"]), bad_input),
        # retrieval (nothing is embedded before the records are checked)
        ("retrieval.ExampleBank", lambda t: retrieval.ExampleBank([]), bad_input),
        ("retrieval.ExampleBank", lambda t: retrieval.ExampleBank([{"input": "x"}]), bad_input),
        # anomaly (no encoder is loaded)
        ("anomaly.logit", lambda t: anomaly.logit("x"), bad_input),
        ("anomaly.combine", lambda t: anomaly.combine([0.5], [0.1, 0.2]), bad_input),
        ("anomaly.best_f1_threshold", lambda t: anomaly.best_f1_threshold([1, 1], [0.2, 0.3]), bad_input),
        ("anomaly.severity_hits", lambda t: anomaly.severity_hits("one log"), bad_input),
        ("anomaly.severity_evidence", lambda t: anomaly.severity_evidence("one log"), bad_input),
        ("anomaly.fit_severity", lambda t: anomaly.fit_severity(["a"], [0, 1]), bad_input),
        ("anomaly.NeighbourEvidence", lambda t: anomaly.NeighbourEvidence([[1.0]], [0, 1]), bad_input),
        ("anomaly.AnomalyEvidence", lambda t: anomaly.AnomalyEvidence(neighbours=object()), bad_input),  # type: ignore[arg-type]
        # errors
        ("errors.require_str", lambda t: errors.require_str(b"x", "text"), bad_type),
        ("errors.require_path", lambda t: errors.require_path(3, "path"), bad_type),
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


def test_every_public_module_is_walked() -> None:
    """A new module joins the walk (or says why not here)."""
    public = sorted(f.stem for f in PACKAGE.glob("*.py") if not f.stem.startswith("_"))
    missing = [m for m in public if m not in POLICY_MODULES and m not in NOT_WALKED]
    assert missing == [], f"add these to POLICY_MODULES (or a reason to NOT_WALKED): {missing}"
    assert not set(POLICY_MODULES) & set(NOT_WALKED)


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


def _last_name(node: ast.expr) -> str:
    """``X`` of ``X``, ``mod.X`` or the string annotation ``"X"`` / ``"mod.X"``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit(".", 1)[-1]
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _loglm_names(tree: ast.AST) -> Set[str]:
    """loglm's classes, the module's own classes deriving from one of them, and the module's
    helpers annotated to return one (``def _bad(...) -> _HTTPError``)."""
    names = set(LOGLM_CLASSES)
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    helpers = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    grew = True
    while grew:
        grew = False
        for c in classes:
            if c.name not in names and any(_last_name(b) in names for b in c.bases):
                names.add(c.name)
                grew = True
        for f in helpers:
            if f.name not in names and f.returns is not None and _last_name(f.returns) in names:
                names.add(f.name)
                grew = True
    return names


def _offences(path: Path) -> List[str]:
    """``file:line: raise Name`` for each raise of a class that is not loglm's. A raised
    local variable (``raise e``, the caught exception) passes when it is lower case."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    ours = _loglm_names(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise):
            continue
        name = _raised_name(node)
        if name == "" or name in ours or name in ALLOWED_BUILTINS:
            continue
        if name[:1].islower() and name not in BUILTIN_EXCEPTIONS:  # `raise err` of a caught exception
            continue
        out.append(f"{path.name}:{node.lineno}: raise {name}")
    return out


def _exempt(offence: str) -> bool:
    file, rest = offence.split(":", 1)
    return (file, rest.rsplit(" ", 1)[-1]) in EXEMPT


def test_no_module_raises_a_builtin_exception() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files, PACKAGE
    offences = [o for f in files for o in _offences(f) if not _exempt(o)]
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


def test_the_scan_follows_local_classes_and_helpers(tmp_path: Path) -> None:
    """A module's own class counts as loglm's only when it derives from one, and a helper
    only when its return annotation names one."""
    f = tmp_path / "m.py"
    f.write_text("from loglm.errors import InvalidInputError, LoglmError\n"
                 "class _Bad(InvalidInputError):\n    pass\n"
                 "class _Worse(_Bad):\n    pass\n"
                 "class _Plain(Exception):\n    pass\n"
                 "def _bad(m: str) -> '_Worse':\n    return _Worse(m)\n"
                 "def _vague(m: str) -> Exception:\n    return ValueError(m)\n"
                 "def a():\n    raise _Bad('x')\n"
                 "def b():\n    raise _bad('x')\n"
                 "def c():\n    raise _Plain('x')\n"
                 "def d():\n    raise _vague('x')\n")
    assert sorted(_offences(f)) == ["m.py:17: raise _Plain", "m.py:19: raise _vague"]


def test_every_exemption_is_still_needed() -> None:
    """An exemption whose raise is gone (converted, renamed) is a stale entry."""
    used = {(o.split(":", 1)[0], o.rsplit(" ", 1)[-1]) for f in sorted(PACKAGE.glob("*.py")) for o in _offences(f)}
    stale = sorted(set(EXEMPT) - used)
    assert stale == []
