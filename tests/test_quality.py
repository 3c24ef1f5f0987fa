"""Retrieval of labelled examples and the evidence combined with the model's anomaly
answer (issue 16): the neighbours returned are the right ones, every fitted number
comes from training data only, and the default model flags the quickstart's
disk-full line."""
from __future__ import annotations

import json

import numpy as np
import pytest

import loglm
from loglm.anomaly import (SEVERITY_FIT, AnomalyEvidence, NeighbourEvidence, best_f1_threshold, combine, fit_severity,
                           severity_evidence, severity_hits)
from loglm.errors import InvalidInputError
from loglm.retrieval import ExampleBank

RECORDS = [
    {"task": "interpretation", "instruction": "Interpret the log.", "input": "Disk quota exceeded on /home/alice",
     "output": "The user alice ran out of disk quota."},
    {"task": "interpretation", "instruction": "Interpret the log.", "input": "sshd: Accepted publickey for bob from 10.0.0.2",
     "output": "Bob logged in over SSH with a key."},
    {"task": "root_cause", "instruction": "Find the root cause.", "input": "Disk quota exceeded on /home/carol",
     "output": "Carol's files fill her quota."},
    {"task": "interpretation", "instruction": "Interpret the log.", "input": "kernel: eth0 link is down",
     "output": "The network interface eth0 lost its link."},
]


@pytest.fixture(scope="module")
def bank():
    return ExampleBank(RECORDS)


def test_nearest_returns_the_similar_example_of_the_task(bank):
    near = bank.nearest("Disk quota exceeded on /home/dave", task="interpretation", instruction="Interpret the log.")
    assert [e.input for e in near] == ["Disk quota exceeded on /home/alice"]
    assert 0.5 < near[0].similarity <= 1.0
    # the same query for another task finds that task's example, not the interpretation one
    assert bank.nearest("Disk quota exceeded on /home/dave", task="root_cause")[0].output == "Carol's files fill her quota."
    two = bank.nearest("network link down on eth1", k=2, task="interpretation")
    assert two[0].input == "kernel: eth0 link is down" and two[0].similarity >= two[1].similarity
    # the query's own record is skipped when asked
    own = bank.nearest("kernel: eth0 link is down", task="interpretation", exclude_inputs=["kernel: eth0 link is down"])
    assert own[0].input != "kernel: eth0 link is down"


def test_bank_rejects_bad_input(bank):
    with pytest.raises(InvalidInputError):
        ExampleBank([])
    with pytest.raises(InvalidInputError):
        ExampleBank([{"input": "x"}])
    with pytest.raises(InvalidInputError):
        bank.nearest("x", task="solution")  # no such examples
    with pytest.raises(InvalidInputError):
        bank.nearest("x", k=0)
    with pytest.raises(InvalidInputError):
        bank.similarities("one str, not a list")


def test_training_bank_holds_only_training_records(data_dir):
    from loglm.datasets import load_anomaly

    bank = ExampleBank.from_instructions(data_dir)
    counts = {t: sum(e.task == t for e in bank.examples) for t in bank.tasks()}
    assert counts == {"anomaly_detection": 332, "interpretation": 300, "root_cause": 300, "solution": 300}
    ad = {e.input for e in bank.examples if e.task == "anomaly_detection"}
    for system in ("bgl", "spirit"):
        test = set(load_anomaly(system, data_dir, split="test")["log"])
        assert not ad & test  # no test template can vote for itself


def test_severity_words():
    hits = severity_hits(["java.io.IOException: No space left on device", "Connection from 10.0.4.17 accepted",
                          "terrorist errorless", "java.lang.OutOfMemoryError", "FAILED LOGIN"])
    assert list(hits) == [2, 0, 0, 1, 1]
    ev = severity_evidence(["disk error", "all good"])
    assert ev[0] > 0 > ev[1]  # a hit raises the odds, no hit lowers them
    with pytest.raises(InvalidInputError):
        severity_hits("one str")


