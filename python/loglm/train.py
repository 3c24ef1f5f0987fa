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

A run is four named steps over one :class:`FinetuneSettings`: ``_inputs`` (the data:
records, base, adapter to continue from), ``_tokenize`` (prompt-masked examples and the
held-out split), ``_train`` (the optimizer loop, with ``_build_lora`` and ``_schedule``
before it) and ``_save`` (adapter and finished log); ``_run`` strings them together.
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
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from loglm.errors import DatasetNotFoundError, InvalidInputError, MissingDependencyError

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "INSTALL_HINT",
    "Example",
    "FinetuneResult",
    "FinetuneSettings",
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
        raise MissingDependencyError(
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
    given: Sequence[Dict[str, Any]] = ()
    if data is None:
        from loglm.datasets import dataset_file

        path: Optional[Path] = dataset_file("loglm/instructions_train.json")
    elif isinstance(data, (str, os.PathLike)):
        path = Path(os.fspath(data)).expanduser()
    else:
        path, given = None, data
    if path is not None:
        if not path.exists():
            raise DatasetNotFoundError(f"instruction data not found: {path}")
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
        recs = list(given)
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
            raise MissingDependencyError(f"training from a GGUF file needs the gguf package; {INSTALL_HINT}") from e
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kw)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), **kw)
    return model.to(device)


def _load_engine(path: Path) -> Any:
    """loglm's own engine for the base, without any adapter (tokenization + checks)."""
    from loglm.model import LogLM

    return LogLM.load(path, adapter=None, threads=1)


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


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class FinetuneSettings:
    """The settings of one :func:`finetune` run: everything but the base model, the data
    and the output folder. Checked when built, so a bad value fails before anything is
    loaded (:class:`loglm.InvalidInputError`). The fields and defaults are
    :func:`finetune`'s keyword arguments, documented there."""

    epochs: float = 1.0
    max_steps: Optional[int] = None
    lr: float = 2e-4
    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.0
    target_modules: Sequence[str] = DEFAULT_TARGET_MODULES
    max_length: int = 512
    batch_size: int = 8
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    heldout: float = 0.05
    eval_steps: Optional[int] = None
    save_steps: Optional[int] = None
    checkpoint_dir: Optional[PathLike] = None
    save_dtype: str = "float32"
    threads: Optional[int] = None
    device: str = "cpu"
    dtype: str = "float32"
    max_seconds: Optional[float] = None
    seed: int = 0
    progress: bool = True
    log_path: Optional[PathLike] = None
    check_base: bool = True
    notes: Optional[Dict[str, Any]] = None
    init_adapter: Union[PathLike, Sequence[PathLike], None] = None

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "batch_size", "grad_accum", "rank", "max_length"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
                raise InvalidInputError(f"{name} must be a positive number, got {v!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidInputError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInputError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.heldout < 1.0:
            raise InvalidInputError(f"heldout must be in [0, 1), got {self.heldout}")
        if self.dtype not in ("float32", "bfloat16"):
            raise InvalidInputError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise InvalidInputError(f"max_seconds must be > 0, got {self.max_seconds!r}")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise InvalidInputError(f"save_dtype must be float32, float16 or bfloat16, got {self.save_dtype!r}")
        if not self.target_modules:
            raise InvalidInputError("target_modules is empty")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"threads must be >= 1, got {self.threads}")


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
    init_adapter: Union[PathLike, Sequence[PathLike], None] = None,
    settings: Optional[FinetuneSettings] = None,
) -> FinetuneResult:
    """LoRA instruction tuning of ``base`` on ``data``; the adapter is written to ``out``.

    The run is four steps: the data (:func:`load_records`, a seeded held-out split),
    tokenisation with the prompt masked (:func:`build_example`, with loglm's own
    engine), the training loop (AdamW, warm-up + cosine, gradient accumulation,
    held-out losses and checkpoints) and the save (adapter + training log).

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
        settings: all of the above as one :class:`FinetuneSettings` (then leave the
            keyword arguments at their defaults).

    Returns:
        a :class:`FinetuneResult`.

    Raises:
        ImportError: torch / transformers / peft missing (``pip install 'loglm[train]'``).
        FileNotFoundError, InvalidInputError: bad data, base or arguments.
    """
    options = {k: v for k, v in locals().items() if k not in ("base", "data", "out", "settings")}
    if settings is None:
        settings = FinetuneSettings(**options)
    else:
        if not isinstance(settings, FinetuneSettings):
            raise InvalidInputError(f"settings must be a FinetuneSettings, not {type(settings).__name__}")
        defaults = FinetuneSettings()
        given = sorted(k for k, v in options.items() if v is not getattr(defaults, k) and v != getattr(defaults, k))
        if given:
            raise InvalidInputError(f"pass either settings= or keyword settings, not both (got {', '.join(given)})")
    inputs = _inputs(base, data, settings)
    torch, transformers, peft = _require_train_deps()
    with _quiet_libraries():
        return _run(settings, inputs, out, torch, transformers, peft)


