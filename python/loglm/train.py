"""LoRA instruction tuning of a loglm base model (the optional ``loglm[train]`` extra).

``finetune`` tunes a GGUF file or a Hugging Face folder on Alpaca-format instruction
records (``{"instruction", "input", "output"}``; by default the LogLM training set)
with the loss of the LogLM paper: the next-token likelihood of the response given the
instruction, the prompt tokens masked out. It is built on PyTorch, transformers and
peft (``pip install 'loglm[train]'``); the core package never imports them.

Training sees exactly what inference sends: the prompt token ids are built by loglm's
own engine (``LogLM.encode_prompt`` of ``instruction\\ninput``, rendered with the
base model's chat template and its generation prompt), the response is the output's
token ids followed by the template's end-of-turn token. GGUF bases are dequantized by
transformers, so the adapter is trained on the very weights the engine runs; a check
of next-token log-probabilities between the two is recorded in the training log.

The result is a standard PEFT adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``) that ``LogLM.load(..., adapter=...)`` and
``peft.PeftModel.from_pretrained`` both read, and a ``training_log.json`` with the
arguments, per-step and held-out losses, timings and the sha256 of data and base.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from loglm.errors import InvalidInputError

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "INSTALL_HINT",
    "Example",
    "FinetuneResult",
    "build_example",
    "end_of_turn_id",
    "finetune",
    "load_records",
    "split_heldout",
]

PathLike = Union[str, "os.PathLike[str]"]

#: What to run when the training dependencies are missing.
INSTALL_HINT = "pip install 'loglm[train]'"
#: LoRA targets by default: every projection of a llama / qwen2 block.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Label of the positions that carry no loss (PyTorch's ``ignore_index``).
IGNORE = -100


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Silence deprecation chatter that torch / transformers / peft raise about each
    other (not loglm's own warnings)."""
    with warnings.catch_warnings():
        for cat in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=cat, module=r"(torch|transformers|peft|accelerate)(\..*)?$")
        yield


def _require_train_deps() -> Tuple[Any, Any, Any]:
    """Import torch, transformers and peft, or raise ImportError with the install hint."""
    try:
        import peft
        import torch
        import transformers
    except ImportError as e:
        raise ImportError(
            f"loglm.train needs PyTorch, transformers and peft ({e.name or e} is missing); "
            f"install them with:\n    {INSTALL_HINT}"
        ) from e
    return torch, transformers, peft


# --------------------------------------------------------------------------- data

