"""pytest plugin: quality gates on log analysis as ordinary tests.

Registered through the ``pytest11`` entry point ``loglm.pytest_plugin``, so it is active in every
pytest run once loglm is installed (``-p no:loglm.pytest_plugin`` turns it off; ``-p
loglm.pytest_plugin`` loads it from a source checkout). Unused, it costs nothing and
changes nothing: no model is loaded, no file is read and no output is added until a test
asks for one of its fixtures or calls one of its assertion helpers.

Fixtures:

* ``loglm_model`` (session): the model under test, loaded once on first use from
  ``--loglm-model`` / ``--loglm-adapter`` (repeatable, ``none`` for the base model alone)
  / ``--loglm-threads``, else the ini options ``loglm_model`` / ``loglm_adapter`` /
  ``loglm_threads``, else the environment variables ``LOGLM_MODEL`` / ``LOGLM_ADAPTER``
  (paths separated by ``os.pathsep``) / ``LOGLM_NUM_THREADS``; the default model and its
  shipped adapter otherwise;
* ``loglm_remote`` (session): a model behind an OpenAI-compatible server
  (``--loglm-remote URL``, ini ``loglm_remote``, ``LOGLM_REMOTE``); skipped with the
  reason when no URL is configured;
* ``loglm_data``: :class:`LoglmData`, labelled logs of your own (CSV / JSONL of lines or
  sessions, a loghub-layout folder) resolved next to the test file, and the paper's test
  splits when ``LOGLM_DATA_DIR`` is set (skipped with the reason otherwise).

Assertion helpers (plain functions; under pytest they also record what they measure):
:func:`assert_parsing`, :func:`assert_flags`, :func:`assert_text_scores` and
:func:`record_metric` for a figure of your own. Every recorded metric appears in a table
at the end of the run and as a JUnit XML property ``loglm.<name>.<metric>``
(``--junitxml``). ``--loglm-save-baseline`` stores the metrics of the passing tests as
``<test file>.loglm-baseline.json`` next to each test file; later runs fail a test whose
metric dropped by more than the tolerance (``--loglm-tolerance``, ini
``loglm_tolerance``, ``LOGLM_BASELINE_TOLERANCE``; default 0.01 of the metric's range,
i.e. 0.01 for scores in [0, 1] and one point for BLEU / ROUGE on 0-100).

The metrics are those of :mod:`loglm.metrics` (loghub-2.0 GA / PA / FGA / FTA,
scikit-learn precision / recall / F1, sacrebleu BLEU, rouge-score ROUGE-L); the plugin
only gathers, compares and reports them. Under pytest-xdist the metrics reach the JUnit XML
properties but not the table (they are recorded on the workers), and no baseline is written.

PYTEST_DONT_REWRITE (the helpers raise their own messages; this also keeps pytest from
warning when a test session imports this module a second time, e.g. under ``pytester``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from loglm.errors import InvalidInputError, require_path

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BASELINE_SUFFIX", "DEFAULT_TOLERANCE", "LoglmData", "assert_flags", "assert_parsing",
    "assert_text_scores", "baseline_path", "load_labelled", "record_metric",
]

#: Suffix of the baseline file written next to a test file (``test_x.py`` ->
#: ``test_x.loglm-baseline.json``).
BASELINE_SUFFIX = ".loglm-baseline.json"
#: Allowed drop of a metric against its baseline, as a fraction of the metric's range.
DEFAULT_TOLERANCE = 0.01
_FORMAT = "loglm-baseline/1"
_ENV = {"model": "LOGLM_MODEL", "adapter": "LOGLM_ADAPTER", "remote": "LOGLM_REMOTE",
        "tolerance": "LOGLM_BASELINE_TOLERANCE"}


# ----------------------------------------------------------------------------- options

def pytest_addoption(parser: pytest.Parser) -> None:
    """Command-line and ini options of the plugin (group ``loglm``)."""
    g = parser.getgroup("loglm", "loglm quality gates (loglm.pytest_plugin)")
    g.addoption("--loglm-model", default=None, metavar="PATH|NAME",
                help="model of the loglm_model fixture: a GGUF file, a Hugging Face folder or a name "
                     "such as smollm2-135m (default: ini loglm_model, $LOGLM_MODEL, else the default model)")
    g.addoption("--loglm-adapter", action="append", default=None, metavar="PATH|none",
                help="LoRA adapter folder merged into loglm_model (repeat to merge several, in order); "
                     "'none' for the base model alone (default: ini loglm_adapter, $LOGLM_ADAPTER, "
                     "else the default model's shipped adapter)")
    g.addoption("--loglm-threads", type=int, default=None, metavar="N",
                help="CPU threads of loglm_model (default: ini loglm_threads, else $LOGLM_NUM_THREADS "
                     "or all cores, as LogLM.load reads them)")
    g.addoption("--loglm-remote", default=None, metavar="URL",
                help="OpenAI-compatible server of the loglm_remote fixture (default: ini loglm_remote, "
                     "$LOGLM_REMOTE; without one, tests using it are skipped)")
    g.addoption("--loglm-save-baseline", action="store_true", default=False,
                help="store the metrics of the passing tests as <test file>.loglm-baseline.json next to "
                     "each test file instead of comparing against it")
    g.addoption("--loglm-tolerance", type=float, default=None, metavar="FRACTION",
                help="allowed drop of a metric against its baseline, as a fraction of its range "
                     f"(default: ini loglm_tolerance, $LOGLM_BASELINE_TOLERANCE, else {DEFAULT_TOLERANCE})")
    parser.addini("loglm_model", "model of the loglm_model fixture (path or name)", default="")
    parser.addini("loglm_adapter", "LoRA adapter folders of loglm_model, one per line ('none': base model)",
                  type="linelist", default=[])
    parser.addini("loglm_threads", "CPU threads of loglm_model", default="")
    parser.addini("loglm_remote", "OpenAI-compatible server URL of the loglm_remote fixture", default="")
    parser.addini("loglm_tolerance", "allowed drop of a metric against its baseline (fraction of its range)",
                  default="")


class _Settings:
    """The plugin's configuration, from the command line, the ini file or the environment.

    Values given on the command line or in the ini file are checked at start-up (a bad one
    is a ``pytest.UsageError``); environment variables only when a fixture needs them, so
    that a stray variable never disturbs a run that does not use the plugin."""

    def __init__(self, config: pytest.Config) -> None:
        self._errors: Dict[str, str] = {}
        opt = config.option
        self.save_baseline = bool(getattr(opt, "loglm_save_baseline", False))

        model, src = _first((getattr(opt, "loglm_model", None), "--loglm-model"),
                            (config.getini("loglm_model"), "ini loglm_model"),
                            (os.environ.get(_ENV["model"]), _ENV["model"]))
        self.model: Optional[str] = model
        self.model_source = src

        given = getattr(opt, "loglm_adapter", None)
        if given:
            items, self.adapter_source = list(given), "--loglm-adapter"
        elif config.getini("loglm_adapter"):
            items, self.adapter_source = list(config.getini("loglm_adapter")), "ini loglm_adapter"
        elif os.environ.get(_ENV["adapter"], "").strip():
            items = [x for x in os.environ[_ENV["adapter"]].split(os.pathsep) if x.strip()]
            self.adapter_source = _ENV["adapter"]
        else:
            items, self.adapter_source = [], ""
        self.adapter: Any = "auto"
        if items:
            self._set("adapter", self.adapter_source, lambda: _parse_adapter(items, self.adapter_source))

        self.threads: Optional[int] = None
        t = getattr(opt, "loglm_threads", None)
        if t is not None:
            self._set("threads", "--loglm-threads", lambda: _parse_threads(str(t), "--loglm-threads"))
        elif config.getini("loglm_threads").strip():
            self._set("threads", "ini loglm_threads",
                      lambda: _parse_threads(config.getini("loglm_threads"), "ini loglm_threads"))

        url, self.remote_source = _first((getattr(opt, "loglm_remote", None), "--loglm-remote"),
                                         (config.getini("loglm_remote"), "ini loglm_remote"),
                                         (os.environ.get(_ENV["remote"]), _ENV["remote"]))
        self.remote: Optional[str] = None
        if url is not None:
            self._set("remote", self.remote_source, lambda: _parse_url(url, self.remote_source))

        tol, tsrc = _first((None if getattr(opt, "loglm_tolerance", None) is None else str(opt.loglm_tolerance),
                            "--loglm-tolerance"),
                           (config.getini("loglm_tolerance"), "ini loglm_tolerance"),
                           (os.environ.get(_ENV["tolerance"]), _ENV["tolerance"]))
        self.tolerance = DEFAULT_TOLERANCE
        if tol is not None:
            self._set("tolerance", tsrc, lambda: _parse_tolerance(tol, tsrc))

    def _set(self, name: str, source: str, parse: Any) -> None:
        try:
            setattr(self, name, parse())
        except ValueError as e:
            if source.startswith("LOGLM_"):
                self._errors[name] = str(e)
            else:
                raise pytest.UsageError(str(e)) from None

    def get(self, name: str) -> Any:
        """A setting, failing the current test cleanly when its environment variable is invalid."""
        __tracebackhide__ = True
        if name in self._errors:
            pytest.fail(self._errors[name], pytrace=False)
        return getattr(self, name)


def _first(*pairs: Tuple[Optional[str], str]) -> Tuple[Optional[str], str]:
    for value, source in pairs:
        if value is not None and str(value).strip():
            return str(value).strip(), source
    return None, ""


def _parse_adapter(items: List[str], source: str) -> Any:
    items = [str(x).strip() for x in items if str(x).strip()]
    nones = [x for x in items if x.lower() == "none"]
    if nones and len(nones) != len(items):
        raise InvalidInputError(f"{source}: 'none' (the base model alone) cannot be combined with adapter paths {items}")
    return None if nones else items


def _parse_threads(text: str, source: str) -> int:
    try:
        n = int(str(text).strip())
    except ValueError:
        raise InvalidInputError(f"{source}: expected a number of threads, got {text!r}") from None
    if n < 1:
        raise InvalidInputError(f"{source}: the number of threads must be at least 1, got {n}")
    return n


def _parse_url(text: str, source: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InvalidInputError(f"{source}: expected an http:// or https:// URL of an OpenAI-compatible server, got {text!r}")
    return text


def _parse_tolerance(text: str, source: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise InvalidInputError(f"{source}: expected a number such as 0.01, got {text!r}") from None
    if not math.isfinite(t) or t < 0 or t > 1:
        raise InvalidInputError(f"{source}: the tolerance is a fraction of the metric's range in [0, 1], got {text!r}")
    return t


# ----------------------------------------------------------------------------- session state

class _Metric:
    __slots__ = ("nodeid", "name", "value", "minimum", "scale", "baseline", "ok")

    def __init__(self, nodeid: str, name: str, value: float, minimum: Optional[float], scale: float) -> None:
        self.nodeid, self.name, self.value, self.minimum, self.scale = nodeid, name, value, minimum, scale
        self.baseline: Optional[float] = None
        self.ok = True


class _State:
    """What the plugin keeps for one pytest session (one per ``pytest.Config``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = _Settings(config)
        self.item: Optional[pytest.Item] = None
        self.metrics: List[_Metric] = []
        self.keys: set = set()
        self.passed: set = set()
        self.baselines: Dict[Path, Dict[str, Dict[str, float]]] = {}
        self.written: List[Tuple[Path, int, int]] = []
        self.not_saved: List[str] = []
        self.write_errors: List[str] = []
        self.model_desc: Optional[str] = None
        self.xdist_worker = hasattr(config, "workerinput")


_STATE = pytest.StashKey[_State]()
#: The sessions in progress, innermost last (a test may run pytest in-process, as pytester does).
_ACTIVE: List[_State] = []


def _state(config: pytest.Config) -> _State:
    return config.stash[_STATE]


def pytest_configure(config: pytest.Config) -> None:
    """Check the options (a bad value is a usage error) and start recording."""
    st = _State(config)
    config.stash[_STATE] = st
    _ACTIVE.append(st)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop recording for this session."""
    st = config.stash.get(_STATE, None)
    if st is not None and st in _ACTIVE:
        _ACTIVE.remove(st)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Remember the running test, for the assertion helpers."""
    item.config.stash[_STATE].item = item


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: Optional[pytest.Item]) -> None:
    """Forget the test that just ran."""
    item.config.stash[_STATE].item = None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note the tests that passed (only their metrics go into a saved baseline)."""
    # the innermost session is the one running tests (an outer one waits in its own test)
    if report.when == "call" and report.passed and _ACTIVE and _ACTIVE[-1].settings.save_baseline:
        _ACTIVE[-1].passed.add(report.nodeid)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def loglm_model(pytestconfig: pytest.Config) -> Any:
    """The :class:`loglm.LogLM` under test, loaded once per session on first use from
    ``--loglm-model`` / ``--loglm-adapter`` / ``--loglm-threads`` (or their ini options and
    environment variables). A missing default model skips the test with the reason; a
    model or adapter that was named but cannot be loaded fails it with the loader's message."""
    __tracebackhide__ = True
    st = _state(pytestconfig)
    s = st.settings
    adapter, threads = s.get("adapter"), s.get("threads")
    from loglm.errors import LoglmError, ModelNotFoundError
    from loglm.model import LogLM

    # (skip / fail outside the except blocks, so that no exception chain is printed)
    skip = fail = None
    try:
        model = LogLM.load(s.model, adapter=adapter, threads=threads)
    except ModelNotFoundError as e:
        if s.model is None:
            skip = f"loglm_model: the default model is not installed ({' '.join(str(e).split())})"
        else:
            fail = f"loglm_model ({s.model_source}={s.model}): {e}"
    except (LoglmError, OSError, ValueError) as e:
        where = ", ".join(x for x in (f"{s.model_source}={s.model}" if s.model else "",
                                      f"{s.adapter_source}={adapter}" if s.adapter_source else "") if x)
        fail = f"loglm_model{' (' + where + ')' if where else ''}: {type(e).__name__}: {e}"
    if skip is not None:
        pytest.skip(skip)
    if fail is not None:
        pytest.fail(fail, pytrace=False)
    info = model.info
    ads = [Path(a).name for a in info.get("adapter", [])]
    st.model_desc = (f"{Path(str(info.get('path', '?'))).name}"
                     f" + {', '.join(ads) if ads else 'no adapter'}, threads={info.get('threads')}")
    return model