@dataclass
class _Inputs:
    """The data step's product: the records and the base, checked before torch loads."""

    base: Any
    """``base`` as given (``None``, a path or a model name)."""
    base_path: Path
    init_adapter: Optional[Path]
    records: List[Dict[str, str]]
    source: str
    data_sha: str


def _inputs(base: Union[PathLike, None], data: Union[PathLike, Sequence[Dict[str, Any]], None],
            s: FinetuneSettings) -> _Inputs:
    """Step 1, the data: the adapter to continue from, the records and the base."""
    init = _resolve_init_adapter(s.init_adapter)
    records, source, data_sha = load_records(data)
    return _Inputs(base=base, base_path=_resolve_base(base), init_adapter=init, records=records, source=source,
                   data_sha=data_sha)


def _resolve_init_adapter(init_adapter: Union[PathLike, Sequence[PathLike], None]) -> Optional[Path]:
    """The one peft adapter folder to continue from, or ``None``."""
    if init_adapter is None:
        return None
    from loglm.models import resolve_adapters

    init = resolve_adapters(init_adapter)
    if len(init) != 1:
        raise InvalidInputError("init_adapter must be one adapter folder")
    if not (init[0] / "adapter_config.json").is_file():
        from loglm.errors import AdapterNotFoundError

        raise AdapterNotFoundError(f"init_adapter {init[0]} has no adapter_config.json (a peft "
                                   "save_pretrained folder is needed)")
    return init[0]


@dataclass
class _Tokenized:
    """The tokenise/mask step's product: the train and held-out examples."""

    train: List[Example]
    heldout: List[Example]
    heldout_indices: List[int]
    dropped: List[int]
    """Records whose prompt alone does not fit ``max_length``."""
    truncated: int
    """Examples whose response was cut to fit."""
    eot_id: int


@dataclass
class _Lora:
    """The torch model with its LoRA adapter and the adapter's effective settings (an
    ``init_adapter`` brings its own rank and target modules)."""

    model: Any
    rank: int
    alpha: float
    dropout: float
    target_modules: List[str]
    base_check: Optional[Dict[str, Any]]


