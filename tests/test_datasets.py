"""Dataset loaders: split sizes and content against the files, download fallback."""
from __future__ import annotations

import hashlib
import json

import pytest

from loglm import datasets as ds
from loglm.prompts import ANOMALY_INSTRUCTION, PARSING_INSTRUCTION


@pytest.fixture(autouse=True)
def _env(data_dir, monkeypatch):
    monkeypatch.setenv("LOGLM_DATA_DIR", str(data_dir))


def test_instruction_set_layout(data_dir):
    df = ds.load_instructions()
    assert len(df) == 2632
    counts = df["capability"].value_counts().to_dict()
    assert counts == {"parsing": 1400, "anomaly_detection": 332, "interpretation": 300,
                      "root_cause": 300, "solution": 300}
    ad = df[df["capability"] == "anomaly_detection"]
    assert (ad["instruction"] == ANOMALY_INSTRUCTION).all() and set(ad["output"]) == {"normal", "abnormal"}
    assert ad["system"].value_counts().to_dict() == {"bgl": 194, "spirit": 138}
    assert (df[df["capability"] == "parsing"]["instruction"] == PARSING_INSTRUCTION).all()
    raw = json.loads((data_dir / "loglm" / "instructions_train.json").read_text(encoding="utf-8"))
    assert df["output"].tolist() == [r["output"] for r in raw]


@pytest.mark.parametrize("task", list(ds.IRS_TASKS))
def test_irs_test_sets(task):
    df = ds.load_irs_test(task)
    assert len(df) == 76 and list(df.columns) == ["instruction", "input", "output"]
    assert df["output"].str.len().min() > 0


@pytest.mark.parametrize("system", ds.SYSTEMS)
def test_parsing_split_reproduces_training_records(system):
    test = ds.load_loghub(system, split="test")
    train = ds.load_loghub(system, split="train")
    assert len(test) == 1800 and len(train) == 200
    assert test["LineId"].iloc[0] == 201 and test["LineId"].iloc[-1] == 2000
    ins = ds.load_instructions(capability="parsing")
    mine = ins[ins["system"] == system]
    assert mine["input"].tolist() == train["Content"].tolist()
    assert mine["output"].tolist() == train["EventTemplate"].tolist()
    # and no test line is a training record of its system (by position, not content)
    assert set(test["LineId"]).isdisjoint(set(train["LineId"]))


@pytest.mark.parametrize("system", ds.SYSTEMS)
def test_parsing_benchmark_has_both_ground_truths(system):
    df = ds.load_parsing(system)
    assert len(df) == 1800
    assert list(df.columns) == ["LineId", "Content", "EventTemplate", "EventTemplateCorrected"]
    assert not (df["Content"].str.contains("\r")).any()


def test_corrected_ground_truth_differs_somewhere():
    n = sum((ds.load_parsing(s)["EventTemplate"] != ds.load_parsing(s)["EventTemplateCorrected"]).sum()
            for s in ("HDFS", "BGL"))
    assert n > 0


def test_anomaly_split_excludes_the_332_training_templates():
    train_all = set(ds.load_instructions(capability="anomaly_detection")["input"])
    assert len(train_all) == 332
    sizes = {}
    for s, n_all, n_train in (("bgl", 1766, 194), ("spirit", 1297, 138)):
        allt = ds.load_logprompt(s)
        test = ds.load_anomaly(s, split="test")
        train = ds.load_anomaly(s, split="train")
        assert len(allt) == n_all and len(train) == n_train
        assert len(test) == n_all - n_train
        assert not test["log"].isin(train_all).any()
        sizes[s] = (len(test), int(test["label"].sum()))
    assert sizes == {"bgl": (1572, 22), "spirit": (1159, 11)}


def test_hdfs_sessions_and_logs():
    s = ds.load_hdfs_sessions()
    assert len(s) == 7940 and (s["Label"] == "Anomaly").sum() == 313
    assert set(s["Split"]) == {"train", "test"}
    assert all(e.startswith("T") for seq in s["EventSequence"][:50] for e in seq)
    assert len(ds.load_hdfs_sessions(split="test")) + len(ds.load_hdfs_sessions(split="train")) == 7940
    assert len(ds.load_hdfs_templates()) == 19
    logs = ds.load_hdfs_logs()
    blocks = logs[logs["Label"] != ""].groupby("BlockId")["Label"].first()
    assert len(blocks) == 110 and (blocks == "Anomaly").sum() == 10


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown system 'Nope'.*HDFS"):
        ds.load_loghub("Nope")
    with pytest.raises(ValueError, match="unknown task"):
        ds.load_irs_test("summary")
    with pytest.raises(ValueError, match="bgl"):
        ds.load_logprompt("hdfs")
    with pytest.raises(ValueError, match="split"):
        ds.load_loghub("HDFS", split="valid")


