"""Loaders of the LogLM benchmarks, reproducing the paper's splits exactly.

Data location, in order: the ``root=`` argument; the ``LOGLM_DATA_DIR`` environment
variable; else ``~/.cache/loglm/data`` (``LOGLM_CACHE_DIR``/data), filled on first use by
downloading the files from their public source repositories (sha256-checked, written
atomically). Any folder with the same layout works (``loghub_2k/<System>/<System>_2k.log_structured.csv``
...), so systems of your own can be evaluated.

Splits (see the datasets README):

* parsing -- per loghub-2k system, the chronologically first 10% (200 lines) are
  training data (records 1232-2631 of the instruction set), the last 90% (1,800) test;
* anomaly detection -- records 900-1231 (138 Spirit, then 194 BGL templates) are
  training; every LogPrompt template not among them is test (1,572 BGL, 1,159 Spirit);
* interpretation / root cause / solution -- records 0-299 / 300-599 / 600-899 are
  training; the three ``*_test.json`` files (76 pairs each) are test.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from loglm.errors import DatasetNotFoundError, InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SYSTEMS", "IRS_TASKS", "DatasetNotFoundError", "data_root", "dataset_file",
    "load_instructions", "load_irs_test", "load_loghub", "load_parsing", "loghub_systems",
    "load_logprompt", "load_anomaly", "load_hdfs_sessions", "load_hdfs_templates", "load_hdfs_logs",
    "build_instructions",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The seven loghub-2k systems of the LogLM paper, in the order of the instruction set.
SYSTEMS = ["HDFS", "Hadoop", "Zookeeper", "BGL", "HPC", "Linux", "Proxifier"]
#: The three free-text capabilities and their test files.
IRS_TASKS = {
    "interpretation": "loglm/log_interpretation_test.json",
    "root_cause": "loglm/root_cause_analysis_test.json",
    "solution": "loglm/solution_recommendation_test.json",
}
_IRS_TRAIN = {"interpretation": (0, 300), "root_cause": (300, 600), "solution": (600, 900)}
_AD_TRAIN = {"spirit": (900, 1038), "bgl": (1038, 1232)}
_PARSING_TRAIN_START = 1232
_TRAIN_LINES = 200

_LOGLM_RAW = "https://raw.githubusercontent.com/lunyiliu/LogLM/main/"
_LOGHUB_RAW = "https://raw.githubusercontent.com/logpai/loghub/master/"
_LOGPARSER_RAW = "https://raw.githubusercontent.com/logpai/logparser/main/data/loghub_2k_corrected/"
_LOGPROMPT_RAW = "https://raw.githubusercontent.com/lunyiliu/LogPrompt/main/"
_DEEPLOG_RAW = "https://raw.githubusercontent.com/logpai/deep-loglizer/main/data/processed/HDFS_100k/"
_LOGAI_RAW = "https://raw.githubusercontent.com/salesforce/logai/main/examples/datasets/"

#: relative path -> sha256 of the files the loaders read.
CHECKSUMS: Dict[str, str] = {
    "hdfs/HDFS_100k_sessions.csv": "070662a439a918b39f482052745483c622b1b4f9c564f87629d0c3d71dcbd249",
    "hdfs/HDFS_100k_templates.csv": "702e583f0790b1a92fad7d85eedd00ea1e93284cd9e7dea6d5dd4cb79f9aa0bf",
    "hdfs/HDFS_5k.log": "b26f8ac0b08c3bdd678f377776084b76b57298b1ef4a50d2a3306937cb616a3f",
    "hdfs/HDFS_5k.log_block_labels.csv": "31ea1910090bc3f7a21b83f15e20a2150ea565e0a22597f3fca593dada2a5908",
    "loghub_2k/BGL/BGL_2k.log": "2a819ea540909db682005c9cf948387a40729b5c2e9f19d430e29ce704825496",
    "loghub_2k/BGL/BGL_2k.log_structured.csv": "3fe74103c0b02a28514534e2a47257a3f770135ca61afd425bbd3b9d6a31fe26",
    "loghub_2k/HDFS/HDFS_2k.log": "7c967000980c086ed55fa6544ba4f05fe66d44622795e890c68caf8bbb635035",
    "loghub_2k/HDFS/HDFS_2k.log_structured.csv": "729df59774e3dde934044028546d2a55d5e3d4370b9d12fcebbe4c087b2bf7b4",
    "loghub_2k/HPC/HPC_2k.log": "826e5957b461e65780a8bda5c186c2fcf90fd6c1863721ef9c1ccfa9ada86f88",
    "loghub_2k/HPC/HPC_2k.log_structured.csv": "0787df9cfab7e9495669548315ea8a9a51b02029c0dcfa28944707ad755a8c86",
    "loghub_2k/Hadoop/Hadoop_2k.log": "9ecaeb807d50d5fb5a20982ea66f1c8d32545259a51ce7456c1ab78db0509732",
    "loghub_2k/Hadoop/Hadoop_2k.log_structured.csv": "e88e5bf99d7f23f482517cc79290ad75b90d914af5d6114176e8bbf0f8ae0fad",
    "loghub_2k/Linux/Linux_2k.log": "b3e20bc1afe732ab1bf3ed1de4bf9c809e4194e02f7dea911d918e5342e8e173",
    "loghub_2k/Linux/Linux_2k.log_structured.csv": "7c86d7b0ecb961a25f00d9475a154df97613b9974f31ce142a146caa2017c71e",
    "loghub_2k/Proxifier/Proxifier_2k.log": "94b6a9d98d76e7ad7841ed10caa463cd4e638a229b92a220a2bf1707552adbb9",
    "loghub_2k/Proxifier/Proxifier_2k.log_structured.csv": "5aa88821bb217d82c3a964cbe9fdb0d67f235b0538ac164ef0a87e0ced4f2715",
    "loghub_2k/Zookeeper/Zookeeper_2k.log": "e40e0af5ef9eb6e4097200f260b9d1f626b3676f861a432e87977242e75543d8",
    "loghub_2k/Zookeeper/Zookeeper_2k.log_structured.csv": "e4a450c67595828103cfab049d971f54eee778fdded061222ba6581bed2a210a",
    "loghub_2k_corrected/BGL/BGL_2k.log_structured_corrected.csv": "af25e46fa90396048e88cde40a0ffbe52232f72a6a3cf7f5c00ab6b2a1d49a85",
    "loghub_2k_corrected/BGL/BGL_2k.log_templates_corrected.csv": "886127bd0deca2d6bcedfbc9c41715b7b5df2eddfbde4fe7afd7398baa18961c",
    "loghub_2k_corrected/HDFS/HDFS_2k.log_structured_corrected.csv": "3e81e0a895615122aef4d598e91bf8ce053ce7c47e4b4f9cabc45ab9c7dfa9a6",
    "loghub_2k_corrected/HDFS/HDFS_2k.log_templates_corrected.csv": "fe30edb74d41367bb25a4550b5eb04f66583f37c958176770ee00ab966dd7d0e",
    "loghub_2k_corrected/HPC/HPC_2k.log_structured_corrected.csv": "e4c944f1d8a9c76799f8b00d54afb4df7ce7a1233e0ccd7f6cd25c50c61f72bf",
    "loghub_2k_corrected/HPC/HPC_2k.log_templates_corrected.csv": "40b20a92e28651eb7babc643873fe50b50fe9300a488f78a27e516b01847fe50",
    "loghub_2k_corrected/Hadoop/Hadoop_2k.log_structured_corrected.csv": "0d81d66a9ec7118dba9252c9ea59f746e6eff32f8fb75d9437694bbf1fd5ceb2",
    "loghub_2k_corrected/Hadoop/Hadoop_2k.log_templates_corrected.csv": "fcd72ff0478162fd7807ea0bccc03a44f4910497610a152e24ddeaa447f197c9",
    "loghub_2k_corrected/Linux/Linux_2k.log_structured_corrected.csv": "6af96d60b2ecd872797cedc32b6d3795a3083d5ab0ca36198206fd4aae14cfca",
    "loghub_2k_corrected/Linux/Linux_2k.log_templates_corrected.csv": "5ee85807c137d8ac66c8806ac712c3e8253a4d8eb26a442da2aca1e6295f46c4",
    "loghub_2k_corrected/Proxifier/Proxifier_2k.log_structured_corrected.csv": "ddfcaa5aee9d5ea48734aff0ca093b23b655f70e9b38532c983224b08759bb26",
    "loghub_2k_corrected/Proxifier/Proxifier_2k.log_templates_corrected.csv": "22472ceeabce5e4a0df27df7d340ecc5378f4714db5877f16700d563d801ed69",
    "loghub_2k_corrected/Zookeeper/Zookeeper_2k.log_structured_corrected.csv": "099a7a6d941846f958fe5287ff14968d9fa874f09c7d133a0aae29200dc34d61",
    "loghub_2k_corrected/Zookeeper/Zookeeper_2k.log_templates_corrected.csv": "8813ba957fa0fe2fbbfcde4e7a935a332e137cf7ae0c7afcbf704192dbd2e0cd",
    "loglm/instructions_train.json": "d575da0d529f4f57c76d022867650e3bdf973de1f2637876275fc35687b54d4e",
    "loglm/log_interpretation_test.json": "f6fa787445234992902d1b9bf38c0a27fea5657608cf9eefc52235ad414b4784",
    "loglm/root_cause_analysis_test.json": "f1abac92ee554dc27caf10cb829401a5de6528147ecc660dd0ed7313aa597753",
    "loglm/solution_recommendation_test.json": "2e0ac090909fb1b1cc1feb05ad81e8dff3a40d198809a167b761927f742a75fc",
    "logprompt/templates_bgl.csv": "4b4b0473abdc58d032392feb65c9827d3d67fdb8d4218d8f2028368f57c89008",
    "logprompt/templates_spirit.csv": "13aab4997f82f6acec6ba40841cee4017ad7de1603bc00ae27b2e55c17df67c2",
}


def _url(rel: str) -> str:
    """Public source URL of a dataset file."""
    top, _, rest = rel.partition("/")
    if top == "loglm":
        if rel.endswith("instructions_train.json"):
            return _LOGLM_RAW + "Instruction%20Dataset%20of%20LogLM.json"
        return _LOGLM_RAW + "test%20set/" + rest
    if top == "loghub_2k":
        return _LOGHUB_RAW + rest
    if top == "loghub_2k_corrected":
        return _LOGPARSER_RAW + rest
    if top == "logprompt":
        return _LOGPROMPT_RAW + rest
    if top == "hdfs":
        return (_LOGAI_RAW + "HDFS/" + rest) if rest.startswith("HDFS_5k") else _DEEPLOG_RAW + rest
    raise InvalidInputError(f"no known source for {rel}")


def _cache_root() -> Path:
    env = os.environ.get("LOGLM_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "loglm"
    return base / "data"


def data_root(root: Optional[PathLike] = None) -> Tuple[Path, bool]:
    """The data folder and whether it is the download cache: ``root``, else
    ``LOGLM_DATA_DIR``, else the cache folder. An explicit folder must exist."""
    if root is not None:
        p = Path(os.fspath(root))
        if not p.is_dir():
            raise DatasetNotFoundError(f"data folder not found: {p}")
        return p, False
    env = os.environ.get("LOGLM_DATA_DIR")
    if env:
        p = Path(env)
        if not p.is_dir():
            raise DatasetNotFoundError(f"LOGLM_DATA_DIR={env} is not a folder")
        return p, False
    return _cache_root(), True


def _fetch(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (https URLs of public repos)
        return r.read()


def download(rel: str, dest_root: Path, *, fetch: Optional[Callable[[str], bytes]] = None,
             url: Optional[str] = None) -> Path:
    """Download one dataset file into ``dest_root/rel``: sha256-checked against
    :data:`CHECKSUMS` when known, written atomically (temporary file + rename).

    Raises:
        DatasetNotFoundError: offline / unreachable, naming ``LOGLM_DATA_DIR`` and the URL.
        ValueError: checksum mismatch (nothing is written).
    """
    src = url or _url(rel)
    try:
        data = (fetch or _fetch)(src)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DatasetNotFoundError(
            f"dataset file {rel!r} is not available locally and could not be downloaded from "
            f"{src} ({e}). Set LOGLM_DATA_DIR to a folder with the datasets (or pass root=)."
        ) from None
    want = CHECKSUMS.get(rel)
    got = hashlib.sha256(data).hexdigest()
    if want is not None and got != want:
        raise InvalidInputError(f"checksum mismatch for {rel} downloaded from {src}: sha256 {got}, expected {want}")
    dest = dest_root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def dataset_file(rel: str, root: Optional[PathLike] = None) -> Path:
    """Path of a dataset file (``"loglm/instructions_train.json"``...), downloading it into
    the cache when no data folder is configured."""
    base, is_cache = data_root(root)
    p = base / rel
    if p.is_file():
        return p
    if not is_cache:
        where = "root" if root is not None else "LOGLM_DATA_DIR"
        raise DatasetNotFoundError(
            f"{rel} not found under {base} ({where}); expected the layout of the LogLM datasets "
            f"(source: {_url(rel) if rel.split('/')[0] in ('loglm', 'loghub_2k', 'loghub_2k_corrected', 'logprompt', 'hdfs') else 'your own files'})"
        )
    return download(rel, base)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def _read_csv(path: Path, **kw: Any) -> Any:
    import pandas as pd

    return pd.read_csv(io.StringIO(_read_text(path)), keep_default_na=False, dtype=str, **kw)


# ------------------------------------------------------------------ instruction set

def _capability(i: int) -> Tuple[str, str]:
    for name, (a, b) in _IRS_TRAIN.items():
        if a <= i < b:
            return name, ""
    for name, (a, b) in _AD_TRAIN.items():
        if a <= i < b:
            return "anomaly_detection", name
    k = (i - _PARSING_TRAIN_START) // _TRAIN_LINES
    return "parsing", SYSTEMS[k] if 0 <= k < len(SYSTEMS) else ""


def load_instructions(root: Optional[PathLike] = None, *, capability: Optional[str] = None) -> "pd.DataFrame":
    """The LogLM instruction (training) set: DataFrame with instruction, input, output,
    capability (interpretation, root_cause, solution, anomaly_detection, parsing) and
    system (Spirit/BGL for anomaly detection, the loghub system for parsing), 2,632 rows;
    ``capability`` keeps one capability."""
    import pandas as pd

    recs = json.loads(_read_text(dataset_file("loglm/instructions_train.json", root)))
    df = pd.DataFrame(recs, columns=["instruction", "input", "output"])
    caps = [_capability(i) for i in range(len(df))]
    df["capability"] = [c for c, _ in caps]
    df["system"] = [s for _, s in caps]
    if capability is not None:
        names = set(df["capability"])
        if capability not in names:
            raise InvalidInputError(f"unknown capability {capability!r}; expected one of {sorted(names)}")
        df = df[df["capability"] == capability]
    return df


def load_irs_test(task: str, root: Optional[PathLike] = None) -> "pd.DataFrame":
    """Test set of a free-text capability (``"interpretation"``, ``"root_cause"``,
    ``"solution"``): DataFrame with instruction, input, output (76 rows each)."""
    import pandas as pd

    if task not in IRS_TASKS:
        raise InvalidInputError(f"unknown task {task!r}; expected one of {list(IRS_TASKS)}")
    recs = json.loads(_read_text(dataset_file(IRS_TASKS[task], root)))
    return pd.DataFrame(recs, columns=["instruction", "input", "output"])


# ------------------------------------------------------------------ loghub

def loghub_systems(root: Optional[PathLike] = None) -> List[str]:
    """Systems present under ``loghub_2k`` of the data folder (the paper's seven first)."""
    base, is_cache = data_root(root)
    d = base / "loghub_2k"
    found = sorted(p.name for p in d.iterdir() if (p / f"{p.name}_2k.log_structured.csv").is_file()) if d.is_dir() else []
    if is_cache and not found:
        return list(SYSTEMS)
    return [s for s in SYSTEMS if s in found] + [s for s in found if s not in SYSTEMS]


def _check_system(system: str, root: Optional[PathLike]) -> None:
    known = loghub_systems(root)
    if system not in known:
        raise InvalidInputError(f"unknown system {system!r}; available: {', '.join(known)}")


def _split(df: Any, split: str, train_lines: Optional[int]) -> Any:
    n_train = _TRAIN_LINES if train_lines is None else train_lines
    if split == "all":
        return df
    if split == "train":
        return df.iloc[:n_train].reset_index(drop=True)
    if split == "test":
        return df.iloc[n_train:].reset_index(drop=True)
    raise InvalidInputError(f"split must be 'train', 'test' or 'all', not {split!r}")


def load_loghub(system: str, root: Optional[PathLike] = None, *, corrected: bool = False,
                split: str = "all") -> "pd.DataFrame":
    """A loghub-2k structured file as a DataFrame (LineId, header columns, Content,
    EventId, EventTemplate; all str except LineId). ``corrected`` reads the corrected
    ground truth (``loghub_2k_corrected``); ``split`` is ``"train"`` (first 10%: 200
    lines), ``"test"`` (last 90%: 1,800) or ``"all"``. CRLF, BOM and stray bytes are
    handled (invalid UTF-8 becomes U+FFFD)."""
    _check_system(system, root)
    rel = (f"loghub_2k_corrected/{system}/{system}_2k.log_structured_corrected.csv" if corrected
           else f"loghub_2k/{system}/{system}_2k.log_structured.csv")
    df = _read_csv(dataset_file(rel, root))
    missing = {"Content", "EventTemplate"} - set(df.columns)
    if missing:
        raise InvalidInputError(f"{rel} lacks columns {sorted(missing)}")
    if "LineId" in df:
        df["LineId"] = df["LineId"].astype(int)
    n_train = max(1, round(len(df) * 0.1)) if len(df) != 2000 else _TRAIN_LINES
    return _split(df, split, n_train)


def load_parsing(system: str, root: Optional[PathLike] = None, *, split: str = "test") -> "pd.DataFrame":
    """Parsing benchmark of one system: LineId, Content, EventTemplate (original ground
    truth, for RandIndex and variable F1) and EventTemplateCorrected (for GA, FGA, PA,
    FTA; equal to the original when the system has no corrected file)."""
    orig = load_loghub(system, root, split=split)
    out = orig[["LineId", "Content", "EventTemplate"]].copy()
    try:
        corr = load_loghub(system, root, corrected=True, split=split)
    except DatasetNotFoundError:
        out["EventTemplateCorrected"] = out["EventTemplate"]
        return out
    if len(corr) != len(orig) or not (corr["Content"].str.strip() == orig["Content"].str.strip()).all():
        raise InvalidInputError(f"{system}: original and corrected ground truth have different lines")
    out["EventTemplateCorrected"] = corr["EventTemplate"].to_numpy()
    return out


# ------------------------------------------------------------------ anomaly detection

def load_logprompt(system: str, root: Optional[PathLike] = None) -> "pd.DataFrame":
    """All LogPrompt templates of ``"bgl"`` or ``"spirit"``: log, label (0/1), Label
    (``"normal"``/``"abnormal"``)."""
    s = system.lower()
    if s not in _AD_TRAIN:
        raise InvalidInputError(f"unknown anomaly-detection system {system!r}; expected 'bgl' or 'spirit'")
    df = _read_csv(dataset_file(f"logprompt/templates_{s}.csv", root))
    df["label"] = df["label"].astype(int)
    df["Label"] = df["label"].map({0: "normal", 1: "abnormal"})
    return df


def load_anomaly(system: str, root: Optional[PathLike] = None, *, split: str = "test") -> "pd.DataFrame":
    """Template-level anomaly detection of the paper: ``split="train"`` is the 138 Spirit /
    194 BGL templates of the instruction set (records 900-1231), ``"test"`` every
    LogPrompt template of the system not among the 332 training templates (1,572 BGL,
    1,159 Spirit). Columns: log, label, Label."""
    import pandas as pd

    s = system.lower()
    allt = load_logprompt(s, root)
    ins = load_instructions(root, capability="anomaly_detection")
    train_logs = set(ins["input"])
    if split == "train":
        a, b = _AD_TRAIN[s]
        tr = ins.loc[a:b - 1]
        return pd.DataFrame({"log": tr["input"].to_numpy(), "label": (tr["output"] == "abnormal").astype(int).to_numpy(),
                             "Label": tr["output"].to_numpy()})
    if split == "test":
        return allt[~allt["log"].isin(train_logs)].reset_index(drop=True)
    if split == "all":
        return allt
    raise InvalidInputError(f"split must be 'train', 'test' or 'all', not {split!r}")


def load_hdfs_sessions(root: Optional[PathLike] = None, *, split: Optional[str] = None) -> "pd.DataFrame":
    """HDFS block sessions (deep-loglizer HDFS_100k): BlockId, Label (Normal/Anomaly),
    Split (train/test), EventSequence (list of T1...T19); ``split`` filters."""
    df = _read_csv(dataset_file("hdfs/HDFS_100k_sessions.csv", root))
    df["EventSequence"] = df["EventSequence"].str.split()
    if split is not None:
        if split not in ("train", "test"):
            raise InvalidInputError(f"split must be 'train' or 'test', not {split!r}")
        df = df[df["Split"] == split].reset_index(drop=True)
    return df


def load_hdfs_templates(root: Optional[PathLike] = None) -> "pd.DataFrame":
    """The 19 HDFS templates behind T1...T19: EventId, EventTemplate."""
    return _read_csv(dataset_file("hdfs/HDFS_100k_templates.csv", root))


def load_hdfs_logs(root: Optional[PathLike] = None) -> "pd.DataFrame":
    """Raw HDFS lines (HDFS_5k.log) with the block they touch and its label: LineId,
    Content (the whole line), BlockId (first ``blk_`` id), Label (Normal/Anomaly, empty
    when the line names no labelled block)."""
    import re

    import pandas as pd

    lines = _read_text(dataset_file("hdfs/HDFS_5k.log", root)).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    labels = _read_csv(dataset_file("hdfs/HDFS_5k.log_block_labels.csv", root))
    lab = dict(zip(labels["BlockId"], labels["Label"]))
    blk = [(m.group(0) if (m := re.search(r"blk_-?\d+", x)) else "") for x in lines]
    return pd.DataFrame({"LineId": range(1, len(lines) + 1), "Content": lines, "BlockId": blk,
                         "Label": [lab.get(b, "") for b in blk]})


# ------------------------------------------------------------------ instruction building

def _pairs(obj: Any, cols: Sequence[str]) -> List[Tuple[Any, ...]]:
    if obj is None:
        return []
    if hasattr(obj, "columns"):
        for want in (cols,):
            if all(c in obj.columns for c in want):
                return list(zip(*(obj[c].tolist() for c in want)))
        return list(obj.itertuples(index=False, name=None))
    return [tuple(x) for x in obj]


def _label(v: Any) -> str:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("abnormal", "anomaly", "anomalous", "1", "true", "-", "yes"):
            return "abnormal"
        if s in ("normal", "0", "false", "no"):
            return "normal"
        raise InvalidInputError(f"unknown anomaly label {v!r}")
    return "abnormal" if bool(v) else "normal"


def build_instructions(*, templates: Any = None, anomalies: Any = None, qa: Any = None,
                       path: Optional[PathLike] = None) -> List[Dict[str, str]]:
    """Instruction pairs in the Alpaca JSON format (``instruction``, ``input``,
    ``output``) that LLaMA-Factory and PEFT trainers read -- the paper's data
    construction step.

    * ``templates``: ``(log, template)`` pairs (or a DataFrame with Content and
      EventTemplate) -> the parsing instruction;
    * ``anomalies``: ``(log, label)`` pairs (label bool/int, or "normal"/"abnormal"/
      "Anomaly"...; or a DataFrame with log and label) -> the anomaly instruction;
    * ``qa``: ``(instruction, input, output)`` triplets (interpretation, root cause,
      solution Q&A) kept as given.

    Records come in the order parsing-free Q&A, anomaly, parsing (the training set's
    order). ``path`` also writes the list as JSON (UTF-8, indented).
    """
    from loglm.prompts import ANOMALY_INSTRUCTION, PARSING_INSTRUCTION

    out: List[Dict[str, str]] = []
    for ins, inp, outp in _pairs(qa, ["instruction", "input", "output"]):
        out.append({"instruction": str(ins), "input": str(inp), "output": str(outp)})
    for log, lab in _pairs(anomalies, ["log", "label"]):
        out.append({"instruction": ANOMALY_INSTRUCTION, "input": str(log), "output": _label(lab)})
    for log, tmpl in _pairs(templates, ["Content", "EventTemplate"]):
        out.append({"instruction": PARSING_INSTRUCTION, "input": str(log), "output": str(tmpl)})
    if path is not None:
        Path(os.fspath(path)).write_text(json.dumps(out, ensure_ascii=False, indent=2), encoding="utf-8")
    return out
