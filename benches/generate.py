"""Prefill and decode speed of loglm against llama.cpp, same GGUF, same threads, one run.

    RAYON_NUM_THREADS=2 python benches/generate.py [--model PATH] [--threads 2] [--prompt-tokens 1267]

llama.cpp runs through llama-cpp-python (a benchmark-only dependency, build it for
AVX2: ``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
pip install llama-cpp-python==0.3.36``). Both engines get the same token ids: a
prompt made of real log lines (the loghub files under ``LOGLM_DATA_DIR`` when
present), cut to ``--prompt-tokens``. Decode is greedy for ``--decode-tokens``
tokens with end-of-sequence ignored. The measurements run in ``--repeat`` rounds,
each round taking every one of them in turn (so that figures compared with each other
see the same load on a shared machine); each figure is the best of its rounds.
Also: aggregate decode speed of 8 concurrent sequences against one, as the ratio of
the two best figures and, per round, of the two measured back to back.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def log_text() -> str:
    root = Path(os.environ.get("LOGLM_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    lines = []
    for system in ["HDFS", "BGL", "Linux", "Zookeeper", "Hadoop"]:
        p = root / "loghub_2k" / system / f"{system}_2k.log"
        if p.is_file():
            lines += p.read_text(errors="replace").splitlines()[:60]
    if not lines:  # synthetic fallback
        lines = [f"2024-01-0{i % 9 + 1} 10:{i % 60:02d}:00 INFO worker-{i % 7} processed batch {i} in {i * 13 % 997} ms"
                 for i in range(400)]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: the embedded SmolLM2-135M Q4_1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=1267)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    import loglm
    from loglm.models import resolve

    path = str(resolve(args.model))
    model = loglm.LogLM.load(path, threads=args.threads, context_length=4096)
    eng = model._engine
    chat = [("user", "Summarise the following logs:\n" + log_text())]
    ids = list(eng.encode_chat(chat))[: args.prompt_tokens]
    if len(ids) < args.prompt_tokens:
        print(f"note: prompt has only {len(ids)} tokens", file=sys.stderr)
    n = len(ids)

    # ---- loglm -------------------------------------------------------------
    eng.generate([ids], max_new_tokens=1)  # warm-up: builds the dequantized prefill copies

    def loglm_prefill():
        outs, _ = eng.generate([ids], max_new_tokens=1)
        return outs[0]["prefill_seconds"]

    def loglm_decode():
        outs, st = eng.generate([ids[:64]], max_new_tokens=args.decode_tokens + 1, ignore_eos=True)
        return st["decode_seconds"] / st["decode_tokens"]

    def loglm_batch():
        prompts = [ids[i * 8: i * 8 + 64] for i in range(args.batch)]
        outs, st = eng.generate(prompts, max_new_tokens=args.decode_tokens + 1, ignore_eos=True,
                                max_batch=args.batch)
        return st["decode_seconds"] / st["decode_tokens"]

    # ---- llama.cpp ---------------------------------------------------------
    try:
        from llama_cpp import Llama
    except ImportError:
        Llama = None
        print("llama-cpp-python not installed: loglm figures only", file=sys.stderr)
    runs = {"loglm_prefill": loglm_prefill, "loglm_decode": loglm_decode, "loglm_batch": loglm_batch}
    if Llama is not None:
        llm = Llama(path, n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads,
                    n_batch=512, n_ubatch=512, verbose=False)

        def cpp_prefill():
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids)
            return time.perf_counter() - t

        def cpp_decode():
            llm.reset()
            llm.eval(ids[:64])
            tok = ids[63]
            t = time.perf_counter()
            for _ in range(args.decode_tokens):
                llm.eval([tok])
                tok = int(llm.scores[llm.n_tokens - 1].argmax())
            return (time.perf_counter() - t) / args.decode_tokens

        cpp_prefill()  # warm-up
        runs.update({"llama_cpp_prefill": cpp_prefill, "llama_cpp_decode": cpp_decode})

    # Rounds of every measurement in turn, so that the figures compared with each
    # other are taken under the same machine load (a shared host's speed drifts
    # over seconds); each figure is the best of its rounds.
    times = {k: [] for k in runs}
    for _ in range(args.repeat):
        for k, fn in runs.items():
            times[k].append(fn())
    l_pre, l_dec, l_bat = n / min(times["loglm_prefill"]), 1 / min(times["loglm_decode"]), 1 / min(times["loglm_batch"])
    res = {"model": os.path.basename(path), "threads": args.threads, "prompt_tokens": n,
           "decode_tokens": args.decode_tokens, "rounds": args.repeat, "loglm_prefill_tok_s": l_pre,
           "loglm_decode_tok_s": l_dec, f"loglm_batch{args.batch}_decode_tok_s": l_bat}
    if Llama is not None:
        c_pre, c_dec = n / min(times["llama_cpp_prefill"]), 1 / min(times["llama_cpp_decode"])
        res.update({"llama_cpp_prefill_tok_s": c_pre, "llama_cpp_decode_tok_s": c_dec,
                    "prefill_ratio": l_pre / c_pre, "decode_ratio": l_dec / c_dec})
    res["batch_over_single"] = l_bat / l_dec
    # The same ratio within each round (single and batched decode measured back to back).
    per_round = sorted(s / b for s, b in zip(times["loglm_decode"], times["loglm_batch"]))
    res["batch_over_single_per_round"] = per_round

    print(f"model {res['model']}, {args.threads} threads, prompt {n} tokens, decode {args.decode_tokens} tokens")
    print(f"{'':28s}{'loglm':>10s}{'llama.cpp':>12s}{'ratio':>8s}")
    if "llama_cpp_prefill_tok_s" in res:
        print(f"{'prefill tok/s':28s}{l_pre:10.1f}{res['llama_cpp_prefill_tok_s']:12.1f}{res['prefill_ratio']:8.2f}")
        print(f"{'decode tok/s':28s}{l_dec:10.1f}{res['llama_cpp_decode_tok_s']:12.1f}{res['decode_ratio']:8.2f}")
    else:
        print(f"{'prefill tok/s':28s}{l_pre:10.1f}")
        print(f"{'decode tok/s':28s}{l_dec:10.1f}")
    print(f"{f'decode, {args.batch} sequences, tok/s':28s}{l_bat:10.1f}{'':12s}{res['batch_over_single']:8.2f} (vs 1 sequence)")
    print(f"{'':28s}{'':22s}per round: {' '.join(f'{r:.2f}' for r in per_round)}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