def _sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def load_records(data: Union[PathLike, Sequence[Dict[str, Any]], None] = None) -> Tuple[List[Dict[str, str]], str, str]:
    """Instruction records to tune on, their source and the sha256 of their JSON.

    ``data`` is an Alpaca-format JSON file (a list of objects with ``instruction``,
    optional ``input`` and ``output``; a ``.jsonl`` file with one object per line works
    too), a list of such dicts, or ``None`` for the LogLM training set
    (``loglm/instructions_train.json`` under ``LOGLM_DATA_DIR``; never its test files).

    Raises:
        FileNotFoundError: the file does not exist.
        InvalidInputError: not valid JSON, no records, or a record without a string
            ``instruction`` / ``output`` (the message names the record).
    """
    if data is None:
        from loglm.datasets import dataset_file

        path: Optional[Path] = dataset_file("loglm/instructions_train.json")
    elif isinstance(data, (str, os.PathLike)):
        path = Path(os.fspath(data)).expanduser()
    else:
        path = None
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"instruction data not found: {path}")
        if path.is_dir():
            raise InvalidInputError(f"instruction data must be a JSON file, not a folder: {path}")
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig", errors="strict") if raw else ""
        try:
            if path.suffix.lower() == ".jsonl":
                recs: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                recs = json.loads(text) if text.strip() else []
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"{path} is not valid JSON: {e}") from None
        source, digest = str(path), _sha256_bytes(raw)
    else:
        recs = list(data)  # type: ignore[arg-type]
        source = "<records>"
        digest = _sha256_bytes(json.dumps(recs, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8"))
    if not isinstance(recs, list):
        raise InvalidInputError(f"{source}: expected a JSON list of instruction records, got {type(recs).__name__}")
    if not recs:
        raise InvalidInputError(f"{source}: no instruction records")
    out = []
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise InvalidInputError(f"{source}: record {i} is a {type(r).__name__}, expected an object")
        for key in ("instruction", "output"):
            if not isinstance(r.get(key), str):
                what = "has no" if key not in r else "has a non-string"
                raise InvalidInputError(f"{source}: record {i} {what} {key!r} field")
        inp = r.get("input", "")
        if inp is None:
            inp = ""
        if not isinstance(inp, str):
            raise InvalidInputError(f"{source}: record {i} has a non-string 'input' field")
        if not r["instruction"].strip() and not inp.strip():
            raise InvalidInputError(f"{source}: record {i} has an empty instruction and input")
        out.append({"instruction": r["instruction"], "input": inp, "output": r["output"]})
    return out, source, digest


def split_heldout(n: int, fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Deterministic split of ``range(n)`` into (train, held-out) indices: a seeded
    shuffle, the first ``round(n * fraction)`` (at least 1 when ``fraction > 0`` and
    ``n >= 2``) held out; both lists sorted."""
    if not 0.0 <= fraction < 1.0:
        raise InvalidInputError(f"heldout must be in [0, 1), got {fraction}")
    k = int(round(n * fraction))
    if fraction > 0 and n >= 2:
        k = max(k, 1)
    k = min(k, n - 1)
    order = list(range(n))
    random.Random(f"loglm-heldout-{seed}").shuffle(order)
    return sorted(order[k:]), sorted(order[:k])


@dataclass(frozen=True)
class Example:
    """One tokenized training example: labels are ``-100`` on the prompt tokens and the
    response token ids elsewhere."""

    input_ids: List[int]
    labels: List[int]
    n_prompt: int
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def end_of_turn_id(model: Any) -> int:
    """Id of the token that ends an assistant turn in ``model``'s chat template (a
    :class:`loglm.LogLM`): rendered from a chat with an assistant reply, the first
    end-of-generation token after the reply (``<|im_end|>`` for ChatML); the model's
    eos token when the template shows none."""
    eog = [int(x) for x in model.info.get("eos_token_ids", [])]
    marker = "loglm finetune marker reply"
    msgs = model.messages("x") + [("assistant", marker)]
    try:
        full = list(model.encode_prompt(msgs, add_generation_prompt=False))
        reply = model.tokenize(marker)
        for i in range(len(full) - len(reply), -1, -1):
            if full[i:i + len(reply)] == reply:
                for t in full[i + len(reply):]:
                    if t in eog:
                        return t
                break
    except Exception:  # an unusual template: fall back to the eos id
        pass
    if not eog:
        raise InvalidInputError("the base model declares no end-of-turn / eos token; cannot build training targets")
    return eog[0]


def build_example(model: Any, instruction: str, input: str, output: str, *, eot_id: int,
                  max_length: int, min_response: int = 1) -> Optional[Example]:
    """Tokenize one Alpaca record the way inference sees it.

    Prompt: ``model.encode_prompt(alpaca_prompt(instruction, input))`` (chat template
    with the generation prompt). Response: ``model.tokenize(output)`` + ``eot_id``.
    A sequence longer than ``max_length`` has its response cut (and then no
    end-of-turn token); ``None`` when fewer than ``min_response`` response tokens fit.
    """
    from loglm.prompts import alpaca_prompt

    prompt = model.encode_prompt(alpaca_prompt(instruction, input))
    response = model.tokenize(output) + [int(eot_id)] if output else [int(eot_id)]
    room = max_length - len(prompt)
    if room < max(min_response, 1):
        return None
    truncated = len(response) > room
    response = response[:room]
    return Example(input_ids=list(prompt) + response, labels=[IGNORE] * len(prompt) + response,
                   n_prompt=len(prompt), truncated=truncated)


def _length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random,
                            mega: int = 64) -> List[List[int]]:
    """Batches of similar length (little padding): shuffle, sort within windows of
    ``mega`` batches, cut into batches, shuffle the batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    win = batch_size * mega
    batches: List[List[int]] = []
    for s in range(0, len(idx), win):
        chunk = sorted(idx[s:s + win], key=lambda i: -lengths[i])
        batches += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------------- result

@dataclass
class FinetuneResult:
    """What :func:`finetune` did."""

    adapter_dir: Path
    steps: int
    epochs: float
    train_loss: float
    """Mean response-token loss over the last optimizer steps (up to 20)."""
    heldout_loss: Optional[float]
    """Final held-out loss (``None`` without a held-out split)."""
    seconds: float
    log_path: Path
    train_examples: int
    heldout_examples: int
    heldout_losses: List[Dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------- model

def _resolve_base(base: Union[PathLike, None]) -> Path:
    from loglm.models import resolve

    return resolve(base)


def _load_torch_model(path: Path, torch: Any, transformers: Any, device: str) -> Any:
    kw: Dict[str, Any] = {}
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kw["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = torch.float32
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InvalidInputError(f"a base model file must be GGUF: {path}")
        try:
            import gguf  # noqa: F401
        except ImportError as e:
            raise ImportError(f"training from a GGUF file needs the gguf package; {INSTALL_HINT}") from e
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kw)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kw)
    return model.to(device)


def _load_engine(path: Path) -> Any:
    """loglm's own engine for the base, without any adapter (tokenization + checks)."""
    from loglm.model import LogLM

    try:
        return LogLM.load(path, adapter=None, threads=1)  # type: ignore[call-arg]
    except TypeError:  # a loglm without adapter support
        return LogLM.load(path, threads=1)


def _base_agreement(engine: Any, model: Any, torch: Any, device: str) -> Dict[str, Any]:
    """Compare next-token log-probabilities of torch and loglm's engine on one prompt."""
    from loglm.prompts import anomaly_prompt

    ids = engine.encode_prompt(anomaly_prompt("ciod: failed to read message prefix on control stream"))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
    lp = torch.log_softmax(logits, -1).cpu()
    top = torch.topk(lp, 10).indices.tolist()
    import numpy as np

    last = engine.logits(ids)[-1].astype("float64")
    m = float(last.max())
    lse = m + float(np.log(np.exp(last - m).sum()))
    theirs = [float(last[t]) - lse for t in top]
    diffs = [abs(float(lp[t]) - float(x)) for t, x in zip(top, theirs)]
    best_engine = top[max(range(len(top)), key=lambda i: theirs[i])]
    return {"prompt_tokens": len(ids), "top1_torch": top[0], "top1_engine_among_torch_top10": best_engine,
            "top1_agree": top[0] == best_engine, "max_abs_logprob_diff_top10": round(max(diffs), 4),
            "mean_abs_logprob_diff_top10": round(sum(diffs) / len(diffs), 4)}


def _loss_sum(model: Any, batch: List[Example], torch: Any, device: str) -> Tuple[Any, int]:
    """Sum of the response-token cross-entropies of a batch and their count. The LM
    head runs only on the positions that predict a response token."""
    width = max(len(e) for e in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    att = torch.zeros((len(batch), width), dtype=torch.long)
    lab = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e)
        ids[i, :n] = torch.tensor(e.input_ids)
        att[i, :n] = 1
        lab[i, :n] = torch.tensor(e.labels)
    ids, att, lab = ids.to(device), att.to(device), lab.to(device)
    causal = model.get_base_model()
    decoder = getattr(causal, causal.base_model_prefix)
    hidden = decoder(input_ids=ids, attention_mask=att).last_hidden_state
    target = lab[:, 1:]
    pos = target != IGNORE
    h = hidden[:, :-1][pos]
    logits = causal.get_output_embeddings()(h).float()
    loss = torch.nn.functional.cross_entropy(logits, target[pos], reduction="sum")
    return loss, int(pos.sum())


def _heldout_loss(model: Any, examples: List[Example], batch_size: int, torch: Any, device: str) -> float:
    model.eval()
    tot, n = 0.0, 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            loss, k = _loss_sum(model, [examples[i] for i in order[s:s + batch_size]], torch, device)
            tot += float(loss)
            n += k
    model.train()
    return tot / max(n, 1)


def _save_adapter(model: Any, out: Path, base_name: str, save_dtype: str, torch: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_name  # not this machine's absolute path
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if save_dtype != "float32":
        from safetensors.torch import load_file, save_file

        st = out / "adapter_model.safetensors"
        dt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[save_dtype]
        tensors = {k: v.to(dt).contiguous() for k, v in load_file(str(st)).items()}
        save_file(tensors, str(st), metadata={"format": "pt"})
    readme = out / "README.md"
    if readme.exists():  # peft's model-card template: not ours to ship
        readme.unlink()


# --------------------------------------------------------------------------- finetune

def finetune(
    base: Union[PathLike, None] = None,
    data: Union[PathLike, Sequence[Dict[str, Any]], None] = None,
    out: PathLike = "loglm-adapter",
    *,
    epochs: float = 1.0,
    max_steps: Optional[int] = None,
    lr: float = 2e-4,
    rank: int = 8,
    alpha: Optional[float] = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES,
    max_length: int = 512,
    batch_size: int = 8,
    grad_accum: int = 1,
    warmup_ratio: float = 0.03,
    weight_decay: float = 0.0,
    heldout: float = 0.05,
    eval_steps: Optional[int] = None,
    save_steps: Optional[int] = None,
    checkpoint_dir: Optional[PathLike] = None,
    save_dtype: str = "float32",
    threads: Optional[int] = None,
    device: str = "cpu",
    dtype: str = "float32",
    max_seconds: Optional[float] = None,
    seed: int = 0,
    progress: bool = True,
    log_path: Optional[PathLike] = None,
    check_base: bool = True,
    notes: Optional[Dict[str, Any]] = None,
    init_adapter: Optional[PathLike] = None,
) -> FinetuneResult:
    """LoRA instruction tuning of ``base`` on ``data``; the adapter is written to ``out``.

    Args:
        base: GGUF file, Hugging Face folder (``config.json`` + safetensors +
            ``tokenizer.json``) or model name; ``None`` for the default model.
        data: Alpaca JSON file / list of records; ``None`` for the LogLM training set.
        out: adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``,
            ``training_log.json`` unless ``log_path`` says elsewhere).
        epochs / max_steps: passes over the training records; ``max_steps`` (optimizer
            steps) overrides ``epochs`` when given.
        lr, rank, alpha (default ``2 * rank``), dropout, target_modules: LoRA and AdamW
            settings; cosine decay after a linear warm-up of ``warmup_ratio``. LoRA
            dropout costs a random mask per projection and step (about a fifth of the
            step time on CPU), hence the default 0.
        max_length: tokens per example; longer responses are cut, examples whose prompt
            alone does not fit are dropped (both counted in the log).
        batch_size, grad_accum: examples per forward pass and passes per optimizer
            step; batches group examples of similar length.
        heldout: fraction of the records held out (deterministic for ``seed``) whose
            response loss is reported every ``eval_steps`` and at the end.
        save_steps / checkpoint_dir: adapter checkpoints every ``save_steps`` steps
            (default folder ``out/checkpoints``).
        save_dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` adapter tensors.
        threads: torch CPU threads; device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: dtype of the frozen base weights during training: ``"float32"`` or
            ``"bfloat16"`` (several times faster on CPUs with AMX / AVX512-BF16 and on
            GPUs); the LoRA weights and the optimizer stay float32 either way.
        max_seconds: stop training after this many seconds (the adapter reached so
            far is saved and the log says so).
        notes: extra JSON-serialisable facts recorded in the training log.
        init_adapter: a peft adapter folder to continue training from (its rank, alpha
            and target modules replace ``rank`` / ``alpha`` / ``target_modules``);
            ``None`` starts a new adapter.
        progress: tqdm progress bar; check_base: compare torch's and loglm's next-token
            log-probabilities of the base once (recorded in the log).

    Returns:
        a :class:`FinetuneResult`.

    Raises:
        ImportError: torch / transformers / peft missing (``pip install 'loglm[train]'``).
        FileNotFoundError, InvalidInputError: bad data, base or arguments.
    """
    settings = dict(locals())
    for name, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size), ("grad_accum", grad_accum),
                    ("rank", rank), ("max_length", max_length)):
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise InvalidInputError(f"{name} must be a positive number, got {v!r}")
    if max_steps is not None and max_steps < 1:
        raise InvalidInputError(f"max_steps must be >= 1, got {max_steps}")
    if not 0.0 <= dropout < 1.0:
        raise InvalidInputError(f"dropout must be in [0, 1), got {dropout}")
    if dtype not in ("float32", "bfloat16"):
        raise InvalidInputError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise InvalidInputError(f"max_seconds must be > 0, got {max_seconds!r}")
    if save_dtype not in ("float32", "float16", "bfloat16"):
        raise InvalidInputError(f"save_dtype must be float32, float16 or bfloat16, got {save_dtype!r}")
    if not target_modules:
        raise InvalidInputError("target_modules is empty")
    if init_adapter is not None:
        from loglm.models import resolve_adapters

        init = resolve_adapters(init_adapter)
        if len(init) != 1:
            raise InvalidInputError("init_adapter must be one adapter folder")
        if not (init[0] / "adapter_config.json").is_file():
            from loglm.errors import AdapterNotFoundError

            raise AdapterNotFoundError(f"init_adapter {init[0]} has no adapter_config.json (a peft "
                                       "save_pretrained folder is needed)")
        settings["init_adapter"] = init[0]
    records, source, data_sha = load_records(data)
    base_path = _resolve_base(base)
    torch, transformers, peft = _require_train_deps()
    with _quiet_libraries():
        return _finetune(**settings, records=records, source=source, data_sha=data_sha, base_path=base_path,
                         torch=torch, transformers=transformers, peft=peft)


def _finetune(*, base: Any, data: Any, out: PathLike, epochs: float, max_steps: Optional[int], lr: float,
              rank: int, alpha: Optional[float], dropout: float, target_modules: Sequence[str], max_length: int,
              batch_size: int, grad_accum: int, warmup_ratio: float, weight_decay: float, heldout: float,
              eval_steps: Optional[int], save_steps: Optional[int], checkpoint_dir: Optional[PathLike],
              save_dtype: str, threads: Optional[int], device: str, dtype: str, max_seconds: Optional[float],
              seed: int, progress: bool, log_path: Optional[PathLike], check_base: bool,
              notes: Optional[Dict[str, Any]], init_adapter: Optional[Path], records: List[Dict[str, str]],
              source: str, data_sha: str, base_path: Path, torch: Any, transformers: Any, peft: Any) -> FinetuneResult:

    t_start = time.perf_counter()
    if threads is not None:
        if threads < 1:
            raise InvalidInputError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from loglm.errors import DeviceError

        raise DeviceError(f"device {device!r} requested but torch sees no CUDA device")
    random.seed(seed)
    torch.manual_seed(seed)

    # -- tokenize with loglm's engine -----------------------------------------------
    engine = _load_engine(base_path)
    eot = end_of_turn_id(engine)
    train_idx, held_idx = split_heldout(len(records), heldout, seed)
    dropped: List[int] = []
    n_trunc = 0

    def tokenize(idx: List[int]) -> List[Example]:
        nonlocal n_trunc
        exs = []
        for i in idx:
            r = records[i]
            ex = build_example(engine, r["instruction"], r["input"], r["output"], eot_id=eot, max_length=max_length)
            if ex is None:
                dropped.append(i)
                continue
            n_trunc += ex.truncated
            exs.append(ex)
        return exs

    train_ex = tokenize(train_idx)
    held_ex = tokenize(held_idx)
    if not train_ex:
        raise InvalidInputError(f"no training example fits max_length={max_length} tokens")

    # -- base model + LoRA -----------------------------------------------------------
    model = _load_torch_model(base_path, torch, transformers, device)
    vocab = model.get_input_embeddings().weight.shape[0]
    too_big = max(max(e.input_ids) for e in train_ex + held_ex)
    if too_big >= vocab:
        raise InvalidInputError(f"token id {too_big} from loglm's tokenizer is outside the torch model's "
                                f"vocabulary ({vocab}); the base folders disagree")
    agreement = _base_agreement(engine, model, torch, device) if check_base else None
    if agreement is not None and not agreement["top1_agree"]:
        warnings.warn(f"torch and loglm disagree on the base model's next token: {agreement}", RuntimeWarning,
                      stacklevel=2)
    del engine
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)

    if init_adapter is not None:
        try:
            model = peft.PeftModel.from_pretrained(model, os.fspath(init_adapter), is_trainable=True)
        except Exception as e:  # shapes that do not fit, a broken folder: peft's own exception types vary
            raise InvalidInputError(f"cannot continue from adapter {init_adapter}: {e}") from e
        lcfg = model.peft_config["default"]
        rank, target_modules = int(lcfg.r), sorted(lcfg.target_modules)
        for p in model.parameters():  # peft loads saved float16 tensors as they are; train in float32
            if p.requires_grad:
                p.data = p.data.float()
    else:
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in target_modules if t not in names]
        if missing:
            raise InvalidInputError(f"target modules {missing} are not in the model (it has e.g. "
                                    f"{sorted(n for n in names if n.endswith('proj'))})")
        lcfg = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha if alpha is not None else 2 * rank),
                               lora_dropout=float(dropout), target_modules=list(target_modules), bias="none",
                               task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lcfg)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    steps_per_epoch = max(1, math.ceil(math.ceil(len(train_ex) / batch_size) / grad_accum))
    total = int(max_steps) if max_steps is not None else max(1, int(math.ceil(epochs * steps_per_epoch)))
    warm = int(round(warmup_ratio * total))

    def lr_at(step: int) -> float:  # multiplier, step = 0-based optimizer step
        if step < warm:
            return (step + 1) / (warm + 1)
        prog = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    out_dir = Path(os.fspath(out))
    ckpt_dir = Path(os.fspath(checkpoint_dir)) if checkpoint_dir is not None else out_dir / "checkpoints"
    log_file = Path(os.fspath(log_path)) if log_path is not None else out_dir / "training_log.json"
    if base is None:
        base_name = "smollm2-135m"
    elif Path(os.fspath(base)).expanduser().exists():
        base_name = base_path.name
    else:  # a model name such as "qwen2.5-coder-0.5b"
        base_name = os.fspath(base)

    args = {"base": os.fspath(base) if base is not None else None, "base_file": base_path.name,
            "data": source, "out": str(out_dir), "epochs": epochs, "max_steps": max_steps, "lr": lr, "rank": rank,
            "alpha": lcfg.lora_alpha, "dropout": float(lcfg.lora_dropout), "target_modules": list(target_modules),
            "max_length": max_length, "batch_size": batch_size, "grad_accum": grad_accum,
            "warmup_ratio": warmup_ratio, "weight_decay": weight_decay, "heldout": heldout,
            "eval_steps": eval_steps, "save_steps": save_steps, "save_dtype": save_dtype,
            "threads": threads, "device": device, "dtype": dtype, "max_seconds": max_seconds, "seed": seed,
            "init_adapter": str(init_adapter) if init_adapter is not None else None}
    log: Dict[str, Any] = {
        "args": args,
        "notes": notes or {},
        "loss": "mean next-token cross-entropy of the response tokens (prompt masked) per optimizer step",
        "prompt_format": "LogLM.encode_prompt(alpaca_prompt(instruction, input)); response = tokenize(output) + end-of-turn",
        "end_of_turn_id": eot,
        "data_sha256": data_sha,
        "base_sha256": _hash_base(base_path),
        "records": len(records), "train_examples": len(train_ex), "heldout_examples": len(held_ex),
        "heldout_indices": held_idx, "dropped_too_long": sorted(dropped), "truncated_responses": n_trunc,
        "train_tokens_per_epoch": sum(len(e) for e in train_ex),
        "train_target_tokens_per_epoch": sum(len(e) - e.n_prompt for e in train_ex),
        "trainable_parameters": trainable, "steps_total": total, "steps_per_epoch": steps_per_epoch,
        "base_check": agreement,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "python": platform.python_version()},
        "steps": [], "heldout": [],
    }

    def write_log() -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = log_file.with_suffix(".json.partial")
        tmp.write_text(json.dumps(log, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, log_file)

    def evaluate(step: int) -> None:
        if not held_ex:
            return
        t0 = time.perf_counter()
        loss = _heldout_loss(model, held_ex, batch_size, torch, device)
        log["heldout"].append({"step": step, "loss": round(loss, 5), "seconds": round(time.perf_counter() - t0, 1)})
        if bar is not None:
            bar.write(f"step {step}: held-out loss {loss:.4f}")

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="finetune", unit="step", dynamic_ncols=True)
        except ImportError:
            bar = None

    evaluate(0)
    write_log()
    rng = random.Random(seed)
    step, epoch_f = 0, 0.0
    t_train = time.perf_counter()

    def batches() -> Iterator[Tuple[int, List[Example]]]:
        ep = 0
        while True:
            bl = _length_grouped_batches([len(e) for e in train_ex], batch_size, rng)
            for b in bl:
                yield ep, [train_ex[i] for i in b]
            ep += 1

    it = batches()
    stopped_early = False
    try:
        while step < total:
            if max_seconds is not None and time.perf_counter() - t_train > max_seconds:
                stopped_early = True
                break
            t0 = time.perf_counter()
            parts = [next(it) for _ in range(grad_accum)]
            n_target = sum(sum(len(e) - e.n_prompt for e in b) for _, b in parts)
            loss_total = 0.0
            n_tok = 0
            for _, b in parts:
                loss, k = _loss_sum(model, b, torch, device)
                (loss / max(n_target, 1)).backward()
                loss_total += float(loss.detach())
                n_tok += sum(len(e) for e in b)
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            epoch_f = step / steps_per_epoch
            step_loss = loss_total / max(n_target, 1)
            if not math.isfinite(step_loss):
                raise InvalidInputError(f"the training loss became {step_loss} at step {step}; lower lr")
            dt = time.perf_counter() - t0
            log["steps"].append({"step": step, "epoch": round(epoch_f, 4), "loss": round(step_loss, 5),
                                 "lr": sched.get_last_lr()[0], "grad_norm": round(gnorm, 4), "tokens": n_tok,
                                 "target_tokens": n_target, "seconds": round(dt, 3)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{n_tok / dt:.0f}", epoch=f"{epoch_f:.2f}")
            if eval_steps and step % eval_steps == 0 and step < total:
                evaluate(step)
            if save_steps and step % save_steps == 0 and step < total:
                _save_adapter(model, ckpt_dir / f"checkpoint-{step}", base_name, save_dtype, torch)
            if step % 10 == 0:
                log["wall_seconds"] = round(time.perf_counter() - t_start, 1)
                write_log()
    finally:
        if bar is not None:
            bar.close()
    train_secs = time.perf_counter() - t_train
    evaluate(step)
    _save_adapter(model, out_dir, base_name, save_dtype, torch)
    wall = time.perf_counter() - t_start
    last = [s["loss"] for s in log["steps"][-20:]]
    log.update({"stopped_by_max_seconds": stopped_early, "train_seconds": round(train_secs, 1), "wall_seconds": round(wall, 1), "steps_done": step,
                "epochs_done": round(epoch_f, 4),
                "tokens_per_second": round(sum(s["tokens"] for s in log["steps"]) / max(train_secs, 1e-9), 1),
                "final_train_loss": round(sum(last) / len(last), 5) if last else float("nan"),
                "final_heldout_loss": log["heldout"][-1]["loss"] if log["heldout"] else None,
                "adapter_files": sorted(p.name for p in out_dir.iterdir() if p.is_file() and p != log_file)})
    write_log()
    return FinetuneResult(adapter_dir=out_dir, steps=step, epochs=round(epoch_f, 4),
                          train_loss=log["final_train_loss"], heldout_loss=log["final_heldout_loss"],
                          seconds=round(wall, 1), log_path=log_file, train_examples=len(train_ex),
                          heldout_examples=len(held_ex), heldout_losses=list(log["heldout"]))


def _hash_base(path: Path) -> Dict[str, str]:
    """sha256 of the base model's file(s) (the GGUF, or the folder's weights and tokenizer)."""
    from loglm.models import sha256_file

    if path.is_file():
        return {path.name: sha256_file(path)}
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    return {p.name: sha256_file(p) for p in files}


def _as_dict(r: FinetuneResult) -> Dict[str, Any]:
    d = asdict(r)
    d["adapter_dir"] = str(r.adapter_dir)
    d["log_path"] = str(r.log_path)
    return d