@pytest.fixture(scope="session")
def loglm_remote(pytestconfig: pytest.Config) -> Any:
    """A :class:`loglm.remote.RemoteLogLM` for the server named by ``--loglm-remote`` (ini
    ``loglm_remote``, ``LOGLM_REMOTE``); the API key is read from ``LOGLM_API_KEY``. Tests
    using it are skipped with the reason when no URL is configured. Nothing is sent to the
    server before the test's first call."""
    __tracebackhide__ = True
    st = _state(pytestconfig)
    url = st.settings.get("remote")
    if url is None:
        pytest.skip("loglm_remote: no server configured (pass --loglm-remote URL, set loglm_remote in the "
                    f"ini file or {_ENV['remote']})")
    from loglm.model import LogLM

    st.model_desc = st.model_desc or f"remote {url}"
    return LogLM.remote(url)


@pytest.fixture
def loglm_data(request: pytest.FixtureRequest) -> "LoglmData":
    """Dataset helpers for this test (:class:`LoglmData`); relative paths are read from the
    test file's folder."""
    return LoglmData(Path(str(request.path)).parent)


# ----------------------------------------------------------------------------- datasets

_CONTENT = ("content", "log", "line", "text", "message")
_SESSION = ("sessionid", "session_id", "session", "blockid", "block_id")