def test_severity_fit_is_the_training_fit(data_dir):
    # The shipped constants are exactly what the training templates (records 900-1231) give.
    from loglm.datasets import load_instructions

    d = load_instructions(data_dir, capability="anomaly_detection")
    fit = fit_severity(list(d["input"]), [int(o == "abnormal") for o in d["output"]])
    assert fit == pytest.approx(SEVERITY_FIT, abs=1e-4)


def test_neighbour_evidence_is_fitted_leave_one_out_and_gated():
    rng = np.random.default_rng(0)
    centre_ab, centre_no = rng.normal(size=16), rng.normal(size=16)

    def cloud(c, n):
        v = c + 0.3 * rng.normal(size=(n, 16))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    vecs = np.vstack([cloud(centre_ab, 10), cloud(centre_no, 40)])
    labels = [1] * 10 + [0] * 40
    nb = NeighbourEvidence(vecs, labels)
    assert nb.coef > 0  # a larger margin toward the abnormal examples means more abnormal
    q = np.vstack([cloud(centre_ab, 3), cloud(centre_no, 3)])
    e = nb.evidence(q)
    assert (e[:3] > 0).all() and (e[3:] < 0).all()
    far = -centre_ab - centre_no
    far = (far / np.linalg.norm(far))[None, :]
    assert nb.gate_of(far)[0] == 0.0 and nb.evidence(far)[0] == 0.0  # unlike every example: no vote
    with pytest.raises(InvalidInputError):
        NeighbourEvidence(vecs[:3], [1, 0, 0])  # needs two of each class


def test_exclude_self_keeps_an_examples_own_label_out_of_its_vote():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2, 16))
    vecs = np.vstack([centres[0] + 0.5 * rng.normal(size=(4, 16)), centres[1] + 0.5 * rng.normal(size=(12, 16))])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = [1] * 4 + [0] * 12
    nb = NeighbourEvidence(vecs, labels, gate=(0.0, 0.5))
    assert nb.coef > 0
    own = nb.evidence(vecs)  # each example finds itself at cosine 1 and votes its own label
    fair = nb.evidence(vecs, exclude_self=True)
    assert (own[:4] > fair[:4]).all() and (own[4:] < fair[4:]).all()
    # a fresh copy of a vector is excluded as well: the query is the example
    assert nb.evidence(vecs[:1].copy(), exclude_self=True)[0] == pytest.approx(fair[0])


def test_best_f1_threshold_is_chosen_between_training_scores():
    y = [1, 1, 1, 0, 0, 0, 0, 0]
    s = [0.95, 0.9, 0.2, 0.6, 0.1, 0.05, 0.01, 0.01]
    th, f1 = best_f1_threshold(y, s)
    # flagging the top two gives P 1, R 2/3 (F1 0.8); the top four give P 0.75, R 1 (0.857)
    assert f1 == pytest.approx(6 / 7)
    assert 0.1 < th < 0.2  # halfway in log-odds between the lowest flagged and the next one
    assert ((np.array(s) >= th) == [True, True, True, True, False, False, False, False]).all()
    th2, f2 = best_f1_threshold([1, 0, 0], [0.9, 0.5, 0.5])
    assert f2 == 1.0 and 0.5 < th2 < 0.9
    with pytest.raises(InvalidInputError):
        best_f1_threshold([1, 1], [0.3, 0.4])  # one class only


def test_combine_adds_log_odds():
    assert combine([0.5], [0.0])[0] == pytest.approx(0.5)
    assert combine([0.5], [np.log(3.0)])[0] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def model():
    return loglm.LogLM.load(threads=1)


QUICKSTART_ERROR = ("2024-03-02 10:17:03 ERROR [worker-1] java.io.IOException: No space left on device "
                    "while writing /var/data/seg-0042.log")
ROUTINE = "2024-03-02 10:15:07 INFO  [worker-3] Connection from 10.0.4.17 accepted"


def test_default_model_flags_the_disk_full_line(model):
    df = model.detect_anomalies([QUICKSTART_ERROR, ROUTINE])
    assert list(df["Label"]) == ["abnormal", "normal"]
    alone = model.anomaly_scores([QUICKSTART_ERROR, ROUTINE], evidence=False)
    assert alone[0] < 0.5  # the model alone misses it; the severity evidence is what flags it
    assert df["Score"][0] == pytest.approx(float(combine([alone[0]], severity_evidence([QUICKSTART_ERROR]))[0]))


