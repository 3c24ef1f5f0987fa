"""The pytest plugin (loglm.pytest_plugin), run with pytester.

Inner runs are in-process with plugin auto-loading off and the plugin named with ``-p``,
so they behave the same whether or not loglm's entry point is installed in this
environment; ``test_entry_point_autoloads`` checks the entry point itself from the
metadata maturin writes for the package.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

import loglm  # noqa: F401  (imported before the in-process runs, which then reuse it)
import loglm.model
from loglm.metrics import bleu, parsing_scores, rouge
from loglm.remote import RemoteLogLM  # noqa: F401  (same reason)

pytest_plugins = ["pytester"]

# In-process runs drop the modules they import when they end; a pandas submodule imported
# again later is a second copy that pandas rejects. Load the CSV reader here, once.
pd.read_csv(io.StringIO("a,b\n1,x\n"), dtype=str, keep_default_na=False)

REPO = Path(__file__).resolve().parent.parent
PLUGIN_ENV = ("LOGLM_MODEL", "LOGLM_ADAPTER", "LOGLM_REMOTE", "LOGLM_BASELINE_TOLERANCE")


@pytest.fixture
def run(pytester, monkeypatch):
    """Run pytest in-process on pytester's folder with the plugin loaded once."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    for v in PLUGIN_ENV:
        monkeypatch.delenv(v, raising=False)

    def go(*args):
        return pytester.runpytest("-p", "loglm.pytest_plugin", "-p", "no:cacheprovider", "-W", "error", *args)
    return go


def _text(result) -> str:
    return "\n".join(result.outlines + result.errlines)


def _no_plugin_traceback(out: str) -> None:
    assert "Traceback" not in out and "During handling" not in out
    assert "pytest_plugin.py" not in out


# ----------------------------------------------------------------------------- options


def test_options_are_listed_in_help(run):
    out = _text(run("--help"))
    for opt in ("--loglm-model", "--loglm-adapter", "--loglm-threads", "--loglm-remote", "--loglm-save-baseline",
                "--loglm-tolerance", "loglm_model", "loglm_adapter", "loglm_threads", "loglm_remote", "loglm_tolerance"):
        assert opt in out, opt


@pytest.mark.parametrize("args, message", [
    (["--loglm-adapter", "none", "--loglm-adapter", "some/adapter"], "cannot be combined"),
    (["--loglm-threads", "0"], "at least 1"),
    (["--loglm-threads", "many"], "invalid int value"),
    (["--loglm-tolerance", "5"], "fraction of the metric's range"),
    (["--loglm-remote", "ftp://example.org"], "http:// or https://"),
])
def test_bad_option_values_are_usage_errors(run, pytester, args, message):
    pytester.makepyfile("def test_x():\n    pass\n")
    r = run(*args)
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    out = _text(r)
    assert message in out
    _no_plugin_traceback(out)


