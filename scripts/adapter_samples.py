"""Greedy answers of the base vs the tuned default model (torch + peft) on a few test-split
prompts: `python scripts/adapter_samples.py python/loglm/adapters/smollm2-135m-loglm`."""
import sys, json, torch, warnings
torch.set_num_threads(1)
import loglm
from loglm.train import _load_engine, _quiet_libraries, end_of_turn_id
from loglm.models import default_model_path
from loglm.datasets import load_parsing, load_anomaly
from loglm.prompts import parsing_chat, anomaly_prompt
from transformers import AutoModelForCausalLM
from peft import PeftModel
adapter = sys.argv[1]
p = default_model_path()
eng = _load_engine(p)
eot = end_of_turn_id(eng)
with _quiet_libraries():
    base = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    base.eval()
cases = []
for s in ("HDFS", "BGL", "Linux", "Proxifier"):
    df = load_parsing(s, split="test")
    r = df.iloc[len(df) // 2]
    cases.append(("parse " + s, parsing_chat(r["Content"]), r["EventTemplate"]))
an = load_anomaly("bgl", split="test")
for lab in ("abnormal", "normal"):
    r = an[an["Label"] == lab].iloc[0]
    cases.append(("anomaly bgl", anomaly_prompt(r["log"]), lab))
def gen(model, prompt, n=48):
    ids = torch.tensor([eng.encode_prompt(prompt)])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=eot, pad_token_id=eot)
    return eng.detokenize(out[0, ids.shape[1]:].tolist())
def p_abn(model, prompt):
    ids = eng.encode_prompt(prompt)
    lps = []
    for c in ("normal", "abnormal"):
        t = eng.tokenize(c)
        x = torch.tensor([ids + t])
        with torch.no_grad():
            lp = torch.log_softmax(model(x).logits[0].float(), -1)
        lps.append(sum(lp[len(ids) - 1 + i, tok].item() for i, tok in enumerate(t)))
    import math
    return math.exp(lps[1]) / (math.exp(lps[0]) + math.exp(lps[1]))
res = []
with _quiet_libraries():
    before = [(gen(base, c[1]), p_abn(base, c[1]) if c[0].startswith("anomaly") else None) for c in cases]
    tuned = PeftModel.from_pretrained(base, adapter)
    tuned.eval()
    after = [(gen(tuned, c[1]), p_abn(tuned, c[1]) if c[0].startswith("anomaly") else None) for c in cases]
for c, b, a in zip(cases, before, after):
    res.append({"case": c[0], "input": c[1][-160:], "reference": c[2], "base": b[0], "tuned": a[0],
                "base_P_abnormal": b[1], "tuned_P_abnormal": a[1]})
print(json.dumps(res, indent=1, ensure_ascii=False))
