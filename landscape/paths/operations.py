"""How each ATen operation of a traced forward ties the unit atoms of its tensors (for ``paths.groups``).

``read(node, labels, atoms)`` gives the labels of one operation's output (a tensor's per-dim labels, or one per
tensor of a tuple) after tying the atoms of its inputs that the operation mixes: contractions (linear, addmm,
matmul, convolutions) tie the contracted dims, pointwise operations tie their operands' dims by broadcasting,
norms tie their affine parameters to the units they normalize, views cut and merge atoms, attention ties q, k and
v head by head. An operation it does not know, or a form of one it did not foresee, pins (fixes) every atom it
touches, named by the operation and the module whose forward ran it.
"""

from __future__ import annotations

import math
import operator

import torch

from landscape.paths.atoms import Atoms, atoms_of

Tensor = torch.Tensor


def shape_of(value) -> tuple[int, ...] | None:
    """The shape of a traced value (a node's ``meta["val"]``), None for anything but a tensor."""
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


def read(node, labels: dict, atoms: Atoms):
    """The labels of the output of ``node`` (an fx node of an exported program: ``call_function``), its inputs'
    ``labels`` (by node name) tied in ``atoms`` as the operation mixes them; a form of an operation this reading
    did not foresee pins its units (never a traceback)."""
    try:
        return _operation(node, labels, atoms)
    except Exception as error:
        reason = f"{node.target} (not read: {type(error).__name__})"
        return _pin(node, lambda a: labels.get(getattr(a, "name", None)), atoms, reason,
                    lambda: _fresh(atoms, node.meta.get("val"), True, reason))


def _operation(node, labels: dict, atoms: Atoms):
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
        return shape_of(arg.meta.get("val")) if hasattr(arg, "meta") else None

    given = [a for a in _nodes(node.args, node.kwargs) if isinstance(lab(a), list)]
    out_shape = shape_of(out_val)

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
        atoms.fix(atoms_of(source[len(source) - k:]), reason)
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


def _fresh(atoms: Atoms, value, fixed: bool, reason: str):
    """New labels for an operation's output ``value``: a tensor's, or one per tensor of a tuple (None for others)."""
    if isinstance(value, (tuple, list)):
        return [atoms.label(shape_of(v), fixed, reason) if isinstance(v, Tensor) else None for v in value]
    return atoms.label(shape_of(value), fixed, reason) if isinstance(value, Tensor) else None


def _pin(node, lab, atoms: Atoms, reason: str, fresh):
    """An operation align does not follow: every atom it touches is fixed (never permuted)."""
    for a in _nodes(node.args, node.kwargs):
        if isinstance(lab(a), list):
            atoms.fix(atoms_of(lab(a)), reason)
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


def _reshape(source: list, in_shape, out_shape, atoms: Atoms, reason: str) -> list:
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


def _take(name, node, x, lab, shape, out_val, atoms: Atoms, reason: str, fresh):
    """select/unbind (fix the dim's atoms: one unit is taken), slice/narrow (the same dim when whole), split and
    chunk (into equal parts: the dim is split into (parts, rest), the parts' atom fixed)."""
    source, size = lab(x), shape(x)
    n = len(size)
    d = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) if name in ("select", "unbind") else (
        node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0))
    if name in ("slice", "narrow"):
        d = (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % n
        if shape_of(out_val)[d] == size[d]:
            return list(source)
        atoms.fix(source[d], reason)
        return source[:d] + [atoms.label((shape_of(out_val)[d],), fixed=True)[0]] + source[d + 1:]
    d %= n
    if name in ("select", "unbind"):
        atoms.fix(source[d], reason)
        rest = source[:d] + source[d + 1:]
        return rest if name == "select" else [list(rest) for _ in out_val]
    sizes = {shape_of(v)[d] for v in out_val}
    if len(sizes) != 1 or size[d] % len(out_val):
        atoms.fix(source[d], reason)
        return [source[:d] + [atoms.label((shape_of(v)[d],), fixed=True)[0]] + source[d + 1:] for v in out_val]
    parts, rest = atoms.new(len(out_val), fixed=True), atoms.new(size[d] // len(out_val), fixed=False)
    atoms.unify(source[d], (parts, rest), reason)
    return [source[:d] + [(rest,)] + source[d + 1:] for _ in out_val]


def _broadcast(atoms: Atoms, reason: str, out: list, out_shape, *operands) -> None:
    """Tie each operand's dims (``(labels, shape)``) to the output's, aligned from the right: where the sizes are
    equal; a dim of size 1 is broadcast (the same for every unit); any other size fixes both (grouped-query
    attention's fewer key heads: head i meets key head i // g, which no permutation of one group keeps)."""
    for labels, shape in operands:
        for i in range(1, min(len(shape), len(out_shape)) + 1):
            if shape[-i] == out_shape[-i]:
                atoms.unify(labels[-i], out[-i], reason)
            elif shape[-i] != 1:
                atoms.fix(list(labels[-i]) + list(out[-i]), reason)


def _product(name, node, lab, shape, out_shape, atoms: Atoms, reason: str) -> list:
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


def _convolution(name, node, lab, shape, out_shape, atoms: Atoms, reason: str) -> list | None:
    """A convolution: channels in and out through the weight's dims 1 and 0 (0 and 1 transposed); a depthwise one
    keeps its channels; other groups are not followed (None)."""
    x, w = lab(node.args[0]), lab(node.args[1])
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    transposed = "transpose" in name or (name == "convolution" and node.args[6])
    at = 8 if name == "convolution" else 6  # (x, w, b, stride, padding, dilation, groups) or transposed ones
    groups = node.args[at] if len(node.args) > at else node.kwargs.get("groups", 1)
    channel = len(x) - len(w) + 1  # 1 for [N, C, ...], 0 for an unbatched [C, ...]
    spatial = atoms.label(out_shape[channel + 1:], fixed=True)
    atoms.fix(atoms_of(x[channel + 1:]), reason)
    atoms.fix(atoms_of(w[2:]))  # the kernel's taps
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


def _attention(node, lab, shape, out_shape, atoms: Atoms, reason: str) -> list:
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