def test_examples_vote_in_anomaly_scores_and_shots_reach_the_prompt(model):
    labelled = ExampleBank.from_labelled_logs(
        ["ciod: Error reading message prefix on CioStream socket", "ciod: Error loading program image",
         "rts: kernel terminated for reason 1004", "machine check interrupt",
         "instruction cache parity error corrected", "generating core.1234", "ciod: LOGIN chdir(/home) ok",
         "total of 12 ddr error(s) detected and corrected"],
        ["abnormal", "abnormal", "abnormal", "abnormal", "normal", "normal", "normal", "normal"])
    log = "ciod: Error reading message prefix on CioStream socket to 172.16.96.116:33569"
    try:
        model.use_examples(labelled)
        ev = model.anomaly_evidence()
        assert ev.neighbours is not None and len(ev.neighbours.labels) == 8
        with_bank = model.anomaly_score(log)
        model.use_examples(None)
        without = model.anomaly_score(log)
        assert with_bank > without  # its nearest labelled example is abnormal
        model.use_examples(ExampleBank(RECORDS), shots=1, known_answers=None)
        ans = model.interpret("Disk quota exceeded on /home/erin", max_new_tokens=4)
        assert isinstance(ans.prompt, list) and ans.prompt[0]["role"] == "user"
        assert "Disk quota exceeded on /home/alice" in ans.prompt[0]["content"]
        assert ans.prompt[1] == {"role": "assistant", "content": "The user alice ran out of disk quota."}
        with pytest.raises(InvalidInputError):
            model.use_examples("not a bank")
    finally:
        model.use_examples(None)


def test_known_answers_come_from_the_same_log_of_the_same_task(bank):
    same = "Disk quota exceeded on /home/alice"
    got = bank.known_answers([same, "Accepted publickey for bob from 10.0.0.2 port 22 ssh2",
                              "GC pause of 1200 ms in the young generation"], task="interpretation")
    assert got[0].output == "The user alice ran out of disk quota." and got[0].similarity > 0.99
    assert got[2] is None  # a log like none of the examples: no known answer
    # the similarity is of the logs alone; the threshold decides
    assert all(e is None or e.similarity >= 0.8 for e in got)
    loose = bank.known_answers(["GC pause of 1200 ms in the young generation"], task="interpretation", threshold=0.01)
    assert loose[0] is not None  # below the default, something is always nearest
    # another capability answers from its own examples
    assert bank.known_answers(["Disk quota exceeded on /home/carol"], task="root_cause")[0].output == \
        "Carol's files fill her quota."
    for bad in ({"task": "anomaly_detection"}, {"task": "interpretation", "threshold": 0.0},
                {"task": "interpretation", "threshold": 1.5}, {"task": "interpretation", "threshold": True}):
        with pytest.raises(InvalidInputError):
            bank.known_answers(["x"], **bad)
    with pytest.raises(InvalidInputError):
        bank.known_answers(["x"], task="solution")  # the bank has no solution examples