def test_bad_ini_value_is_a_usage_error(run, pytester):
    pytester.makeini("[pytest]\nloglm_threads = many\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    r = run()
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini loglm_threads: expected a number of threads, got 'many'" in _text(r)


def test_settings_precedence(run, pytester, monkeypatch):
    # command line over ini file over environment; LOGLM_ADAPTER holds os.pathsep-separated paths
    pytester.makepyfile("""
        import json
        from loglm.pytest_plugin import _state

        def test_settings(pytestconfig):
            s = _state(pytestconfig).settings
            print("SETTINGS", json.dumps([s.model, s.adapter, s.threads, s.remote, s.tolerance]))
    """)

    def settings(*args):
        r = run("-s", *args)
        r.assert_outcomes(passed=1)
        line = next(x for x in r.outlines if "SETTINGS " in x)
        return json.loads(line.split("SETTINGS ", 1)[1].rstrip(".").strip())

    assert settings() == [None, "auto", None, None, 0.01]
    monkeypatch.setenv("LOGLM_MODEL", "env.gguf")
    monkeypatch.setenv("LOGLM_ADAPTER", os.pathsep.join(["a1", "a2"]))
    monkeypatch.setenv("LOGLM_REMOTE", "http://env:1")
    monkeypatch.setenv("LOGLM_BASELINE_TOLERANCE", "0.05")
    assert settings() == ["env.gguf", ["a1", "a2"], None, "http://env:1", 0.05]
    pytester.makeini("[pytest]\nloglm_model = ini.gguf\nloglm_adapter =\n    i1\n    i2\nloglm_threads = 3\n"
                     "loglm_remote = http://ini:2\nloglm_tolerance = 0.1\n")
    assert settings() == ["ini.gguf", ["i1", "i2"], 3, "http://ini:2", 0.1]
    assert settings("--loglm-model", "cli.gguf", "--loglm-adapter", "c1", "--loglm-adapter", "c2", "--loglm-threads", "2",
                    "--loglm-remote", "https://cli:3", "--loglm-tolerance", "0.2") == [
        "cli.gguf", ["c1", "c2"], 2, "https://cli:3", 0.2]
    assert settings("--loglm-adapter", "NONE")[1] is None


def test_unused_plugin_changes_nothing(run, pytester, monkeypatch):
    # invalid environment variables do not disturb a run that does not use them, no model
    # is loaded, nothing is written and nothing is added to the output
    monkeypatch.setenv("LOGLM_REMOTE", "not a url")
    monkeypatch.setenv("LOGLM_BASELINE_TOLERANCE", "lots")

    def boom(*a, **k):
        raise AssertionError("the plugin loaded a model nobody asked for")
    monkeypatch.setattr(loglm.model.LogLM, "load", boom)
    pytester.makepyfile(test_plain="def test_x():\n    assert 1 + 1 == 2\n")
    before = sorted(p.name for p in pytester.path.iterdir())
    r = run("--loglm-save-baseline")
    r.assert_outcomes(passed=1)
    out = _text(r)
    assert "loglm metrics" not in out and "loglm baseline" not in out
    assert sorted(p.name for p in pytester.path.iterdir()) == before


def test_invalid_environment_fails_only_the_test_that_uses_it(run, pytester, monkeypatch):
    monkeypatch.setenv("LOGLM_REMOTE", "not a url")
    pytester.makepyfile("def test_remote(loglm_remote):\n    pass\n\ndef test_other():\n    pass\n")
    r = run()
    r.assert_outcomes(passed=1, errors=1)
    out = _text(r)
    assert "LOGLM_REMOTE: expected an http:// or https:// URL" in out
    _no_plugin_traceback(out)


def test_remote_fixture(run, pytester):
    pytester.makepyfile("""
        from loglm.remote import RemoteLogLM

        def test_remote(loglm_remote):
            assert isinstance(loglm_remote, RemoteLogLM)
            assert loglm_remote.base_url == "http://127.0.0.1:9"
    """)
    r = run("-rs")
    r.assert_outcomes(skipped=1)
    assert "loglm_remote: no server configured (pass --loglm-remote URL" in _text(r)
    run("--loglm-remote", "http://127.0.0.1:9/v1").assert_outcomes(passed=1)


# ----------------------------------------------------------------------------- gates

LOGS = ["open file a", "open file b", "close file a", "close file b", "user x logged in", "user y logged in"]
TRUE = ["open file <*>", "open file <*>", "close file <*>", "close file <*>", "user <*> logged in", "user <*> logged in"]
BAD = ["open file <*>", "open file b", "<*> file a", "<*> file b", "user <*> logged in", "user <*> logged in"]


def test_parsing_gate_pass_and_fail(run, pytester):
    pytester.makepyfile(f"""
        import pandas as pd
        from loglm.pytest_plugin import assert_parsing

        TRUTH = pd.DataFrame({{"Content": {LOGS!r}, "EventTemplate": {TRUE!r}}})

        def test_good():
            assert_parsing({TRUE!r}, TRUTH, min_ga=1.0, min_pa=1.0)

        def test_bad():
            assert_parsing(pd.DataFrame({{"Content": {LOGS!r}, "EventTemplate": {BAD!r}}}), TRUTH, min_ga=0.9)

        def test_bad_input():
            assert_parsing(["only one"], TRUTH)
    """)
    r = run()
    r.assert_outcomes(passed=1, failed=2)
    out = _text(r)
    ga = parsing_scores(LOGS, TRUE, BAD)["GA"]
    assert f"parsing.GA = {ga:.4f} is below the minimum 0.9000" in out
    # the worst groups and the mis-parsed lines
    assert "2 of 3 true groups are not grouped exactly" in out
    assert "'close file <*>'" in out and "1 as '<*> file a'" in out
    assert "line 2: open file b" in out and "got      'open file b'" in out
    assert "InvalidInputError: assert_parsing: 1 parsed lines, 6 true templates, 6 log lines" in out
    assert "pytest_plugin.py" not in out  # the helpers' own frames are hidden


def test_flags_gate_messages(run, pytester):
    pytester.makeconftest("""
        import pandas as pd
        import pytest

        class FakeModel:
            def anomaly_scores(self, logs, progress=None):
                return [float(x.split("p=")[1]) for x in logs]

            def detect_sessions(self, sessions, threshold=0.5, progress=None):
                rows = [{"SessionId": k, "Score": max(float(x.split("p=")[1]) for x in v)} for k, v in sessions.items()]
                return pd.DataFrame(rows)

        @pytest.fixture
        def model():
            return FakeModel()
    """)
    pytester.makepyfile("""
        from loglm.pytest_plugin import assert_flags

        def test_exact(model):
            assert_flags(model, ["disk failed p=0.9", "all good p=0.1"], ["abnormal", "normal"])

        def test_missed_and_wrong(model):
            assert_flags(model, ["disk failed p=0.3", "node down p=0.8", "heartbeat p=0.7", "all good p=0.1"],
                         [1, 1, 0, 0])

        def test_recall_gate(model):
            # recall 1/2 passes a 0.5 floor; the wrongly flagged line is not gated
            assert_flags(model, ["disk failed p=0.3", "node down p=0.8", "heartbeat p=0.7"], [1, 1, 0],
                         min_recall=0.5, name="lenient")

        def test_sessions(model):
            assert_flags(model, {"a": ["x p=0.2", "y p=0.6"], "b": ["z p=0.1"]}, [True, True], threshold=0.5)
    """)
    r = run()
    r.assert_outcomes(passed=2, failed=2)
    out = _text(r)
    assert "flags.accuracy = 0.5000 is below the minimum 1.0000" in out
    assert "missed: 1 abnormal logs scored below 0.5" in out and "0.300  disk failed p=0.3" in out
    assert "wrongly flagged: 1 normal logs scored 0.5 or more" in out and "0.700  heartbeat p=0.7" in out
    assert "missed: 1 abnormal sessions scored below 0.5" in out and "0.100  z p=0.1" in out
    _no_plugin_traceback(out)


HYPS = ["the disk is full", "the network is down", "a user logged in"]
REFS = ["the disk is full now", "the network link is down", "a user logged in from a remote host"]


def test_text_gate_summary_table_and_junit_properties(run, pytester):
    pytester.makepyfile(f"""
        from loglm.pytest_plugin import assert_text_scores, record_metric

        def test_text_pass():
            assert_text_scores({HYPS!r}, {REFS!r}, min_bleu=10, min_rouge_l=50)

        def test_text_fail():
            assert_text_scores({HYPS!r}, {REFS!r}, min_rouge_l=99, name="strict")

        def test_custom():
            record_metric("alerts.recall", 0.75, minimum=0.7)
    """)
    r = run("--junitxml=report.xml")
    r.assert_outcomes(passed=2, failed=1)
    out = _text(r)
    b = bleu(HYPS, REFS).score
    rl = 100 * rouge(HYPS, REFS, types=("rougeL",)).mean["rougeL"]["fmeasure"]
    assert f"strict.ROUGE-L = {rl:.2f} is below the minimum 99.00" in out
    assert "pairs with the lowest ROUGE-L" in out and "hypothesis: a user logged in" in out
    # the summary table: one row per metric, with its minimum and status
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if "loglm metrics" in x)
    table = lines[start + 1:start + 8]
    assert table[0].split() == ["test", "metric", "value", "min", "baseline", "change"]
    rows = {x.split()[1]: x.split() for x in table[1:]}
    assert rows["text.BLEU"][2:] == [f"{b:.2f}", "10.00", "-", "-", "ok"]
    assert rows["text.ROUGE-L"][2:] == [f"{rl:.2f}", "50.00", "-", "-", "ok"]
    assert rows["strict.ROUGE-L"][2:] == [f"{rl:.2f}", "99.00", "-", "-", "FAIL"]
    assert rows["alerts.recall"][2:] == ["0.7500", "0.7000", "-", "-", "ok"]
    # JUnit XML properties, one per metric, on each test case
    props = {}
    for case in ET.parse(pytester.path / "report.xml").getroot().iter("testcase"):
        for p in case.iter("property"):
            props[(case.get("name"), p.get("name"))] = float(p.get("value"))
    assert props[("test_text_pass", "loglm.text.BLEU")] == pytest.approx(b, abs=1e-9)
    assert props[("test_text_pass", "loglm.text.ROUGE-L")] == pytest.approx(rl, abs=1e-9)
    assert props[("test_text_fail", "loglm.strict.ROUGE-L")] == pytest.approx(rl, abs=1e-9)
    assert props[("test_custom", "loglm.alerts.recall")] == 0.75


