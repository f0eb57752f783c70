"""A user cache of trained built-in problems, so that a command does not train one again.

Where: ``$LANDSCAPE_CACHE`` if set, else ``$XDG_CACHE_HOME/landscape-dynamics``, else
``~/.cache/landscape-dynamics``. Each entry is ``builtins/<name>-<key>.safetensors``: the trained model's state
dict, with the problem's description in its metadata. The key is a sha256 of everything that decides the
weights: the built-in's name, every argument (defaults included), the source code of the modules that define the
builder (its training loop and data) and the model's classes, and the toolkit's and torch's versions; anything
else gives another key. Delete the folder to clear the cache;
``landscape.load(name, cache=False)`` (``--no-cache`` on the command line) trains afresh and leaves it alone.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

Tensor = torch.Tensor


def folder() -> Path:
    """The cache's folder (see the module docstring); it need not exist yet."""
    if os.environ.get("LANDSCAPE_CACHE"):
        return Path(os.environ["LANDSCAPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "landscape-dynamics"


def entry(name: str, builder, arguments: dict, model: nn.Module) -> Path:
    """Where the built-in ``name`` trained by ``builder(**arguments)`` is (or would be) kept; ``model`` is the
    untrained model it builds, whose classes' modules enter the key with the builder's (torch's do not)."""
    from landscape import __version__

    modules = {inspect.getmodule(builder)} | {inspect.getmodule(type(m)) for m in model.modules()}
    sources = {m.__name__: inspect.getsource(m) for m in modules if not m.__name__.startswith("torch")}
    recipe = json.dumps({"name": name, "arguments": {k: repr(v) for k, v in sorted(arguments.items())},
                         "sources": sources, "landscape": __version__, "torch": torch.__version__}, sort_keys=True)
    return folder() / "builtins" / f"{name}-{hashlib.sha256(recipe.encode()).hexdigest()[:20]}.safetensors"


def read(path: Path) -> tuple[dict[str, Tensor], str] | None:
    """The state dict and description kept at ``path``, or None when there is none (or it cannot be read)."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}, f.metadata().get("description", "")
    except Exception as error:  # a damaged entry: train again (and replace it)
        warnings.warn(f"the cached built-in {path} cannot be read ({type(error).__name__}); training it again",
                      stacklevel=3)
        return None


def write(path: Path, model: nn.Module, description: str) -> None:
    """Keep ``model``'s state dict at ``path`` (written whole, then renamed into place); a cache that cannot be
    written (a read-only home) is said once and skipped."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        state = {key: t.detach().contiguous().cpu() for key, t in model.state_dict(keep_vars=False).items()}
        save_file(state, partial, metadata={"description": description})
        partial.replace(path)
    except OSError as error:
        warnings.warn(f"the built-in's cache {folder()} cannot be written ({error}); set LANDSCAPE_CACHE to a "
                      f"writable folder", stacklevel=3)