@dataclass
class _Run:
    """What the steps of one run share: settings, torch, where things go, the log."""

    settings: FinetuneSettings
    torch: Any
    device: str
    out_dir: Path
    ckpt_dir: Path
    log_file: Path
    base_name: str
    t_start: float
    log: Dict[str, Any] = field(default_factory=dict)
    bar: Any = None

    def write_log(self) -> None:
        """Write the training log atomically (a partial file, then a rename)."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.log_file.with_suffix(".json.partial")
        tmp.write_text(json.dumps(self.log, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.log_file)

    def evaluate(self, model: Any, heldout: List[Example], step: int) -> None:
        """Record the held-out loss at ``step`` (nothing without a held-out split)."""
        if not heldout:
            return
        t0 = time.perf_counter()
        loss = _heldout_loss(model, heldout, self.settings.batch_size, self.torch, self.device)
        self.log["heldout"].append({"step": step, "loss": round(loss, 5),
                                    "seconds": round(time.perf_counter() - t0, 1)})
        if self.bar is not None:
            self.bar.write(f"step {step}: held-out loss {loss:.4f}")

    def save(self, model: Any, folder: Path) -> None:
        """Write the adapter to ``folder``."""
        _save_adapter(model, folder, self.base_name, self.settings.save_dtype, self.torch)


def _run(s: FinetuneSettings, inputs: _Inputs, out: PathLike, torch: Any, transformers: Any,
         peft: Any) -> FinetuneResult:
    """One fine-tuning run over checked inputs: tokenise/mask, model, loop, save."""
    t_start = time.perf_counter()
    device = _setup_torch(s, torch)
    engine = _load_engine(inputs.base_path)
    data = _tokenize(engine, inputs.records, s)
    lora = _build_lora(inputs, engine, data, s, torch, transformers, peft, device)
    del engine
    out_dir = Path(os.fspath(out))
    run = _Run(settings=s, torch=torch, device=device, out_dir=out_dir,
               ckpt_dir=Path(os.fspath(s.checkpoint_dir)) if s.checkpoint_dir is not None else out_dir / "checkpoints",
               log_file=Path(os.fspath(s.log_path)) if s.log_path is not None else out_dir / "training_log.json",
               base_name=_base_name(inputs.base, inputs.base_path), t_start=t_start)
    schedule = _schedule(len(data.train), s)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                "python": platform.python_version()}
    run.log = _start_log(run, inputs, lora, data, schedule, versions)
    step, epoch_f, stopped_early, train_secs = _train(run, lora, data, schedule)
    return _save(run, lora, data, step, epoch_f, stopped_early, train_secs)


def _setup_torch(s: FinetuneSettings, torch: Any) -> str:
    """Threads, the device (``"auto"`` resolved) and the seeds."""
    if s.threads is not None:
        torch.set_num_threads(int(s.threads))
    device = s.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        from loglm.errors import DeviceError

        raise DeviceError(f"device {device!r} requested but torch sees no CUDA device")
    random.seed(s.seed)
    torch.manual_seed(s.seed)
    return device


def _tokenize(engine: Any, records: List[Dict[str, str]], s: FinetuneSettings) -> _Tokenized:
    """Step 2: split the records and tokenise them with loglm's engine, prompt masked."""
    eot = end_of_turn_id(engine)
    train_idx, held_idx = split_heldout(len(records), s.heldout, s.seed)
    dropped: List[int] = []
    n_trunc = 0

    def build(idx: List[int]) -> List[Example]:
        nonlocal n_trunc
        exs = []
        for i in idx:
            r = records[i]
            ex = build_example(engine, r["instruction"], r["input"], r["output"], eot_id=eot,
                               max_length=s.max_length)
            if ex is None:
                dropped.append(i)
                continue
            n_trunc += ex.truncated
            exs.append(ex)
        return exs

    train = build(train_idx)
    held = build(held_idx)
    if not train:
        raise InvalidInputError(f"no training example fits max_length={s.max_length} tokens")
    return _Tokenized(train=train, heldout=held, heldout_indices=held_idx, dropped=dropped, truncated=n_trunc,
                      eot_id=eot)


def _build_lora(inputs: _Inputs, engine: Any, data: _Tokenized, s: FinetuneSettings, torch: Any, transformers: Any,
                peft: Any, device: str) -> _Lora:
    """The torch base (checked against the engine) with a new LoRA adapter, or the
    ``init_adapter`` to continue from."""
    init_adapter = inputs.init_adapter
    model = _load_torch_model(inputs.base_path, torch, transformers, device)
    vocab = model.get_input_embeddings().weight.shape[0]
    too_big = max(max(e.input_ids) for e in data.train + data.heldout)
    if too_big >= vocab:
        raise InvalidInputError(f"token id {too_big} from loglm's tokenizer is outside the torch model's "
                                f"vocabulary ({vocab}); the base folders disagree")
    agreement = _base_agreement(engine, model, torch, device) if s.check_base else None
    if agreement is not None and not agreement["top1_agree"]:
        warnings.warn(f"torch and loglm disagree on the base model's next token: {agreement}", RuntimeWarning,
                      stacklevel=2)
    if s.dtype == "bfloat16":
        model = model.to(torch.bfloat16)

    rank, target_modules = s.rank, list(s.target_modules)
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
        alpha = s.alpha if s.alpha is not None else 2 * s.rank
        lcfg = peft.LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(s.dropout),
                               target_modules=list(target_modules), bias="none", task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lcfg)
    model.train()
    return _Lora(model=model, rank=rank, alpha=lcfg.lora_alpha, dropout=float(lcfg.lora_dropout),
                 target_modules=list(target_modules), base_check=agreement)