def test_same_metric_twice_needs_a_name(run, pytester):
    pytester.makepyfile(f"""
        from loglm.pytest_plugin import assert_text_scores

        def test_twice():
            assert_text_scores({HYPS!r}, {REFS!r})
            assert_text_scores({HYPS!r}, {REFS!r})
    """)
    r = run()
    r.assert_outcomes(failed=1)
    assert "metric 'text.BLEU' is recorded twice" in _text(r)


# ----------------------------------------------------------------------------- baselines


def test_baseline_save_compare_and_bad_files(run, pytester):
    pytester.makepyfile(test_gate="""
        import json
        from pathlib import Path
        from loglm.pytest_plugin import assert_text_scores

        def test_answers():
            pairs = json.loads((Path(__file__).parent / "pairs.json").read_text())
            assert_text_scores(pairs["hyps"], pairs["refs"])
    """)
    pairs = pytester.path / "pairs.json"
    pairs.write_text(json.dumps({"hyps": HYPS, "refs": REFS}))
    base = pytester.path / "test_gate.loglm-baseline.json"
    b0 = bleu(HYPS, REFS).score

    # save
    r = run("--loglm-save-baseline")
    r.assert_outcomes(passed=1)
    assert f"loglm baseline written: {base} (2 metrics of 1 tests)" in _text(r)
    saved = json.loads(base.read_text())
    assert saved["format"] == "loglm-baseline/1"
    assert saved["tests"]["test_answers"]["text.BLEU"] == pytest.approx(b0, abs=1e-9)

    # compare: unchanged
    r = run()
    r.assert_outcomes(passed=1)
    row = next(x for x in _text(r).splitlines() if "text.BLEU" in x).split()
    assert row[2:] == [f"{b0:.2f}", "-", f"{b0:.2f}", "+0.00", "ok"]

    # a drop beyond the tolerance fails and shows the change; a large tolerance lets it pass
    worse = ["the disk", "network", "a user"]
    pairs.write_text(json.dumps({"hyps": worse, "refs": REFS}))
    b1 = bleu(worse, REFS).score
    assert b1 < b0 - 1
    r = run()
    r.assert_outcomes(failed=1)
    out = _text(r)
    assert (f"text.BLEU dropped from {b0:.2f} to {b1:.2f} ({b1 - b0:+.2f}; tolerance 1.00) "
            "against test_gate.loglm-baseline.json") in out
    run("--loglm-tolerance", "0.9").assert_outcomes(passed=1)

    # saving again replaces the figures (no comparison while saving)
    r = run("--loglm-save-baseline", "--loglm-tolerance", "0")
    r.assert_outcomes(passed=1)
    assert json.loads(base.read_text())["tests"]["test_answers"]["text.BLEU"] == pytest.approx(b1, abs=1e-9)

    # corrupt file, a file of another kind, a baseline of other metrics: clear messages
    for content, message in [
        ("{not json", "is not valid JSON"),
        (json.dumps({"some": "thing"}), "is not a loglm baseline file"),
        (json.dumps({"format": "loglm-baseline/1", "tests": {"test_answers": {"parsing.GA": 1.0}}}),
         "has no metric 'text.BLEU' for test_answers (it records parsing.GA)"),
    ]:
        base.write_text(content)
        r = run()
        r.assert_outcomes(failed=1)
        out = _text(r)
        assert message in out and "--loglm-save-baseline" in out
        _no_plugin_traceback(out)