def load_labelled(path: Any) -> "pd.DataFrame":
    """A file of labelled log lines or sessions as a DataFrame.

    * CSV (``.csv``) or JSON lines (``.jsonl`` / ``.ndjson``) with one log line per row: a
      text column (``Content``, ``log``, ``line``, ``text`` or ``message``) and ``label``;
      an optional session column (``SessionId``, ``session``, ``BlockId``...). Result:
      Content, Label and, when present, SessionId.
    * JSON lines with one session per row: ``lines`` (a list of log lines), ``label`` and
      an optional session id (the row number otherwise). Result: SessionId, Lines, Label.

    Labels may be ``normal`` / ``abnormal`` (``anomaly``, ``-`` ...), 0 / 1 or booleans;
    they come out as ``"normal"`` / ``"abnormal"``. Column names are matched without case.

    Raises:
        loglm.datasets.DatasetNotFoundError: no such file.
        loglm.InvalidInputError: an unknown extension, a missing column, an unknown label
            or a line that is not a JSON object.
    """
    import pandas as pd

    from loglm.datasets import DatasetNotFoundError, _label, _read_csv, _read_text

    p = Path(os.fspath(path))
    if not p.is_file():
        raise DatasetNotFoundError(f"labelled data not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        df = _read_csv(p)
    elif suffix in (".jsonl", ".ndjson"):
        recs = []
        for n, line in enumerate(_read_text(p).split("\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInputError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InvalidInputError(f"{p}:{n}: expected a JSON object per line, got {type(rec).__name__}")
            recs.append(rec)
        df = pd.DataFrame(recs)
    else:
        raise InvalidInputError(f"{p}: expected a .csv or .jsonl file of labelled lines or sessions")
    if df.empty:
        raise InvalidInputError(f"{p}: no rows")
    cols = {str(c).lower(): c for c in df.columns}
    label = cols.get("label")
    if label is None:
        raise InvalidInputError(f"{p}: no 'label' column (columns: {', '.join(map(str, df.columns))})")
    try:
        labels = [_label(v) for v in df[label].tolist()]
    except ValueError as e:
        raise InvalidInputError(f"{p}: {e}") from None
    sess = next((cols[c] for c in _SESSION if c in cols), None)
    if "lines" in cols:
        lines = df[cols["lines"]].tolist()
        for n, v in enumerate(lines, 1):
            if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                raise InvalidInputError(f"{p}: row {n}: 'lines' must be a non-empty list of strings")
        ids = df[sess].tolist() if sess is not None else list(range(len(df)))
        return pd.DataFrame({"SessionId": ids, "Lines": lines, "Label": labels})
    content = next((cols[c] for c in _CONTENT if c in cols), None)
    if content is None:
        raise InvalidInputError(f"{p}: no log text column (one of {', '.join(_CONTENT)}; "
                                f"columns: {', '.join(map(str, df.columns))})")
    out = pd.DataFrame({"Content": [str(x) for x in df[content].tolist()], "Label": labels})
    if sess is not None:
        out["SessionId"] = df[sess].tolist()
    return out


class LoglmData:
    """Dataset helpers of the ``loglm_data`` fixture. Relative paths are read from
    ``base`` (the test file's folder). Data that is missing fails the test with a clear
    message, except the paper's splits, which are skipped when ``LOGLM_DATA_DIR`` is unset."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)

    def path(self, path: Any) -> Path:
        """``path`` made absolute against the test file's folder."""
        p = Path(os.fspath(path)).expanduser()
        return p if p.is_absolute() else self.base / p

    def labelled(self, path: Any) -> Any:
        """:func:`load_labelled` of ``path`` (relative to the test file's folder)."""
        __tracebackhide__ = True
        return _data_call(f"loglm_data.labelled({os.fspath(path)!r})", load_labelled, self.path(path))

    def loghub(self, system: str, root: Any, *, split: str = "all", limit: Optional[int] = None) -> Any:
        """Parsing data of ``system`` from a loghub-layout folder ``root`` (containing
        ``loghub_2k/<System>/<System>_2k.log_structured.csv``, optionally
        ``loghub_2k_corrected/``): :func:`loglm.datasets.load_parsing` (LineId, Content,
        EventTemplate, EventTemplateCorrected), first ``limit`` lines when given."""
        __tracebackhide__ = True
        from loglm.datasets import load_parsing

        df = _data_call(f"loglm_data.loghub({system!r})", load_parsing, system, self.path(root), split=split)
        return df.iloc[:limit].reset_index(drop=True) if limit is not None else df

    def paper(self, task: str, system: Optional[str] = None, *, limit: Optional[int] = None) -> Any:
        """A test split of the LogLM paper from ``LOGLM_DATA_DIR`` (skipped with the reason
        when the variable is not set): ``"parsing"`` (``system`` one of
        :data:`loglm.datasets.SYSTEMS`; the last 1,800 lines), ``"anomaly"`` (``system``
        ``"bgl"`` or ``"spirit"``; the LogPrompt templates not in training), or
        ``"interpretation"`` / ``"root_cause"`` / ``"solution"`` (76 pairs each); first
        ``limit`` rows when given."""
        __tracebackhide__ = True
        from loglm import datasets as ds

        if not os.environ.get("LOGLM_DATA_DIR", "").strip():
            pytest.skip(f"loglm_data.paper({task!r}): LOGLM_DATA_DIR is not set (a folder with the LogLM "
                        "datasets: loghub_2k/, loghub_2k_corrected/, loglm/, logprompt/)")
        what = f"loglm_data.paper({task!r}{', ' + repr(system) if system is not None else ''})"
        if task == "parsing":
            if system is None:
                pytest.fail(f"{what}: name a system, one of {', '.join(ds.SYSTEMS)}", pytrace=False)
            df = _data_call(what, ds.load_parsing, system, split="test")
        elif task == "anomaly":
            if system is None:
                pytest.fail(f"{what}: name a system, 'bgl' or 'spirit'", pytrace=False)
            df = _data_call(what, ds.load_anomaly, system, split="test")
        elif task in ds.IRS_TASKS:
            df = _data_call(what, ds.load_irs_test, task)
        else:
            pytest.fail(f"{what}: unknown task; expected parsing, anomaly, {', '.join(ds.IRS_TASKS)}", pytrace=False)
        return df.iloc[:limit].reset_index(drop=True) if limit is not None else df


def _data_call(what: str, fn: Any, *args: Any, **kw: Any) -> Any:
    __tracebackhide__ = True
    from loglm.errors import LoglmError

    try:
        return fn(*args, **kw)
    except (LoglmError, OSError, ValueError, KeyError) as e:
        msg = f"{what}: {e}"
    pytest.fail(msg, pytrace=False)  # outside the except block: no exception chain in the report


# ----------------------------------------------------------------------------- recording

def baseline_path(test_file: Any) -> Path:
    """The baseline file of a test file: ``test_x.py`` -> ``test_x.loglm-baseline.json``."""
    p = Path(os.fspath(require_path(test_file, "test_file")))
    return p.with_name(p.stem + BASELINE_SUFFIX)


class _BaselineError(InvalidInputError):
    """A baseline file that cannot be read or is not one."""


def _read_baseline(path: Path) -> Dict[str, Dict[str, float]]:
    hint = "delete it or write a new one with --loglm-save-baseline"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise _BaselineError(f"cannot read the loglm baseline {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise _BaselineError(f"the loglm baseline {path} is not valid JSON ({e.msg}, line {e.lineno}); {hint}") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("tests"), dict):
        raise _BaselineError(f"{path} is not a loglm baseline file (expected format {_FORMAT!r}); {hint}")
    tests: Dict[str, Dict[str, float]] = {}
    for test, metrics in data["tests"].items():
        if not isinstance(metrics, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values()):
            raise _BaselineError(f"the loglm baseline {path} has an entry for {test!r} that is not a mapping of "
                                 f"metric names to numbers; {hint}")
        tests[str(test)] = {str(k): float(v) for k, v in metrics.items()}
    return tests


def _fmt(v: Optional[float], scale: float) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if scale >= 10 else f"{v:.4f}"


def _signed(v: float, scale: float) -> str:
    return f"{v:+.2f}" if scale >= 10 else f"{v:+.4f}"


def _gate(metrics: Sequence[Tuple[str, float, Optional[float]]], scale: float) -> List[str]:
    """Record ``(name, value, minimum)`` for the running test (summary table, JUnit
    property ``loglm.<name>``, baseline) and return one line per failed check."""
    __tracebackhide__ = True
    st = _ACTIVE[-1] if _ACTIVE else None
    item = st.item if st is not None else None
    failures: List[str] = []
    recorded: List[_Metric] = []
    for name, value, minimum in metrics:
        m = _Metric(item.nodeid if item is not None else "", name, float(value), minimum, scale)
        if minimum is not None and not value >= minimum:
            m.ok = False
            failures.append(f"{name} = {_fmt(value, scale)} is below the minimum {_fmt(minimum, scale)}")
        recorded.append(m)
    if st is None or item is None:
        return failures
    for m in recorded:
        if (m.nodeid, m.name) in st.keys:
            pytest.fail(f"loglm: metric {m.name!r} is recorded twice in {item.nodeid}; give each assertion "
                        "its own name=", pytrace=False)
    for m in recorded:
        st.keys.add((m.nodeid, m.name))
        st.metrics.append(m)
        item.user_properties.append((f"loglm.{m.name}", m.value))
    if not st.settings.save_baseline:
        failures += _compare(st, item, recorded)
    return failures


def _compare(st: _State, item: pytest.Item, recorded: List[_Metric]) -> List[str]:
    __tracebackhide__ = True
    path = baseline_path(item.path)
    if path not in st.baselines:
        if not path.is_file():
            st.baselines[path] = {}
        else:
            msg = None
            try:
                st.baselines[path] = _read_baseline(path)
            except _BaselineError as e:
                msg = str(e)
            if msg is not None:
                pytest.fail(msg, pytrace=False)
    base = st.baselines[path].get(_test_key(item))
    if base is None:
        return []
    tol = st.settings.get("tolerance")
    out = []
    for m in recorded:
        if m.name not in base:
            pytest.fail(f"the loglm baseline {path.name} has no metric {m.name!r} for {_test_key(item)} (it records "
                        f"{', '.join(sorted(base)) or 'none'}): the test and its baseline measure different metrics; "
                        "write a new baseline with --loglm-save-baseline", pytrace=False)
        m.baseline = base[m.name]
        drop = m.baseline - m.value
        if drop > tol * m.scale + 1e-12:
            m.ok = False
            out.append(f"{m.name} dropped from {_fmt(m.baseline, m.scale)} to {_fmt(m.value, m.scale)} "
                       f"({_signed(-drop, m.scale)}; tolerance {_fmt(tol * m.scale, m.scale)}) against {path.name}")
    return out


def _test_key(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[1] if "::" in item.nodeid else item.name


def _raise(title: str, failures: List[str], details: List[str]) -> None:
    __tracebackhide__ = True
    if failures:
        raise AssertionError("\n".join([title] + ["  " + f for f in failures] + ([""] + details if details else [])))


def record_metric(name: str, value: float, *, minimum: Optional[float] = None, scale: float = 1.0) -> None:
    """Record a figure of your own for the running test (summary table, JUnit property
    ``loglm.<name>``, baseline) and fail when it is below ``minimum`` or dropped against
    its baseline by more than the tolerance. ``scale`` is the metric's range (1 for
    fractions, 100 for percentages): the tolerance is a fraction of it. Higher is better."""
    __tracebackhide__ = True

    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("record_metric: name must be a non-empty string")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"record_metric: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not scale > 0:
        raise InvalidInputError(f"record_metric: {name} = {value!r} (scale {scale!r}) is not a finite number")
    _raise(f"loglm: {name} below its gate", _gate([(name, v, minimum)], float(scale)), [])


def _short(s: str, n: int = 120) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n - 3] + "..."


def _text_list(x: Any, what: str) -> List[str]:

    if isinstance(x, (str, bytes)) or x is None:
        raise InvalidInputError(f"{what} must be a sequence of strings, not {type(x).__name__}")
    try:
        items = x.tolist() if hasattr(x, "tolist") else list(x)
    except TypeError:
        raise InvalidInputError(f"{what} must be a sequence of strings, not {type(x).__name__}") from None
    out = []
    for i, v in enumerate(items):
        v = getattr(v, "text", v)  # GenerationResult
        if not isinstance(v, str):
            raise InvalidInputError(f"{what}[{i}] is {type(v).__name__}, not a string")
        out.append(str(v))
    if not out:
        raise InvalidInputError(f"{what} is empty")
    return out


# ----------------------------------------------------------------------------- parsing

def _column(df: Any, names: Sequence[str]) -> Optional[Any]:
    cols = getattr(df, "columns", None)
    if cols is None:
        return None
    for n in names:
        if n in cols:
            return df[n]
    return None


def assert_parsing(parsed: Any, truth: Any, *, min_ga: Optional[float] = None, min_pa: Optional[float] = None,
                   min_fga: Optional[float] = None, min_fta: Optional[float] = None, name: str = "parsing",
                   normalize_whitespace: bool = False, show: int = 5) -> Dict[str, float]:
    """Check log parsing against the ground truth with :func:`loglm.metrics.parsing_scores`.

    ``parsed`` is the DataFrame of ``model.parse`` / ``TemplateMiner.parse`` (Content,
    EventTemplate) or a sequence of predicted templates; ``truth`` a DataFrame with
    EventTemplateCorrected or EventTemplate (``loglm.datasets.load_parsing``,
    ``loglm_data.loghub``...) or a sequence of true templates. The log lines come from
    either one's Content column. Records GA, FGA, PA and FTA as ``<name>.GA``...; fails
    when one is below its ``min_*`` or dropped against the baseline, showing the worst
    true groups (most lines, not grouped exactly) and ``show`` mis-parsed lines. Returns
    the scores.
    """
    __tracebackhide__ = True
    from loglm.metrics import parsing_scores

    pred_col = _column(parsed, ("EventTemplate",))
    if hasattr(parsed, "columns") and pred_col is None:
        raise InvalidInputError("assert_parsing: the parsed DataFrame has no EventTemplate column")
    pred = _text_list(pred_col if pred_col is not None else parsed, "assert_parsing: parsed templates")
    true_col = _column(truth, ("EventTemplateCorrected", "EventTemplate"))
    if hasattr(truth, "columns") and true_col is None:
        raise InvalidInputError("assert_parsing: the truth DataFrame has no EventTemplate(Corrected) column")
    true = _text_list(true_col if true_col is not None else truth, "assert_parsing: true templates")
    logs_col = _column(parsed, ("Content",))
    if logs_col is None:
        logs_col = _column(truth, ("Content",))
    if logs_col is None:
        raise InvalidInputError("assert_parsing: neither the parsed nor the truth DataFrame has a Content column "
                                "(the log lines)")
    logs = _text_list(logs_col, "assert_parsing: log lines")
    if not len(logs) == len(true) == len(pred):
        raise InvalidInputError(f"assert_parsing: {len(pred)} parsed lines, {len(true)} true templates, "
                                f"{len(logs)} log lines")
    try:
        s = parsing_scores(logs, true, pred, normalize_whitespace=normalize_whitespace)
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"assert_parsing: {e}") from None
    gates = [("GA", min_ga), ("FGA", min_fga), ("PA", min_pa), ("FTA", min_fta)]
    failures = _gate([(f"{name}.{k}", s[k], m) for k, m in gates], 1.0)
    if failures:
        if normalize_whitespace:
            true = [" ".join(t.split()) for t in true]
            pred = [" ".join(t.split()) for t in pred]
        _raise(f"loglm: parsing of {len(logs)} lines below its gate", failures, _parsing_details(logs, true, pred, show))
    return {k: float(v) for k, v in s.items()}


def _parsing_details(logs: List[str], true: List[str], pred: List[str], show: int) -> List[str]:
    from collections import Counter, defaultdict

    pred_size = Counter(pred)
    groups: Dict[str, List[int]] = defaultdict(list)
    for i, t in enumerate(true):
        groups[t].append(i)
    bad = []
    for t, idx in groups.items():
        got = Counter(pred[i] for i in idx)
        if len(got) == 1 and pred_size[next(iter(got))] == len(idx):
            continue
        bad.append((len(idx), t, got))
    bad.sort(key=lambda x: -x[0])
    out = [f"{len(bad)} of {len(groups)} true groups are not grouped exactly; the largest:"]
    for n, t, got in bad[:show]:
        parts = []
        for p, c in got.most_common(3):
            other = pred_size[p] - c
            parts.append(f"{c} as {_short(p, 80)!r}" + (f" (+{other} lines of other groups)" if other else ""))
        more = f", {len(got) - 3} more templates" if len(got) > 3 else ""
        out.append(f"  {n:5d} lines  {_short(t, 80)!r}\n          -> " + "; ".join(parts) + more)
    wrong = [i for i in range(len(logs)) if pred[i] != true[i]]
    out.append(f"{len(wrong)} of {len(logs)} lines have a template other than the true one; the first:")
    for i in wrong[:show]:
        out.append(f"  line {i + 1}: {_short(logs[i])}\n    expected {_short(true[i])!r}\n    got      {_short(pred[i])!r}")
    return out


# ----------------------------------------------------------------------------- anomaly flags

def assert_flags(model: Any, logs: Any, expected: Any = None, *, threshold: float = 0.5,
                 min_precision: Optional[float] = None, min_recall: Optional[float] = None,
                 min_f1: Optional[float] = None, name: str = "flags", show: int = 10) -> Dict[str, float]:
    """Check which logs (or sessions) ``model`` flags as abnormal.

    ``logs`` is a sequence of log lines, a mapping ``{session id: lines}`` or a list of
    line lists (sessions, scored with ``model.detect_sessions``: a session's score is its
    highest line score), or a DataFrame of :func:`load_labelled` (its Label column is
    then the default ``expected``). ``expected`` has one label per log / session: bools,
    0/1 or ``"normal"`` / ``"abnormal"``. A log is flagged when its P(abnormal) is at
    least ``threshold``. Records precision, recall, F1 and accuracy of the abnormal class
    (:func:`loglm.metrics.classification_scores`) as ``<name>.precision``...

    Without ``min_*`` every log must be labelled as expected (accuracy 1); with them only
    those gates apply. Fails with the missed and the wrongly flagged logs and their
    scores. Returns the scores.
    """
    __tracebackhide__ = True
    from loglm.datasets import _label
    from loglm.metrics import classification_scores

    if not 0.0 <= float(threshold) <= 1.0:
        raise InvalidInputError(f"assert_flags: threshold must be in [0, 1], got {threshold}")
    sessions: Optional[Dict[Any, List[str]]] = None
    if hasattr(logs, "columns"):
        if expected is None and "Label" in logs.columns:
            expected = logs["Label"]
        if "Lines" in logs.columns:
            ids = logs["SessionId"].tolist() if "SessionId" in logs.columns else list(range(len(logs)))
            sessions = dict(zip(ids, logs["Lines"].tolist()))
            if len(sessions) != len(ids):
                raise InvalidInputError("assert_flags: the session ids are not unique")
        else:
            col = _column(logs, ("Content", "log"))
            if col is None:
                raise InvalidInputError("assert_flags: the DataFrame has no Content or Lines column")
            logs = col
    elif isinstance(logs, Mapping):
        sessions = {k: list(v) for k, v in logs.items()}
    elif not isinstance(logs, (str, bytes)) and logs is not None:
        items = list(logs.tolist() if hasattr(logs, "tolist") else logs)
        if items and all(isinstance(x, (list, tuple)) for x in items):
            sessions = {i: list(x) for i, x in enumerate(items)}
    if expected is None:
        raise InvalidInputError("assert_flags: give the expected labels (one per log or session)")
    if sessions is not None:
        keys = list(sessions)
        texts = [" | ".join(_short(x, 60) for x in v[:3]) + (f" | ... ({len(v)} lines)" if len(v) > 3 else "")
                 for v in sessions.values()]
        for k, v in sessions.items():
            _text_list(v, f"assert_flags: session {k!r}")
    else:
        texts = _text_list(logs, "assert_flags: logs")
    try:
        want = [_label(v) for v in (expected.tolist() if hasattr(expected, "tolist") else list(expected))]
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"assert_flags: expected labels: {e}") from None
    if len(want) != len(texts):
        raise InvalidInputError(f"assert_flags: {len(texts)} {'sessions' if sessions is not None else 'logs'} "
                                f"but {len(want)} expected labels")
    if sessions is not None:
        df = model.detect_sessions(sessions, threshold=threshold, progress=False)
        by = dict(zip(df["SessionId"].tolist(), df["Score"].tolist()))
        scores = [float(by[k]) for k in keys]
    else:
        scores = [float(x) for x in model.anomaly_scores(texts, progress=False)]
    got = ["abnormal" if x >= threshold else "normal" for x in scores]
    s = classification_scores(want, got)
    gates = [("precision", min_precision), ("recall", min_recall), ("f1", min_f1)]
    if all(m is None for _, m in gates):
        gates.append(("accuracy", 1.0))
    else:
        gates.append(("accuracy", None))
    failures = _gate([(f"{name}.{k}", s[k], m) for k, m in gates], 1.0)
    if failures:
        what = "sessions" if sessions is not None else "logs"
        missed = [i for i in range(len(texts)) if want[i] == "abnormal" and got[i] == "normal"]
        wrong = [i for i in range(len(texts)) if want[i] == "normal" and got[i] == "abnormal"]
        details = [f"missed: {len(missed)} abnormal {what} scored below {threshold:g}"]
        details += [f"  {scores[i]:.3f}  {_short(texts[i])}" for i in sorted(missed, key=lambda i: scores[i])[:show]]
        details.append(f"wrongly flagged: {len(wrong)} normal {what} scored {threshold:g} or more")
        details += [f"  {scores[i]:.3f}  {_short(texts[i])}" for i in sorted(wrong, key=lambda i: -scores[i])[:show]]
        _raise(f"loglm: anomaly flags of {len(texts)} {what} below their gate "
               f"(tp {s['tp']}, fp {s['fp']}, fn {s['fn']}, tn {s['tn']})", failures, details)
    return {k: float(v) for k, v in s.items()}


# ----------------------------------------------------------------------------- text scores

def assert_text_scores(hypotheses: Any, references: Any, *, min_bleu: Optional[float] = None,
                       min_rouge_l: Optional[float] = None, name: str = "text", show: int = 3) -> Dict[str, float]:
    """Check generated text (interpretations, root causes, solutions) against references:
    corpus BLEU (:func:`loglm.metrics.bleu`, sacrebleu 13a) and mean ROUGE-L F-measure
    (:func:`loglm.metrics.rouge`, rouge-score), both 0-100 as in the paper's Table IV.
    ``hypotheses`` may hold strings, :class:`loglm.Answer` or ``GenerationResult``
    objects. Records ``<name>.BLEU`` and ``<name>.ROUGE-L``; fails when one is below its
    minimum or dropped against the baseline, showing the ``show`` pairs with the lowest
    ROUGE-L. Returns ``{"BLEU": ..., "ROUGE-L": ...}``."""
    __tracebackhide__ = True
    from loglm.metrics import bleu, rouge

    hyps = _text_list(hypotheses, "assert_text_scores: hypotheses")
    refs = _text_list(references, "assert_text_scores: references")
    if len(hyps) != len(refs):
        raise InvalidInputError(f"assert_text_scores: {len(hyps)} hypotheses but {len(refs)} references")
    try:
        b = bleu(hyps, refs)
        r = rouge(hyps, refs, types=("rougeL",))
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"assert_text_scores: {e}") from None
    out = {"BLEU": float(b.score), "ROUGE-L": 100.0 * r.mean["rougeL"]["fmeasure"]}
    failures = _gate([(f"{name}.BLEU", out["BLEU"], min_bleu), (f"{name}.ROUGE-L", out["ROUGE-L"], min_rouge_l)], 100.0)
    if failures:
        f = r.fmeasure("rougeL")
        worst = sorted(range(len(hyps)), key=lambda i: f[i])[:show]
        details = [f"the {len(worst)} pairs with the lowest ROUGE-L (of {len(hyps)}):"]
        for i in worst:
            details.append(f"  #{i + 1}: ROUGE-L {100 * f[i]:.1f}, BLEU {b.sentence_scores[i]:.1f}\n"
                           f"    hypothesis: {_short(hyps[i])}\n    reference:  {_short(refs[i])}")
        _raise(f"loglm: text scores of {len(hyps)} pairs below their gate", failures, details)
    return out


# ----------------------------------------------------------------------------- report

def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``--loglm-save-baseline``: write the metrics of the passing tests next to
    their test files (merged with the other tests' entries of an existing baseline)."""
    st = session.config.stash.get(_STATE, None)
    if st is None or not st.settings.save_baseline or not st.metrics or st.xdist_worker:
        return
    import datetime as _dt

    per_file: Dict[Path, Dict[str, Dict[str, float]]] = {}
    items = {it.nodeid: it for it in session.items}
    for m in st.metrics:
        it = items.get(m.nodeid)
        if it is None:
            continue
        if m.nodeid not in st.passed:
            if m.nodeid not in st.not_saved:
                st.not_saved.append(m.nodeid)
            continue
        per_file.setdefault(baseline_path(it.path), {}).setdefault(_test_key(it), {})[m.name] = m.value
    try:
        from loglm import __version__ as version
    except ImportError:  # pragma: no cover - the extension is always there when loglm imports
        version = "?"
    for path, tests in per_file.items():
        try:
            old = _read_baseline(path) if path.is_file() else {}
        except _BaselineError:
            old = {}
        old.update(tests)
        data = {"format": _FORMAT, "loglm_version": version,
                "written": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "model": st.model_desc, "tests": {k: old[k] for k in sorted(old)}}
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
            tmp.replace(path)
        except OSError as e:
            st.write_errors.append(f"cannot write the loglm baseline {path}: {e}")
            continue
        st.written.append((path, len(tests), sum(len(v) for v in tests.values())))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The table of every metric recorded in the run (nothing when there is none)."""
    st = config.stash.get(_STATE, None)
    if st is None or not st.metrics:
        return
    tr = terminalreporter
    tr.write_sep("=", "loglm metrics")
    if st.model_desc:
        tr.write_line(f"model: {st.model_desc}")
    header = ["test", "metric", "value", "min", "baseline", "change", ""]
    rows = []
    for m in st.metrics:
        change = "-" if m.baseline is None else _signed(m.value - m.baseline, m.scale)
        rows.append([m.nodeid, m.name, _fmt(m.value, m.scale), _fmt(m.minimum, m.scale),
                     _fmt(m.baseline, m.scale), change, "ok" if m.ok else "FAIL"])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for k, r in enumerate([header] + rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(r[2:6], widths[2:6])] + [r[6]]
        tr.write_line("  ".join(cells).rstrip(), red=k > 0 and r[6] == "FAIL")
    for path, n_tests, n_metrics in st.written:
        tr.write_line(f"loglm baseline written: {path} ({n_metrics} metrics of {n_tests} tests)")
    for msg in st.write_errors:
        tr.write_line(msg, red=True)
    if st.not_saved:
        tr.write_line(f"loglm baseline: not saved for {len(st.not_saved)} tests that did not pass: "
                      + ", ".join(st.not_saved[:5]) + (" ..." if len(st.not_saved) > 5 else ""))