def test_bank_from_a_json_or_json_lines_file(tmp_path):
    recs = [{"input": "Disk quota exceeded on /home/alice", "output": "Raise the quota."},
            {"task": "solution", "input": "eth0 link is down", "output": "Check the cable."}]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in recs).encode() + b"\r\n\r\n")
    for name in ("a.json", "a.jsonl"):
        bank = ExampleBank.from_file(tmp_path / name, task="root_cause")
        assert [(e.task, e.output) for e in bank.examples] == [("root_cause", "Raise the quota."),
                                                                ("solution", "Check the cable.")]
    bad = {"not-list.json": b'{"input": "x"}', "latin1.jsonl": b'{"input": "caf\xe9", "output": "y"}',
           "broken.json": b'[{"input": "x",', "empty.json": b"", "deep.json": b"[" * 100000,
           "no-output.jsonl": b'{"input": "x"}'}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InvalidInputError):
            ExampleBank.from_file(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        ExampleBank.from_file(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError):
        ExampleBank.from_file(tmp_path)  # a folder is no examples file


def test_helpers_return_a_known_answer_as_such_and_generate_otherwise(model):
    log = "Disk quota exceeded on /home/alice"
    try:
        model.use_examples(ExampleBank(RECORDS))
        assert model.known_answer_similarity == pytest.approx(loglm.retrieval.KNOWN_ANSWER_SIMILARITY)
        ans = model.interpret(log)
        assert ans == "The user alice ran out of disk quota." and ans.source == "example"
        assert ans.example.input == log and ans.example.similarity > 0.99
        assert ans.result.finish_reason == "known_answer" and ans.result.completion_tokens == 0
        with model.interpret(log, stream=True) as s:
            assert "".join(s) == "The user alice ran out of disk quota."
        assert s.source == "example" and s.result.finish_reason == "known_answer" and s.finished
        assert model.root_cause("Disk quota exceeded on /home/carol") == "Carol's files fill her quota."
        other = model.interpret("GC pause of 1200 ms in the young generation", max_new_tokens=4)
        assert other.source == "model" and other.example is None and other.result.completion_tokens > 0
        assert model.suggest_solution(log, max_new_tokens=4).source == "model"  # no solution examples
        model.use_examples(ExampleBank(RECORDS), known_answers=None)
        assert model.interpret(log, max_new_tokens=4).source == "model"
        assert model.known_answers("interpretation", [log]) == [None]
        for bad in (0, 1.5, "0.8", True):
            with pytest.raises(InvalidInputError):
                model.use_examples(ExampleBank(RECORDS), known_answers=bad)
    finally:
        model.use_examples(None)
    assert model.known_answers("root_cause", [log]) == [None]  # no bank: never


def test_irs_scoring_uses_known_answers_only_with_a_bank(model):
    import pandas as pd

    from loglm.evaluate import score_irs

    df = pd.DataFrame([{"instruction": "Interpret the log.", "input": "Disk quota exceeded on /home/alice",
                        "output": "The user alice ran out of disk quota."},
                       {"instruction": "Interpret the log.", "input": "GC pause of 1200 ms in the young generation",
                        "output": "The JVM paused for garbage collection."}])
    try:
        model.use_examples(ExampleBank(RECORDS))
        row = score_irs(model, df, "interpretation", max_new_tokens=8, keep_outputs=True)
        assert row["known_answers"] == 1 and row["sources"] == ["example", "model"]
        assert row["outputs"][0] == "The user alice ran out of disk quota."
        model.use_examples(None)
        row = score_irs(model, df, "interpretation", max_new_tokens=8, keep_outputs=True)
        assert row["known_answers"] == 0 and row["sources"] == ["model", "model"]
    finally:
        model.use_examples(None)


def test_trim_to_words_keeps_whole_sentences():
    from loglm.answers import trim_to_words

    text = "One two three. Four five six. Seven eight."
    assert trim_to_words(text, 6) == "One two three. Four five six."
    assert trim_to_words(text, 2) == "One two three."  # the first sentence is kept whole
    assert trim_to_words(text, 100) == text and trim_to_words(text, None) == text
    assert trim_to_words("A b. C d.\n\nE f g.", 4) == "A b. C d."
    with pytest.raises(InvalidInputError):
        trim_to_words(text, 0)


def test_free_text_answers_are_cut_to_the_default_length(model):
    from loglm.tasks import ANSWER_WORDS

    line = "ERROR [main] java.io.IOException: No space left on device"
    full = model.interpret(line, max_new_tokens=160, max_words=None)
    cut = model.interpret(line, max_new_tokens=160)
    assert full.result.text.strip().startswith(cut.strip()[: len(cut.strip()) // 2])  # same answer, shorter
    n = ANSWER_WORDS["interpret"]
    assert len(cut.split()) <= max(n, len(full.split(".")[0].split()) + 1)
    tiny = model.root_cause(line, max_new_tokens=160, max_words=5)
    assert len(tiny.split()) <= len(full.split()) and tiny.rstrip()[-1:] in ".!?" or len(tiny.split()) == len(full.split())