def test_baseline_not_saved_for_failing_tests(run, pytester):
    pytester.makepyfile(test_gate=f"""
        from loglm.pytest_plugin import assert_text_scores

        def test_fails():
            assert_text_scores({HYPS!r}, {REFS!r}, min_bleu=100)

        def test_passes():
            assert_text_scores({HYPS!r}, {REFS!r})
    """)
    r = run("--loglm-save-baseline")
    r.assert_outcomes(passed=1, failed=1)
    assert "not saved for 1 tests that did not pass: test_gate.py::test_fails" in _text(r)
    saved = json.loads((pytester.path / "test_gate.loglm-baseline.json").read_text())
    assert sorted(saved["tests"]) == ["test_passes"]


# ----------------------------------------------------------------------------- data


def test_data_fixture_labelled_files_and_loghub_folder(run, pytester):
    (pytester.path / "lines.csv").write_text("log,label\nnode down,abnormal\nall good,0\nfan failure,-\n")
    (pytester.path / "sessions.jsonl").write_text(
        '{"session": "s1", "label": "Anomaly", "lines": ["a", "b"]}\n\n{"session": "s2", "label": 0, "lines": ["c"]}\n')
    (pytester.path / "bad.jsonl").write_text('{"line": "x", "label": "maybe"}\n')
    sysdir = pytester.path / "mylogs" / "loghub_2k" / "Mini"
    sysdir.mkdir(parents=True)
    rows = [f"{i},open file f{i},open file <*>" for i in range(1, 6)] + [f"{i},close file f{i},close file <*>" for i in range(6, 11)]
    (sysdir / "Mini_2k.log_structured.csv").write_text("LineId,Content,EventTemplate\n" + "\n".join(rows) + "\n")
    pytester.makepyfile("""
        from loglm.pytest_plugin import assert_parsing

        def test_lines(loglm_data):
            df = loglm_data.labelled("lines.csv")
            assert df.to_dict("list") == {"Content": ["node down", "all good", "fan failure"],
                                          "Label": ["abnormal", "normal", "abnormal"]}

        def test_sessions(loglm_data):
            df = loglm_data.labelled("sessions.jsonl")
            assert df["SessionId"].tolist() == ["s1", "s2"]
            assert df["Lines"].tolist() == [["a", "b"], ["c"]]
            assert df["Label"].tolist() == ["abnormal", "normal"]

        def test_loghub_folder(loglm_data):
            truth = loglm_data.loghub("Mini", "mylogs", limit=8)
            assert len(truth) == 8 and truth["EventTemplateCorrected"].tolist() == truth["EventTemplate"].tolist()
            assert_parsing(truth, truth, min_ga=1.0, min_pa=1.0)

        def test_missing(loglm_data):
            loglm_data.labelled("nowhere.csv")

        def test_bad_label(loglm_data):
            loglm_data.labelled("bad.jsonl")
    """)
    r = run()
    r.assert_outcomes(passed=3, failed=2)
    out = _text(r)
    assert "loglm_data.labelled('nowhere.csv'): labelled data not found:" in out
    assert "bad.jsonl: unknown anomaly label 'maybe'" in out
    _no_plugin_traceback(out)


