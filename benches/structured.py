"""Decode speed with the constrained-decoding masks against plain decoding (issue 17).

    RAYON_NUM_THREADS=1 python benches/structured.py [--threads 1] [--tokens 64] [--repeat 3]

One prompt, greedy, ``--tokens`` tokens with end-of-sequence ignored, on the default
model: plain, JSON mode (``json_object``), a small schema, and a hostile schema (an enum
of 256 strings sharing a 200-byte prefix, the most the compiler takes), whose mask must
not cost more than a small one. With end-of-sequence ignored, a document that is
complete before ``--tokens`` leaves only end-of-sequence allowed, and every later step
computes the full mask: the figures are the masks' worst case, not their usual cost (the
sampler first tries the token it would choose, and masks only when that one is refused).
The configurations run in ``--repeat`` rounds, each
round taking every one of them in turn (the same load on a shared machine); each figure
is the best of its rounds.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Tuple

from loglm import LogLM

LINE = "kernel: EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm bash: reading directory"
SMALL = {"type": "object", "properties": {"summary": {"type": "string"}, "severity": {"enum": ["low", "high"]}},
         "required": ["summary", "severity"]}
HOSTILE = {"type": "object", "properties": {
    "code": {"enum": [("x" * 200) + str(i) for i in range(256)]},
    "summary": {"type": "string"}}, "required": ["code", "summary"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    m = LogLM.load(threads=a.threads)
    chat = [{"role": "user", "content": "Summarise this log line as JSON with a long summary: " + LINE}]
    configs: List[Tuple[str, Dict[str, Any]]] = [("plain", {}), ("json_object", {"json_object": True}),
                                                 ("json_schema (small)", {"json_schema": SMALL}),
                                                 ("json_schema (hostile enum)", {"json_schema": HOSTILE})]
    best: Dict[str, float] = {}
    for _ in range(a.repeat):
        for name, kw in configs:
            _, st = m.generate(chat, max_new_tokens=a.tokens, ignore_eos=True, return_stats=True, **kw)
            best[name] = max(best.get(name, 0.0), st.decode_tokens_per_s)
    print("| decoding | decode tok/s (best of %d) | vs plain |" % a.repeat)
    print("|---|---:|---:|")
    for name, _ in configs:
        print(f"| {name} | {best[name]:.1f} | {best[name] / best['plain']:.2f}x |")


if __name__ == "__main__":
    main()