def _base_name(base: Any, base_path: Path) -> str:
    """The base as the adapter config names it: a file or folder name, never this
    machine's absolute path."""
    if base is None:
        return "smollm2-135m"
    if Path(os.fspath(base)).expanduser().exists():
        return base_path.name
    return os.fspath(base)  # a model name such as "qwen2.5-coder-0.5b"


@dataclass(frozen=True)
class _Schedule:
    """Optimizer steps per epoch and in all, and the learning-rate multiplier of a
    0-based step."""

    steps_per_epoch: int
    total: int
    lr_at: Callable[[int], float]


def _schedule(n_train: int, s: FinetuneSettings) -> _Schedule:
    """The schedule of ``n_train`` examples: a linear warm-up over ``warmup_ratio`` of the
    steps, then cosine decay to zero."""
    steps_per_epoch = max(1, math.ceil(math.ceil(n_train / s.batch_size) / s.grad_accum))
    total = int(s.max_steps) if s.max_steps is not None else max(1, int(math.ceil(s.epochs * steps_per_epoch)))
    warm = int(round(s.warmup_ratio * total))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        prog = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))

    return _Schedule(steps_per_epoch=steps_per_epoch, total=total, lr_at=lr_at)


def _progress_bar(total: int) -> Any:
    """A bar over ``total`` steps (the package's one progress helper)."""
    from loglm.progress import progress_bar

    return progress_bar(True, total, "finetune", "step", dynamic_ncols=True)


def _train(run: _Run, lora: _Lora, data: _Tokenized, schedule: _Schedule) -> Tuple[int, float, bool, float]:
    """Step 3, the loop: AdamW over the LoRA weights, the held-out loss every
    ``eval_steps``, checkpoints every ``save_steps``, the log rewritten every 10 steps.
    Returns (steps done, epochs done, stopped by ``max_seconds``, training seconds)."""
    s, torch, model = run.settings, run.torch, lora.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.lr_at)
    total, steps_per_epoch = schedule.total, schedule.steps_per_epoch
    if s.progress:
        run.bar = _progress_bar(total)

    run.evaluate(model, data.heldout, 0)
    run.write_log()
    rng = random.Random(s.seed)
    step, epoch_f = 0, 0.0
    t_train = time.perf_counter()

    def batches() -> Iterator[List[Example]]:
        while True:
            for b in _length_grouped_batches([len(e) for e in data.train], s.batch_size, rng):
                yield [data.train[i] for i in b]

    it = batches()
    stopped_early = False
    try:
        while step < total:
            if s.max_seconds is not None and time.perf_counter() - t_train > s.max_seconds:
                stopped_early = True
                break
            t0 = time.perf_counter()
            parts = [next(it) for _ in range(s.grad_accum)]
            n_target = sum(sum(len(e) - e.n_prompt for e in b) for b in parts)
            loss_total = 0.0
            n_tok = 0
            for b in parts:
                loss, _ = _loss_sum(model, b, torch, run.device)
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
            run.log["steps"].append({"step": step, "epoch": round(epoch_f, 4), "loss": round(step_loss, 5),
                                     "lr": sched.get_last_lr()[0], "grad_norm": round(gnorm, 4), "tokens": n_tok,
                                     "target_tokens": n_target, "seconds": round(dt, 3)})
            if run.bar is not None:
                run.bar.update(1)
                run.bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{n_tok / dt:.0f}", epoch=f"{epoch_f:.2f}")
            if s.eval_steps and step % s.eval_steps == 0 and step < total:
                run.evaluate(model, data.heldout, step)
            if s.save_steps and step % s.save_steps == 0 and step < total:
                run.save(model, run.ckpt_dir / f"checkpoint-{step}")
            if step % 10 == 0:
                run.log["wall_seconds"] = round(time.perf_counter() - run.t_start, 1)
                run.write_log()
    finally:
        if run.bar is not None:
            run.bar.close()
    return step, epoch_f, stopped_early, time.perf_counter() - t_train


