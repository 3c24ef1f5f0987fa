"""Ray scale-out recipes (loglm.scale) on a 2-worker local cluster: the results must equal
the single-process ones line for line (templates, ids, parameters, anomaly scores)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason='needs the ray extra: pip install "loglm[ray]"')

import loglm  # noqa: E402
from loglm import scale  # noqa: E402
from loglm.datasets import load_loghub  # noqa: E402

N = 400  # lines per system


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module (starting one takes ~20-30 s here)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return loglm.LogLM.load(threads=1)


@pytest.fixture(scope="module")
def lines(data_dir):
    out = []
    for system in ("HDFS", "BGL"):
        out += load_loghub(system, data_dir)["Content"].iloc[:N].tolist()
    return out


@pytest.fixture(scope="module")
def pool(cluster):
    with scale.ModelPool(workers=2, threads=1) as p:
        yield p


def _ds(lines, blocks=4):
    return ray.data.from_items([{"text": x} for x in lines], override_num_blocks=blocks)


def test_import_loglm_does_not_import_ray():
    code = "import sys, loglm, loglm.scale; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_detect_anomalies_dataset_equals_single_process(cluster, model, lines):
    # runs before the module's ModelPool exists: its actors hold both CPUs of the cluster
    sample = lines[:40] + lines[N:N + 40]
    single = model.detect_anomalies(sample)
    dist = scale.detect_anomalies_dataset(_ds(sample), workers=2, threads=1, batch_size=20)
    assert list(dist.columns) == list(single.columns)
    assert dist["Content"].tolist() == single["Content"].tolist()
    assert dist["LineId"].tolist() == single["LineId"].tolist()
    np.testing.assert_allclose(dist["Score"].to_numpy(), single["Score"].to_numpy(), rtol=0, atol=1e-6)
    assert dist["Label"].tolist() == single["Label"].tolist()


def test_pool_answers_equal_one_model(model, pool, lines):
    # a batch split over two actors gives the single model's answers, few-shot examples included
    batch = lines[:3] + lines[N:N + 3]
    examples = [("Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:2",
                 "Receiving block <*> src: <*> dest: <*>")]
    assert pool.propose_templates(batch, examples) == model.propose_templates(batch, examples)
    assert pool.propose_templates([], examples) == []


def test_parse_dataset_equals_single_process(model, pool, lines):
    single = model.parse(lines)
    calls = pool.calls
    dist = scale.parse_dataset(_ds(lines), pool=pool)
    assert pool.calls > calls  # the model was asked through the actors
    assert list(dist.columns) == list(single.columns)
    assert len(dist) == len(single) == 2 * N
    for col in ("LineId", "Content", "EventId", "EventTemplate", "LlmRejected", "NonUtf8"):
        assert dist[col].tolist() == single[col].tolist(), col
    assert [list(p) for p in dist["ParameterList"]] == [list(p) for p in single["ParameterList"]]
    # the ids are the content ids of the templates, so runs anywhere merge on them
    assert all(loglm.template_id(t) == i for t, i in zip(dist["EventTemplate"], dist["EventId"]))
    assert dist["EventId"].nunique() > 5


def test_parse_dataset_recognises_headers_as_model_parse(model, pool, data_dir):
    raw = []
    for system in ("HDFS", "Zookeeper"):
        raw += (data_dir / "loghub_2k" / system / f"{system}_2k.log").read_text().splitlines()[:15]
    raw = raw + ["no header here 1", b"bad \xff byte 2"]
    single = model.parse(raw)
    dist = scale.parse_dataset(_ds(raw, blocks=3), pool=pool)
    assert list(dist.columns) == list(single.columns) and "Timestamp" in dist and "Thread" in dist
    for col in ("LineId", "Timestamp", "Pid", "Level", "Thread", "Component", "Content", "EventTemplate", "NonUtf8"):
        assert dist[col].tolist() == single[col].tolist(), col
    assert dist["NonUtf8"].tolist()[-1] is True and dist["Content"].tolist()[-2] == "no header here 1"
    whole = scale.parse_dataset(_ds(raw[:4], blocks=2), pool=pool, log_format=None)
    assert whole["Content"].tolist() == raw[:4] and "Timestamp" not in whole


def test_parse_dataset_keeps_learning_in_a_miner(pool, lines):
    tm = loglm.TemplateMiner()  # no model: gets the pool
    df = scale.parse_dataset(_ds(lines[:50], blocks=2), pool=pool, miner=tm)
    assert tm.model is pool
    assert tm.counters["lines"] == 50
    assert len(df) == 50


def test_bad_input(cluster, pool):
    ds = _ds(["a", "b"], blocks=1)
    with pytest.raises(ValueError, match="no column 'Content'"):
        scale.parse_dataset(ds, column="Content", pool=pool)
    with pytest.raises(ValueError, match="workers"):
        scale.detect_anomalies_dataset(ds, workers=0)
    with pytest.raises(loglm.InvalidInputError, match="threshold"):
        scale.detect_anomalies_dataset(ds, threshold=2.0)
    with pytest.raises(TypeError, match="model must be"):
        scale.ModelPool(model=3)
    with pytest.raises(loglm.ModelNotFoundError):  # checked before any actor starts
        scale.ModelPool(model="/nonexistent/model.gguf", workers=1)
    with pytest.raises(loglm.ModelNotFoundError):
        scale.detect_anomalies_dataset(ds, model="/nonexistent/model.gguf")
