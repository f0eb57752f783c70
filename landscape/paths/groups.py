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
it touches, so the answer is always safe; the reasons are kept in ``Structure.pinned``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from landscape.core.data import inputs, move

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


class _Atoms:
    """Union-find over atoms: each has a size, a fixed flag, a reason it was fixed, and, once split into factors,
    its parts (the class's split, seen by every member through its root)."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []
        self.reason: list[str | None] = []
        self.parts: list[tuple[int, ...] | None] = []

    def new(self, size: int, fixed: bool) -> int:
        for store, value in ((self.parent, len(self.parent)), (self.size, size), (self.fixed, fixed),
                             (self.reason, None), (self.parts, None)):
            store.append(value)
        return len(self.parent) - 1

    def label(self, sizes, fixed: bool, reason: str | None = None) -> list[tuple[int, ...]]:
        """Fresh labels for a tensor of shape ``sizes``: one atom a dim (none for a dim of size 1)."""
        labels = [(self.new(int(s), fixed),) if s != 1 else () for s in sizes]
        for label in labels:
            for a in label:
                self.reason[a] = reason if fixed else None
        return labels

    def root(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def leaves(self, label) -> list[int]:
        """The unsplit atoms (roots) a label is made of, outermost first; atoms of size 1 left out."""
        out: list[int] = []
        for a in label:
            r = self.root(a)
            if self.parts[r] is not None:
                out += self.leaves(self.parts[r])
            elif self.size[r] > 1:
                out.append(r)
        return out

    def split(self, a: int, outer: int) -> tuple[int, int]:
        """Split a leaf's class into (outer, size / outer) atoms."""
        r = self.root(a)
        assert self.parts[r] is None, "only an unsplit class splits"
        parts = (self.new(outer, self.fixed[r]), self.new(self.size[r] // outer, self.fixed[r]))
        for p in parts:
            self.reason[p] = self.reason[r]
        self.parts[r] = parts
        return parts

    def fix(self, label, reason: str | None = None) -> None:
        """Fix a label's atoms; ``reason``: the operation that keeps them, None where nothing could move them
        anyway (the model's inputs and outputs, a vocabulary), which wins over any operation's reason."""
        for r in self.leaves(label):
            if not self.fixed[r]:
                self.fixed[r], self.reason[r] = True, reason
            elif reason is None:
                self.reason[r] = None

    def unify(self, x, y, reason: str) -> None:
        """Tie two labels of equal size atom by atom, splitting atoms where the factorizations differ; where they
        cannot meet (sizes 6 x 4 against 4 x 6) every atom of both is fixed."""
        x, y = self.leaves(x), self.leaves(y)
        while x and y:
            a, b = self.root(x.pop(0)), self.root(y.pop(0))
            if self.parts[a] is not None or self.parts[b] is not None:  # split since listed (a class seen twice)
                x[:0], y[:0] = self.leaves([a]), self.leaves([b])
                continue
            if a == b:
                continue
            sa, sb = self.size[a], self.size[b]
            if sa == sb:
                a, b = min(a, b), max(a, b)
                self.parent[b] = a
                if self.fixed[b] and not self.fixed[a]:
                    self.fixed[a], self.reason[a] = True, self.reason[b]
                elif self.fixed[b] and self.reason[b] is None:
                    self.reason[a] = None
            elif sa % sb == 0:
                x[:0], y[:0] = self.split(a, sb), [b]
            elif sb % sa == 0:
                x[:0], y[:0] = [a], self.split(b, sa)
            else:
                self.fix([a, b, *x, *y], reason)
                return
        self.fix(x + y, reason)


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


def _shape(value) -> tuple[int, ...] | None:
    return tuple(int(s) for s in value.shape) if isinstance(value, Tensor) else None


_SAME = {"dropout", "contiguous", "_to_copy", "to", "type_as", "detach", "alias", "lift_fresh_copy", "clone",
         "native_dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"}  # x's labels, as they are
_EQUIVARIANT = {"softmax", "log_softmax", "_softmax", "_log_softmax"}  # along any dim: units permuted stay permuted
_REDUCTIONS = {"sum", "mean", "amax", "amin", "var", "std", "logsumexp", "prod", "any", "all"}  # (x, dims, keepdim)
_RESHAPES = {"view", "reshape", "_unsafe_view", "_reshape_alias", "flatten", "unflatten", "squeeze", "unsqueeze",
            "view_copy"}
_POOLS = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
         "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
         "adaptive_max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices", "upsample_nearest2d",
         "upsample_bilinear2d"}
_UNIFORM = {"zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "empty_like", "new_zeros",
           "new_ones", "new_full", "new_empty", "scalar_tensor"}  # the same value everywhere: any order is theirs


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
    atoms = _Atoms()
    labels: dict[str, object] = {}  # node name -> list of per-dim labels (or a list of those for a tuple)
    named = {**program.graph_signature.inputs_to_parameters, **program.graph_signature.inputs_to_buffers}
    keys: dict[str, str] = {}  # state-dict key -> placeholder
    for node in program.graph.nodes:
        if node.op == "placeholder":
            key = named.get(node.name, "").removeprefix("model.")
            keys[key] = node.name
            made = key not in state and node.name not in program.graph_signature.user_inputs
            what = f"the buffer {key!r} (not in the state dict)" if key else f"the constant {node.target!r}"
            labels[node.name] = atoms.label(_shape(node.meta.get("val")) or (), fixed=key not in state,
                                            reason=f"{what} in forward" if made else None)
        elif node.op == "call_function":
            try:
                labels[node.name] = _operation(node, labels, atoms)
            except Exception as error:  # a form of an operation this reading did not foresee: its units stay
                reason = f"{node.target} (not read: {type(error).__name__})"
                labels[node.name] = _pin(node, lambda a: labels.get(getattr(a, "name", None)), atoms, reason,
                                         lambda: _fresh(atoms, node.meta.get("val"), True, reason))
        elif node.op == "output":
            for arg in node.args[0]:
                if hasattr(arg, "name") and arg.name in labels:
                    atoms.fix(_flat(labels[arg.name]))  # no reason: the outputs' units are the user's

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
            atoms.fix(_flat(first))
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


def _flat(value) -> list[int]:
    """Every atom of a node's labels (a tensor's dims, or a tuple of tensors')."""
    if isinstance(value, tuple):
        return list(value)
    return [a for item in value or () for a in _flat(item)]


def _operation(node, labels: dict, atoms: _Atoms):
    """The labels of ``node``'s output, after tying the atoms of its inputs the operation mixes."""
    target = node.target
    out_val = node.meta.get("val")
    stack = list((node.meta.get("nn_module_stack") or {}).values())  # (path, class) of the modules it runs in
    path = stack[-1][0].removeprefix("model").removeprefix(".") if stack else ""
    name = getattr(getattr(target, "_overloadpacket", None), "__name__", getattr(target, "__name__", str(target)))
    reason = f"{name} in {f'the forward of {path!r}' if path else 'forward'}"

    def lab(arg):
        return labels.get(arg.name) if hasattr(arg, "name") else None

    def shape(arg):
        return _shape(arg.meta.get("val")) if hasattr(arg, "meta") else None

    given = [a for a in _nodes(node.args, node.kwargs) if isinstance(lab(a), list)]
    out_shape = _shape(out_val)

    def fresh(fixed=True):
        return _fresh(atoms, out_val, fixed, reason)

    if target is operator.getitem:
        source = lab(node.args[0])
        return source[node.args[1]] if isinstance(source, list) and node.args[1] < len(source) else None
    if not isinstance(out_val, (Tensor, tuple, list)) or (
            isinstance(out_val, (tuple, list)) and not any(isinstance(v, Tensor) for v in out_val)):
        return None  # a number, a shape, an assertion
    if name in _UNIFORM:
        return fresh(fixed=False)
    if not given:
        return fresh()  # made in forward (arange, random): fixed
    x = given[0]
    if name in _SAME:  # x unchanged in its units (a copy, a cast, dropout); native_dropout adds its mask
        return list(lab(x)) if isinstance(out_val, Tensor) else [list(lab(x)) for _ in out_val]
    if torch.Tag.pointwise in getattr(target, "tags", ()):
        if isinstance(out_val, Tensor):
            out = atoms.label(out_shape, fixed=False)
            _broadcast(atoms, reason, out, out_shape, *((lab(a), shape(a)) for a in given))
            return out
    if name in _EQUIVARIANT:
        return list(lab(x))
    if name in _REDUCTIONS and isinstance(out_val, Tensor):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        n = len(shape(x))
        dims = range(n) if dims in (None, []) else [dims] if isinstance(dims, int) else dims
        dims = {d % n for d in dims}
        keep = node.args[2] if len(node.args) > 2 and name not in ("var", "std") else node.kwargs.get("keepdim", False)
        out = [() if d in dims else lab(x)[d] for d in range(n) if keep or d not in dims]
        return out if len(out) == len(out_shape) else _pin(node, lab, atoms, reason, fresh)
    if name in _RESHAPES:
        return _reshape(lab(x), shape(x), out_shape, atoms, reason)
    if name in ("permute", "transpose", "t", "movedim", "swapaxes", "numpy_T"):
        order = _order(name, node, len(shape(x)))
        return [lab(x)[i] for i in order] if order else _pin(node, lab, atoms, reason, fresh)
    if name in ("expand", "expand_as", "broadcast_to"):
        source, size = lab(x), shape(x)
        pad = len(out_shape) - len(size)
        out = atoms.label(out_shape, fixed=False)
        for i, (label, s) in enumerate(zip(source, size)):
            out[pad + i] = label if s == out_shape[pad + i] else out[pad + i]
        return out
    if name in ("select", "unbind", "slice", "split", "split_with_sizes", "chunk", "narrow", "unsafe_split"):
        return _take(name, node, x, lab, shape, out_val, atoms, reason, fresh)
    if name == "cat":
        parts = [a for a in node.args[0] if shape(a) is not None and math.prod(shape(a)) > 0]
        d = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % len(out_shape)
        out = atoms.label(out_shape, fixed=False)
        atoms.fix(out[d], reason)
        for part in parts:
            atoms.fix(lab(part)[d], reason)
            for i in range(len(out_shape)):
                if i != d:
                    atoms.unify(lab(part)[i], out[i], reason)
        return out
    if name in ("linear", "addmm", "mm", "matmul", "bmm", "baddbmm"):
        return _product(name, node, lab, shape, out_shape, atoms, reason)
    if name in ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
                "conv_transpose3d"):
        return _convolution(name, node, lab, shape, out_shape, atoms, reason) or _pin(node, lab, atoms, reason, fresh)
    if name in ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm", "instance_norm"):
        for p in node.args[1:5]:
            if lab(p):
                atoms.unify(lab(p)[0], lab(x)[1], reason)
        out = list(lab(x))
        return out if isinstance(out_val, Tensor) else [out, *(fresh()[1:])]
    if name in ("layer_norm", "rms_norm", "native_layer_norm"):
        k = len(node.args[1])
        for p in node.args[2:4]:
            if lab(p):
                for i in range(k):
                    atoms.unify(lab(p)[i], lab(x)[len(lab(x)) - k + i], reason)
        return list(lab(x)) if isinstance(out_val, Tensor) else [list(lab(x)), *(fresh()[1:])]
    if name == "embedding":
        weight, indices = lab(node.args[0]), lab(node.args[1])
        atoms.fix(weight[0])  # rows are looked up by the indices' values
        return list(indices) + [weight[1]]
    if name == "scaled_dot_product_attention":
        return _attention(node, lab, shape, out_shape, atoms, reason)
    if name in _POOLS:
        k = len(node.args[1]) if name.startswith("adaptive") else (
            int(name[-2]) if name[-2].isdigit() else int(name[name.index("pool") + 4]))
        source = lab(x)
        atoms.fix(_flat(source[len(source) - k:]), reason)
        spatial = atoms.label(out_shape[len(out_shape) - k:], fixed=True)
        out = list(source[:len(source) - k]) + spatial
        return out if isinstance(out_val, Tensor) else [out, list(out)]
    if name in ("constant_pad_nd", "pad"):
        pads = list(node.args[1])
        out = list(lab(x))
        for i in range(len(pads) // 2):
            d = len(out) - 1 - i
            if pads[2 * i] or pads[2 * i + 1]:
                atoms.fix(out[d], reason)
                out[d] = atoms.label((out_shape[d],), fixed=True)[0]
        return out
    return _pin(node, lab, atoms, reason, fresh)


def _fresh(atoms: _Atoms, value, fixed: bool, reason: str):
    """New labels for an operation's output ``value``: a tensor's, or one per tensor of a tuple (None for others)."""
    if isinstance(value, (tuple, list)):
        return [atoms.label(_shape(v), fixed, reason) if isinstance(v, Tensor) else None for v in value]
    return atoms.label(_shape(value), fixed, reason) if isinstance(value, Tensor) else None


def _pin(node, lab, atoms: _Atoms, reason: str, fresh):
    """An operation align does not follow: every atom it touches is fixed (never permuted)."""
    for a in _nodes(node.args, node.kwargs):
        if isinstance(lab(a), list):
            atoms.fix(_flat(lab(a)), reason)
    return fresh()


def _nodes(*args) -> list:
    found: list = []
    torch.fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _order(name: str, node, n: int) -> list[int] | None:
    """The input dim each output dim of a transposition comes from."""
    order = list(range(n))
    if name == "permute":
        return [d % n for d in node.args[1]]
    if name in ("transpose", "swapaxes"):
        a, b = node.args[1] % n, node.args[2] % n
        order[a], order[b] = b, a
        return order
    if name in ("t", "numpy_T"):
        return order[::-1]
    if name == "movedim" and isinstance(node.args[1], int):
        src, dst = node.args[1] % n, node.args[2] % n
        order.remove(src)
        order.insert(dst, src)
        return order
    return None


def _reshape(source: list, in_shape, out_shape, atoms: _Atoms, reason: str) -> list:
    """A view's labels: the input's atoms in order, cut into the output's dims (split where a dim ends inside)."""
    everything = [a for label in source for a in label]
    if math.prod(in_shape) != math.prod(out_shape):  # not a view of the same elements (a view as another dtype)
        atoms.fix(everything, reason)
        return atoms.label(out_shape, fixed=True, reason=reason)
    leaves = atoms.leaves(everything)
    out: list[tuple[int, ...]] = []
    for size in out_shape:
        take: list[int] = []
        need = size
        while need > 1 and leaves:
            a = atoms.root(leaves.pop(0))
            if atoms.parts[a] is not None:  # split since listed (a class seen twice)
                leaves[:0] = atoms.leaves([a])
                continue
            s = atoms.size[a]
            if need % s == 0:
                take.append(a)
                need //= s
            elif s % need == 0:
                first, rest = atoms.split(a, need)
                take.append(first)
                leaves.insert(0, rest)
                need = 1
            else:  # the view cuts an atom where no factorization fits: fix it all, the dims made so far too
                atoms.fix(everything, reason)
                return atoms.label(out_shape, fixed=True, reason=reason)
        out.append(tuple(take))
    return out


def _take(name, node, x, lab, shape, out_val, atoms: _Atoms, reason: str, fresh):
    """select/unbind (fix the dim's atoms: one unit is taken), slice/narrow (the same dim when whole), split and
    chunk (into equal parts: the dim is split into (parts, rest), the parts' atom fixed)."""
    source, size = lab(x), shape(x)
    n = len(size)
    d = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) if name in ("select", "unbind") else (
        node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0))
    if name in ("slice", "narrow"):
        d = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % n
        if _shape(out_val)[d] == size[d]:
            return list(source)
        atoms.fix(source[d], reason)
        return source[:d] + [atoms.label((_shape(out_val)[d],), fixed=True)[0]] + source[d + 1:]
    d %= n
    if name in ("select", "unbind"):
        atoms.fix(source[d], reason)
        rest = source[:d] + source[d + 1:]
        return rest if name == "select" else [list(rest) for _ in out_val]
    sizes = {_shape(v)[d] for v in out_val}
    if len(sizes) != 1 or size[d] % len(out_val):
        atoms.fix(source[d], reason)
        return [source[:d] + [atoms.label((_shape(v)[d],), fixed=True)[0]] + source[d + 1:] for v in out_val]
    parts, rest = atoms.new(len(out_val), fixed=True), atoms.new(size[d] // len(out_val), fixed=False)
    atoms.unify(source[d], (parts, rest), reason)
    return [source[:d] + [(rest,)] + source[d + 1:] for _ in out_val]


def _broadcast(atoms: _Atoms, reason: str, out: list, out_shape, *operands) -> None:
    """Tie each operand's dims (``(labels, shape)``) to the output's, aligned from the right: where the sizes are
    equal; a dim of size 1 is broadcast (the same for every unit); any other size fixes both (grouped-query
    attention's fewer key heads: head i meets key head i // g, which no permutation of one group keeps)."""
    for labels, shape in operands:
        for i in range(1, min(len(shape), len(out_shape)) + 1):
            if shape[-i] == out_shape[-i]:
                atoms.unify(labels[-i], out[-i], reason)
            elif shape[-i] != 1:
                atoms.fix(list(labels[-i]) + list(out[-i]), reason)


def _product(name, node, lab, shape, out_shape, atoms: _Atoms, reason: str) -> list:
    """Matrix products: the contracted dims tied, the kept ones carried, batch dims broadcast."""
    if name == "linear":
        x, w = lab(node.args[0]), lab(node.args[1])
        atoms.unify(x[-1], w[1], reason)
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if bias is not None and lab(bias):
            atoms.unify(lab(bias)[0], w[0], reason)
        return list(x[:-1]) + [w[0]]
    first = 1 if name in ("addmm", "baddbmm") else 0
    a, b = node.args[first], node.args[first + 1]
    la, lb = lab(a), lab(b)
    if len(la) == 1 or len(lb) == 1:  # a vector on one side (or both: a number)
        atoms.unify(la[-1], lb[-2] if len(lb) > 1 else lb[0], reason)
        out = [] if len(la) == len(lb) == 1 else list(lb[:-2]) + [lb[-1]] if len(la) == 1 else list(la[:-1])
    else:
        atoms.unify(la[-1], lb[-2], reason)
        batch = atoms.label(out_shape[:-2], fixed=False)
        out = batch + [la[-2], lb[-1]]
        _broadcast(atoms, reason, batch, out_shape[:-2], (la[:-2], shape(a)[:-2]), (lb[:-2], shape(b)[:-2]))
    if first:
        _broadcast(atoms, reason, out, out_shape, (lab(node.args[0]), shape(node.args[0])))
    return out


def _convolution(name, node, lab, shape, out_shape, atoms: _Atoms, reason: str) -> list | None:
    """A convolution: channels in and out through the weight's dims 1 and 0 (0 and 1 transposed); a depthwise one
    keeps its channels; other groups are not followed (None)."""
    x, w = lab(node.args[0]), lab(node.args[1])
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    transposed = "transpose" in name or (name == "convolution" and node.args[6])
    at = 8 if name == "convolution" else 6  # (x, w, b, stride, padding, dilation, groups) or transposed ones
    groups = node.args[at] if len(node.args) > at else node.kwargs.get("groups", 1)
    channel = len(x) - len(w) + 1  # 1 for [N, C, ...], 0 for an unbatched [C, ...]
    spatial = atoms.label(out_shape[channel + 1:], fixed=True)
    atoms.fix(_flat(x[channel + 1:]), reason)
    atoms.fix(_flat(w[2:]))  # the kernel's taps
    if groups == 1:
        atoms.unify(x[channel], w[0 if transposed else 1], reason)
        out_channels = w[1 if transposed else 0]
    elif not transposed and groups == shape(node.args[0])[channel] == out_shape[channel]:
        atoms.unify(x[channel], w[0], reason)  # depthwise: channel c from channel c
        out_channels = w[0]
    else:
        return None
    if bias is not None and lab(bias):
        atoms.unify(lab(bias)[0], out_channels, reason)
    return list(x[:channel]) + [out_channels] + spatial


def _attention(node, lab, shape, out_shape, atoms: _Atoms, reason: str) -> list:
    """softmax(q k^T / sqrt(d) + mask) v over [..., L, E] queries, [..., S, E] keys, [..., S, Ev] values: the
    batch dims (heads) tied across q, k, v, q's and k's E tied, k's and v's S tied; the output [..., L, Ev]."""
    q, k, v = node.args[:3]
    lq, lk, lv = lab(q), lab(k), lab(v)
    atoms.unify(lq[-1], lk[-1], reason)
    atoms.unify(lk[-2], lv[-2], reason)
    batch = atoms.label(out_shape[:-2], fixed=False)
    _broadcast(atoms, reason, batch, out_shape[:-2], *((lab(t)[:-2], shape(t)[:-2]) for t in (q, k, v)))
    if (node.args[5] if len(node.args) > 5 else node.kwargs.get("is_causal")) is True:
        atoms.fix(list(lq[-2]) + list(lk[-2]), reason)  # query i sees keys up to i: positions keep their order
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if mask is not None and lab(mask):
        scores = (*out_shape[:-2], shape(q)[-2], shape(k)[-2])
        _broadcast(atoms, reason, batch + [lq[-2], lk[-2]], scores, (lab(mask), shape(mask)))
    return batch + [lq[-2], lv[-1]]