def test_paper_splits_need_the_data_dir(run, pytester, monkeypatch, data_dir):
    pytester.makepyfile("""
        def test_parsing(loglm_data):
            df = loglm_data.paper("parsing", "HDFS", limit=50)
            assert len(df) == 50
            assert {"Content", "EventTemplate", "EventTemplateCorrected"} <= set(df.columns)

        def test_irs(loglm_data):
            assert len(loglm_data.paper("root_cause", limit=3)) == 3

        def test_unknown_system(loglm_data):
            loglm_data.paper("anomaly", "nosuch")
    """)
    monkeypatch.setenv("LOGLM_DATA_DIR", str(data_dir))
    r = run()
    r.assert_outcomes(passed=2, failed=1)
    assert "loglm_data.paper('anomaly', 'nosuch'): unknown anomaly-detection system 'nosuch'" in _text(r)
    monkeypatch.delenv("LOGLM_DATA_DIR")
    r = run("-rs")
    r.assert_outcomes(skipped=3)
    assert "LOGLM_DATA_DIR is not set" in _text(r)


# ----------------------------------------------------------------------------- the model


def test_model_fixture_follows_the_options(run, pytester):
    pytester.makepyfile("""
        SEEN = []

        def test_base_model(loglm_model):
            assert loglm_model.info["adapter"] == []
            assert loglm_model.info["threads"] == 1
            SEEN.append(id(loglm_model))

        def test_same_model(loglm_model):
            SEEN.append(id(loglm_model))
            assert len(set(SEEN)) == 1  # loaded once per session
    """)
    r = run("--loglm-adapter", "none", "--loglm-threads", "1")
    r.assert_outcomes(passed=2)
    assert "loglm metrics" not in _text(r)  # no metric recorded: no table


