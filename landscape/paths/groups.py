"""Permutation groups of a model's hidden units, read from the operations its forward runs (for ``paths.align``).

The forward is traced once on a probe batch by ``torch.export`` (ATen operations, with shapes), and every dim of
every tensor gets a label: a tuple of atoms, each a factor of the dim's size (mixed radix, outermost first). A
parameter's dims start as free atoms; the model's inputs, outputs and anything made in forward that varies
along a dim (``arange``, a constant, a non-persistent buffer) are fixed. Each operation ties the atoms it
mixes: a Linear ties its weight's input dim to x's last dim, a residual addition ties the two streams, a
LayerNorm ties its weight to the units it normalizes, ``view(b, t, heads, d)`` splits an atom into heads x head
dims, attention ties q's heads to k's and v's. Unification is exact (union-find, splitting an atom class-wide
where two factorizations meet). What stays free after the whole forward is a group: permuting its atoms in
every parameter leaves the function unchanged. An operation the tracer does not know pins (fixes) every atom
it touches, so the answer is always safe; the reasons are kept in ``Structure.pinned``. The atoms' algebra is
``paths.atoms``, the rule of each operation ``paths.operations``; here, the trace and the groups' names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from landscape.core.data import inputs, move
from landscape.paths.atoms import Atoms, atoms_of
from landscape.paths.operations import read, shape_of

Tensor = torch.Tensor
Dim = tuple  # a dim's atoms as ((size, group or None), ...), outermost first; None where no group permutes it


@dataclass(frozen=True)
class Structure:
    """A model's permutation groups ``{name: units}``; for every state-dict key, per dim, the atoms it is made of
    (``axes``: None for a dim no group permutes) and its shape; ``pinned``: ``"key dim d" -> reason`` for the
    parameter dims an operation kept from being permuted.

    e.g. a ResNet's ``layer1.0.conv2.weight``: ``(((16, "conv"),), ((16, "layer1.0.conv1"),), None, None)``; a
    packed attention projection's dim 0: ``((3, None), (4, "attn.heads"), (16, "attn.head_dims"))``.
    """

    groups: dict[str, int]
    axes: dict[str, tuple[Dim | None, ...]]
    shapes: dict[str, tuple[int, ...]]
    pinned: dict[str, str] = field(default_factory=dict)

    def groups_of(self, key: str) -> tuple[tuple[str, ...] | None, ...]:
        """Per dim of ``key``, the names of the groups permuting it (None where none do)."""
        return tuple(None if dim is None else tuple(g for _, g in dim if g) for dim in self.axes[key])


def arguments(model: nn.Module, probe) -> tuple[tuple, dict]:
    """``probe`` (a tensor, a tuple of inputs, or a dict of keyword arguments) as the (args, kwargs) of a call of
    ``model`` (``core.data.inputs``), floating tensors in the dtype and on the device of its parameters."""
    reference = next((p for p in model.parameters() if p.is_floating_point()), torch.empty(0))
    return inputs(move(probe, reference.device, reference.dtype), model)


def tensors(out) -> list[Tensor]:
    """The tensors in a model's output (nested in tuples, lists and mappings; other objects, a cache, left out)."""
    if isinstance(out, Tensor):
        return [out]
    items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    return [t for item in items for t in tensors(item)]


class _Call(nn.Module):
    """The model with its output reduced to the tensors in it, for ``torch.export``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, args, kwargs):
        return tensors(self.model(*args, **kwargs))


def _export(model: nn.Module, probe):
    args, kwargs = arguments(model, probe)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        return torch.export.export(_Call(model), (args, kwargs), strict=False)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"align reads the model's operations with torch.export, which cannot trace "
                         f"{type(model).__name__} on this probe batch: {type(error).__name__}: {first}") from error
    finally:
        for m, mode in modes.items():
            m.training = mode


def structure(model: nn.Module, probe) -> Structure:
    """The model's permutation groups and how they permute each state-dict tensor, read from the forward on
    ``probe`` (a batch of inputs: a tensor, a tuple of tensors, or a dict of keyword arguments).

    Each group is named after the module of the first state-dict tensor it permutes (a residual stream after its
    stem or embedding, a hidden layer after the layer writing it); two groups in one dim, an attention
    projection's heads and each head's dims, are "<projection>.heads" and "<projection>.head_dims". e.g.
    ``nn.Sequential(Linear(64, 32), Tanh(), Linear(32, 10))`` on a [n, 64] probe: groups ``{"0": 32}``.
    """
    program = _export(model, probe)
    state = {k: t for k, t in model.state_dict().items() if isinstance(t, Tensor)}
    atoms = Atoms()
    labels: dict[str, object] = {}  # node name -> list of per-dim labels (or a list of those for a tuple)
    named = {**program.graph_signature.inputs_to_parameters, **program.graph_signature.inputs_to_buffers}
    keys: dict[str, str] = {}  # state-dict key -> placeholder
    for node in program.graph.nodes:
        if node.op == "placeholder":
            key = named.get(node.name, "").removeprefix("model.")
            keys[key] = node.name
            made = key not in state and node.name not in program.graph_signature.user_inputs
            what = f"the buffer {key!r} (not in the state dict)" if key else f"the constant {node.target!r}"
            labels[node.name] = atoms.label(shape_of(node.meta.get("val")) or (), fixed=key not in state,
                                            reason=f"{what} in forward" if made else None)
        elif node.op == "call_function":
            labels[node.name] = read(node, labels, atoms)
        elif node.op == "output":
            for arg in node.args[0]:
                if hasattr(arg, "name") and arg.name in labels:
                    atoms.fix(atoms_of(labels[arg.name]))  # no reason: the outputs' units are the user's

    used = {node.name for node in program.graph.nodes if node.users}
    names_of: dict[tuple, list[str]] = {}  # one tensor under several keys (tied weights): one permutation
    for key, t in state.items():
        if key in keys:  # (export lifts every parameter and persistent buffer)
            names_of.setdefault((t.data_ptr(), t.shape, t.stride()), []).append(key)
    for tied in names_of.values():
        first = labels[keys[tied[0]]]
        for key in tied[1:]:
            for a, b in zip(first, labels[keys[key]]):
                atoms.unify(a, b, "")
        if not any(keys[k] in used for k in tied):  # never read by forward: left alone
            atoms.fix(atoms_of(first))
    dims = {key: [atoms.leaves(d) for d in labels[keys[key]]] if key in keys else [[] for _ in t.shape]
            for key, t in state.items()}

    groups: dict[str, int] = {}
    names: dict[int, str] = {}
    pinned: dict[str, str] = {}
    for key, per_dim in dims.items():
        module = key.rpartition(".")[0] or key
        for d, leaves in enumerate(per_dim):
            free = [a for a in leaves if not atoms.fixed[a]]
            reasons = [atoms.reason[a] for a in leaves if atoms.reason[a]]
            if reasons and not free:
                pinned[f"{key} dim {d}"] = reasons[0]
            for k, a in enumerate(free):
                if a in names:
                    continue
                suffix = "" if len(free) == 1 else (".heads", ".head_dims")[k] if len(free) == 2 else f".{k}"
                name = next(n for n in (module + suffix, key + suffix, f"{key}{suffix}.dim{d}") if n not in groups)
                names[a], groups[name] = name, atoms.size[a]
    axes = {key: tuple(tuple((atoms.size[a], names.get(a)) for a in leaves)
                       if any(a in names for a in leaves) else None for leaves in per_dim)
            for key, per_dim in dims.items()}
    return Structure(groups, axes, {k: tuple(t.shape) for k, t in state.items()}, pinned)
