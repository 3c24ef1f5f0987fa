"""Quality gates on log analysis, written as ordinary pytest tests with loglm's plugin.

    pytest examples/test_log_quality.py                          # the default model
    pytest examples/test_log_quality.py --loglm-adapter my-adapter --loglm-threads 2
    pytest examples/test_log_quality.py --loglm-save-baseline    # store today's figures,
    pytest examples/test_log_quality.py                          # then fail on a drop

The plugin is active once loglm is installed; from a source checkout add
``-p loglm.pytest_plugin``. The paper's splits are read from ``LOGLM_DATA_DIR`` (those
tests are skipped when it is not set). Each gate prints the figures it measured in the
"loglm metrics" table at the end of the run and as JUnit properties (``--junitxml``).
"""
from loglm import TemplateMiner
from loglm.pytest_plugin import assert_flags, assert_parsing, assert_text_scores

# Lines an on-call engineer must be alerted about, and routine lines that must stay quiet.
INCIDENTS = [
    "ciod: failed to read message prefix on control stream (CioStream socket to 172.16.96.116:33569",
    "KERNEL FATAL: data TLB error interrupt",
    "ERROR: disk /dev/sda1 failure, I/O error on device",
]
ROUTINE = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
    "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
    "session opened for user root by (uid=0)",
]


def test_incidents_are_flagged(loglm_model):
    # every line labelled as expected, else the failure lists the missed and the
    # wrongly flagged lines with their P(abnormal)
    assert_flags(loglm_model, INCIDENTS + ROUTINE, [True] * len(INCIDENTS) + [False] * len(ROUTINE))


def test_labelled_sessions(loglm_model, loglm_data):
    # a JSONL file of sessions next to this test: {"session", "label", "lines": [...]}
    sessions = loglm_data.labelled("data/incident_sessions.jsonl")
    assert_flags(loglm_model, sessions, min_recall=1.0, min_precision=1.0, name="sessions")


def test_template_tree_parsing(loglm_data):
    # the template tree alone (no model) on the first 300 HDFS test lines of the paper
    truth = loglm_data.paper("parsing", "HDFS", limit=300)
    parsed = TemplateMiner().parse(truth["Content"].tolist())
    assert_parsing(parsed, truth, min_ga=0.95, min_pa=0.8)


def test_interpretation_is_on_topic(loglm_model, loglm_data):
    # a floor that catches a broken model or prompt (empty or unrelated answers)
    pairs = loglm_data.paper("interpretation", limit=2)
    answers = [loglm_model.interpret(log, max_new_tokens=48) for log in pairs["input"]]
    assert_text_scores(answers, pairs["output"], min_rouge_l=15.0)