def test_missing_model_is_a_clear_error(run, pytester, tmp_path, monkeypatch):
    pytester.makepyfile("def test_m(loglm_model):\n    pass\n")
    missing = tmp_path / "nosuch.gguf"
    r = run("--loglm-model", str(missing))
    r.assert_outcomes(errors=1)
    out = _text(r)
    assert f"loglm_model (--loglm-model={missing}): model not found" in out
    _no_plugin_traceback(out)
    monkeypatch.setenv("LOGLM_MODEL", str(missing))
    r = run()
    r.assert_outcomes(errors=1)
    assert f"loglm_model (LOGLM_MODEL={missing}): model not found" in _text(r)


def test_example_file_passes(run):
    # the README's example, with the repository's own pytest settings (warnings are errors)
    ex = REPO / "examples" / "test_log_quality.py"
    r = run(str(ex), "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), "--loglm-threads", "1")
    outcomes = r.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, _text(r)
    expected = 4 if os.environ.get("LOGLM_DATA_DIR") else 2
    assert outcomes.get("passed", 0) == expected, _text(r)
    out = _text(r)
    assert "model: SmolLM2-135M-Instruct.Q4_1.gguf + smollm2-135m-loglm, threads=1" in out
    assert "flags.accuracy" in out


# ----------------------------------------------------------------------------- entry point


def test_entry_point_autoloads(tmp_path):
    """The pytest11 entry point, as maturin writes it into the package metadata, loads the
    plugin without -p, and naming it with -p as well does not register it twice."""
    maturin = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))
    if not Path(maturin).is_file() or shutil.which("cargo") is None:
        pytest.skip("maturin and cargo are needed to write the package metadata")
    meta = tmp_path / "meta"
    meta.mkdir()
    env = dict(os.environ, CARGO_TARGET_DIR=str(tmp_path / "target"))
    subprocess.run([maturin, "pep517", "write-dist-info", "--metadata-directory", str(meta)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=300)
    eps = next(meta.glob("loglm-*.dist-info")) / "entry_points.txt"
    assert "[pytest11]\nloglm.pytest_plugin=loglm.pytest_plugin" in eps.read_text().replace(" ", "")
    work = tmp_path / "work"
    work.mkdir()
    (work / "test_ep.py").write_text(
        "from loglm.pytest_plugin import record_metric\n\n"
        "def test_ep(loglm_data):\n    record_metric('ep.works', 1.0, minimum=1.0)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(meta), str(REPO / "python")])
    for extra in ([], ["-p", "loglm.pytest_plugin"]):
        p = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error", "--loglm-threads", "1",
                            *extra, "test_ep.py"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "ep.works" in p.stdout
