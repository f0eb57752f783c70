"""Checkpoints as the ecosystem saves them, loaded without running anything.

``load_checkpoint(model, path)`` takes

- a torch file (``.pt``, ``.pth``, ``.bin``): ``torch.load(..., weights_only=True)``, which refuses to
  unpickle code; a bare state dict or one under ``"state_dict"``, ``"model_state_dict"`` or ``"model"``,
  with a ``"module."`` prefix (from ``DataParallel``) stripped;
- a ``.safetensors`` file;
- a folder written by Hugging Face's ``save_pretrained``: ``model.safetensors``, its shards
  (``model.safetensors.index.json``), or ``pytorch_model.bin``.

A checkpoint that does not fit the model is reported key by key (missing, unexpected, wrong shape).
Weights the model ties (a language model's output layer and its embedding) may be saved once: a
missing name is filled from the name it is tied to.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

Tensor = torch.Tensor
TORCH_SUFFIXES = (".pt", ".pth", ".bin")
PRETRAINED = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read_state(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file or ``save_pretrained`` folder, by name (on the CPU)."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in PRETRAINED if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"checkpoint folder {path} holds none of {', '.join(PRETRAINED)} "
                                    f"(a folder written by save_pretrained)")
        path = found[0]
    elif not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"checkpoint index {path} has no weight_map of shard files") from error
        state = {}
        for shard in shards:
            state.update(read_state(path.parent / shard))
        return state
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            first = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(f"checkpoint {path} is not a safetensors file ({first})") from error
    return _torch_state(path)


def _torch_state(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused:  # torch's own words for why, e.g. "Trying to load unsupported GLOBAL posix.system whose ..."
            why = next(line for line in str(error).splitlines() if "GLOBAL" in line).strip().rstrip(".")
            raise ValueError(f"checkpoint {path} holds a {refused.group(1)} object, which torch.load(weights_only=True) "
                             f"refuses to unpickle ({why}); save model.state_dict() instead") from error
        reason = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(error), re.S)
        raise ValueError(f"checkpoint {path} is not a file torch.load can read"
                         + (f" ({reason.group(1)})" if reason else "")) from error
    except Exception as error:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        if zipped and not zipfile.is_zipfile(path):
            raise ValueError(f"checkpoint {path} is truncated: it starts as torch.save's zip archive but its end is "
                             f"missing ({path.stat().st_size:,} bytes); was it still being written?") from error
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"checkpoint {path} is not a file torch.load can read ({type(error).__name__}: {first})") from error
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} is not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def _tied(model: nn.Module) -> dict[str, list[str]]:
    """Every name of a parameter the model ties -> the other names of the same tensor."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return {name: [other for other in group if other != name] for group in names.values() if len(group) > 1
            for name in group}


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights at ``path`` (see the module docstring) into ``model``, or say key by key why they do not fit."""
    state = read_state(path)
    expected = model.state_dict()
    tied = _tied(model)
    for name, others in tied.items():  # saved once under another of its names
        if name not in state and name in expected:
            source = next((o for o in others if o in state), None)
            if source is not None:
                state[name] = state[source]
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
    problems += [f"{k} has shape {tuple(state[k].shape)} in the checkpoint but {tuple(v.shape)} in the model"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape][:5]
    if problems:
        raise ValueError(f"checkpoint {path} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state)
    return model