def _start_log(run: _Run, inputs: _Inputs, lora: _Lora, data: _Tokenized, schedule: _Schedule,
               versions: Dict[str, str]) -> Dict[str, Any]:
    """The training log before the first step: arguments, data, base and versions."""
    s = run.settings
    base, init_adapter = inputs.base, inputs.init_adapter
    trainable = sum(p.numel() for p in lora.model.parameters() if p.requires_grad)
    args = {"base": os.fspath(base) if base is not None else None, "base_file": inputs.base_path.name,
            "data": inputs.source, "out": str(run.out_dir), "epochs": s.epochs, "max_steps": s.max_steps, "lr": s.lr,
            "rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout,
            "target_modules": list(lora.target_modules), "max_length": s.max_length, "batch_size": s.batch_size,
            "grad_accum": s.grad_accum, "warmup_ratio": s.warmup_ratio, "weight_decay": s.weight_decay,
            "heldout": s.heldout, "eval_steps": s.eval_steps, "save_steps": s.save_steps,
            "save_dtype": s.save_dtype, "threads": s.threads, "device": run.device, "dtype": s.dtype,
            "max_seconds": s.max_seconds, "seed": s.seed,
            "init_adapter": str(init_adapter) if init_adapter is not None else None}
    return {
        "args": args,
        "notes": s.notes or {},
        "loss": "mean next-token cross-entropy of the response tokens (prompt masked) per optimizer step",
        "prompt_format": "LogLM.encode_prompt(alpaca_prompt(instruction, input)); response = tokenize(output) + end-of-turn",
        "end_of_turn_id": data.eot_id,
        "data_sha256": inputs.data_sha,
        "base_sha256": _hash_base(inputs.base_path),
        "records": len(inputs.records), "train_examples": len(data.train), "heldout_examples": len(data.heldout),
        "heldout_indices": data.heldout_indices, "dropped_too_long": sorted(data.dropped),
        "truncated_responses": data.truncated,
        "train_tokens_per_epoch": sum(len(e) for e in data.train),
        "train_target_tokens_per_epoch": sum(len(e) - e.n_prompt for e in data.train),
        "trainable_parameters": trainable, "steps_total": schedule.total,
        "steps_per_epoch": schedule.steps_per_epoch, "base_check": lora.base_check, "versions": versions,
        "steps": [], "heldout": [],
    }


def _save(run: _Run, lora: _Lora, data: _Tokenized, step: int, epoch_f: float, stopped_early: bool,
          train_secs: float) -> FinetuneResult:
    """Step 4: the final held-out loss, the adapter in ``out`` and the finished log."""
    run.evaluate(lora.model, data.heldout, step)
    run.save(lora.model, run.out_dir)
    log = run.log
    wall = time.perf_counter() - run.t_start
    last = [st["loss"] for st in log["steps"][-20:]]
    log.update({"stopped_by_max_seconds": stopped_early, "train_seconds": round(train_secs, 1),
                "wall_seconds": round(wall, 1), "steps_done": step, "epochs_done": round(epoch_f, 4),
                "tokens_per_second": round(sum(st["tokens"] for st in log["steps"]) / max(train_secs, 1e-9), 1),
                "final_train_loss": round(sum(last) / len(last), 5) if last else float("nan"),
                "final_heldout_loss": log["heldout"][-1]["loss"] if log["heldout"] else None,
                "adapter_files": sorted(p.name for p in run.out_dir.iterdir()
                                        if p.is_file() and p != run.log_file)})
    run.write_log()
    return FinetuneResult(adapter_dir=run.out_dir, steps=step, epochs=round(epoch_f, 4),
                          train_loss=log["final_train_loss"], heldout_loss=log["final_heldout_loss"],
                          seconds=round(wall, 1), log_path=run.log_file, train_examples=len(data.train),
                          heldout_examples=len(data.heldout), heldout_losses=list(log["heldout"]))



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