def test_own_folder_in_loghub_layout_with_crlf_and_bad_bytes(tmp_path):
    d = tmp_path / "loghub_2k" / "MyApp"
    d.mkdir(parents=True)
    rows = [b"LineId,Content,EventId,EventTemplate"]
    for i in range(1, 21):
        rows.append(f"{i},user {i} logged in \xe9,E1,user <*> logged in \xe9".encode("utf-8"))
    rows[5] = b"5,bad \xff byte,E2,bad <*> byte"
    (d / "MyApp_2k.log_structured.csv").write_bytes(b"\r\n".join(rows) + b"\r\n")
    assert ds.loghub_systems(tmp_path) == ["MyApp"]
    df = ds.load_loghub("MyApp", tmp_path, split="test")
    assert len(df) == 18  # 10% of 20 lines are training
    assert not df["Content"].str.contains("\r").any()
    allr = ds.load_loghub("MyApp", tmp_path)
    assert "\ufffd" in allr["Content"].iloc[4] and allr["Content"].iloc[0].endswith("\xe9")
    p = ds.load_parsing("MyApp", tmp_path)  # no corrected file: original used for both
    assert (p["EventTemplate"] == p["EventTemplateCorrected"]).all()


def test_missing_file_under_explicit_root_names_the_source(tmp_path):
    with pytest.raises(ds.DatasetNotFoundError, match="instructions_train.json.*github"):
        ds.load_instructions(tmp_path)
    with pytest.raises(ds.DatasetNotFoundError, match="data folder not found"):
        ds.load_instructions(tmp_path / "absent")


def test_download_offline_error_names_variable_and_url(tmp_path, monkeypatch):
    monkeypatch.delenv("LOGLM_DATA_DIR")
    monkeypatch.setenv("LOGLM_CACHE_DIR", str(tmp_path))

    def offline(url, timeout=30.0):
        raise ds.urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(ds, "_fetch", offline)
    with pytest.raises(ds.DatasetNotFoundError) as e:
        ds.load_irs_test("interpretation")
    msg = str(e.value)
    assert "LOGLM_DATA_DIR" in msg and "https://raw.githubusercontent.com/lunyiliu/LogLM" in msg
    assert not any(tmp_path.rglob("*.json"))


def test_download_checksum_and_atomic_write(tmp_path, monkeypatch, data_dir):
    monkeypatch.delenv("LOGLM_DATA_DIR")
    monkeypatch.setenv("LOGLM_CACHE_DIR", str(tmp_path))
    good = (data_dir / "loglm" / "log_interpretation_test.json").read_bytes()
    assert hashlib.sha256(good).hexdigest() == ds.CHECKSUMS["loglm/log_interpretation_test.json"]
    # a corrupted download (served through a file:// URL) is refused and nothing is written
    bad = tmp_path / "served.json"
    bad.write_bytes(good[:-10])
    rel = "loglm/log_interpretation_test.json"
    with pytest.raises(ValueError, match="checksum mismatch"):
        ds.download(rel, tmp_path / "data", url=bad.as_uri())
    assert not (tmp_path / "data" / rel).exists() and not list((tmp_path / "data").rglob(".part-*"))
    # the right bytes are written and then read from the cache
    calls = []
    monkeypatch.setattr(ds, "_fetch", lambda url, timeout=30.0: calls.append(url) or good)
    assert len(ds.load_irs_test("interpretation")) == 76
    assert (tmp_path / "data" / rel).read_bytes() == good and len(calls) == 1
    assert len(ds.load_irs_test("interpretation")) == 76 and len(calls) == 1  # cached


def test_build_instructions_reproduces_the_training_records(tmp_path):
    ins = ds.load_instructions()
    train = ds.load_loghub("Hadoop", split="train")
    recs = ds.build_instructions(templates=train[["Content", "EventTemplate"]])
    want = ins[(ins["capability"] == "parsing") & (ins["system"] == "Hadoop")]
    assert recs == want[["instruction", "input", "output"]].to_dict(orient="records")
    ad = ds.load_anomaly("spirit", split="train")
    recs = ds.build_instructions(anomalies=zip(ad["log"], ad["label"]))
    assert recs == ins.iloc[900:1038][["instruction", "input", "output"]].to_dict(orient="records")
    qa = ds.load_irs_test("solution").head(3)
    out = tmp_path / "alpaca.json"
    recs = ds.build_instructions(qa=qa, anomalies=[("x failed", "Anomaly"), ("ok", 0)], path=out)
    assert json.loads(out.read_text(encoding="utf-8")) == recs
    assert [r["output"] for r in recs[3:]] == ["abnormal", "normal"]
    with pytest.raises(ValueError, match="unknown anomaly label"):
        ds.build_instructions(anomalies=[("x", "maybe")])
