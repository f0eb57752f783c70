"""Permutation groups of a model's hidden units, read from its ``torch.fx`` graph (for ``paths.align``).

Every tensor in ``forward`` carries a space of units (its channels, or its last dim after a Linear); a
Linear/Conv layer or an Embedding starts a new space, normalization, activations, dropout and pooling keep
theirs, and adding two tensors (a residual connection) ties their spaces into one, so that every layer
writing into the same residual stream takes the same permutation. The spaces of the model's inputs and
outputs are never permuted, nor any tied to them. A group is named after the first layer writing into it.
After a flatten of a conv output with C channels, the next Linear's inputs are C blocks of S = in_features / C.
Self-attention (``nn.MultiheadAttention(x, x, x)``) is a group of heads: a head's rows of q, k and v and its
columns of the output projection move together, as a block. Anything else in ``forward`` (attention written
by hand, cross-attention, concatenation, products of two tensors, channel padding, a model that cannot be
traced) is refused up front, with the reason and where.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn import functional as F

Axes = tuple  # (group of dim 0, group of dim 1[, segments of dim 0]): the outputs' and inputs' groups

WEIGHTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.LPPool1d,
         nn.LPPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
         nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
PASS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Mish,
        nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Hardshrink, nn.Softshrink,
        nn.Tanhshrink, nn.LogSigmoid, nn.Threshold, nn.Softmax, nn.LogSoftmax, nn.Identity, nn.Dropout,
        nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout) + POOLS
ELEMENTWISE = {F.relu, F.relu6, F.leaky_relu, F.gelu, F.elu, F.selu, F.silu, F.mish, F.softplus, F.hardtanh,
               F.dropout, torch.relu, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh, "relu", "tanh", "sigmoid",
               "relu_", "contiguous", "clone"}
POOLING = {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d,
           F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d}
ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__"}
SUPPORTED = ("align supports Linear, Conv1d/2d/3d (groups=1), Embedding, self-attention (nn.MultiheadAttention), "
             "BatchNorm1d/2d/3d, LayerNorm over the units, elementwise activations, dropout, pooling, flatten and "
             "residual additions, traced by torch.fx")


class _Spaces:
    """Union-find over unit spaces: their sizes, whether they are tied to the model's inputs or outputs (never
    permuted), and the layers writing into them (the first names the group)."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int | None] = []
        self.fixed: list[bool] = []
        self.writers: list[list[str]] = []

    def new(self, size: int | None, fixed: bool = False, writer: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.writers.append([writer] if writer else [])
        return len(self.parent) - 1

    def root(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def tie(self, a: int, b: int, what: str) -> int:
        a, b = self.root(a), self.root(b)
        if a == b:
            return a
        if None not in (self.size[a], self.size[b]) and self.size[a] != self.size[b]:
            raise ValueError(f"{what} adds {self.size[a]} units to {self.size[b]}; {SUPPORTED}")
        a, b = min(a, b), max(a, b)  # the older space keeps the name
        self.parent[b] = a
        self.size[a] = self.size[a] if self.size[a] is not None else self.size[b]
        self.fixed[a] = self.fixed[a] or self.fixed[b]
        self.writers[a] += self.writers[b]
        return a


@dataclass
class _Value:
    """What forward's tensor at a node holds: its unit ``space``, and where the units are: ``"channels"`` (dim
    1, maps after), ``"last"`` (the last dim), ``"flat"`` (a flattened map: dim 1 in blocks, one per unit) or
    ``"input"`` (the model's input, never permuted: any layer may take it) or ``"pair"`` (attention's (output,
    weights), the output's units in ``space``)."""

    space: int
    layout: str


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"align needs the model's graph to find its residual streams, and torch.fx cannot trace "
                         f"{type(model).__name__}: {type(error).__name__}: {first}") from error


def structure(model: nn.Module) -> tuple[dict[str, int], dict[str, Axes]]:
    """The model's permutation groups ``{name: units}`` and, for every state-dict key, the groups permuting its
    dims 0 (outputs) and 1 (inputs), None where nothing does: e.g. a ResNet's ``layer1.0.conv2.weight`` is
    ``("conv", "layer1.0.conv1")``, its outputs in the stem's residual stream."""
    if next(model.children(), None) is None:  # one layer: its inputs and outputs are the model's
        return {}, {key: (None, None) for key in model.state_dict()}
    graph = _trace(model)
    spaces = _Spaces()
    values: dict[fx.Node, _Value | None] = {}
    layers: dict[str, tuple[int | None, int]] = {}  # a weight layer's (input space, output space), for reuse
    owners: dict[str, tuple] = {}  # state-dict key -> (space of dim 0, space of dim 1, segments of dim 0)

    def of(arg) -> _Value | None:
        return values.get(arg) if isinstance(arg, fx.Node) else None

    for node in graph.graph.nodes:
        tensors = [of(a) for a in _nodes((node.args, node.kwargs)) if of(a) is not None]
        x = tensors[0] if tensors else None
        if node.op == "placeholder":
            values[node] = _Value(spaces.new(None, fixed=True), "input")
        elif node.op == "output":  # the outputs' units are the model's: never permuted
            for arg in _nodes(node.args):
                if of(arg) is not None:
                    spaces.fixed[spaces.root(of(arg).space)] = True
        elif node.op == "call_module":
            qkv = [node.args[i] if len(node.args) > i else node.kwargs.get(key)
                   for i, key in enumerate(("query", "key", "value"))]
            if isinstance(graph.get_submodule(node.target), nn.MultiheadAttention) and not (
                    qkv[0] is qkv[1] is qkv[2] and qkv[0] is not None):
                raise ValueError(f"layer {node.target!r} (MultiheadAttention) is called with different query, key "
                                 f"and value; align takes self-attention, attn(x, x, x)")
            values[node] = _module(graph.get_submodule(node.target), node.target, x, spaces, layers, owners)
        elif node.op in ("call_function", "call_method"):
            untracked = [a for a in _nodes((node.args, node.kwargs)) if of(a) is None and not _is_number(a)]
            values[node] = _function(node, tensors, untracked, spaces)
        elif node.op == "get_attr":
            raise ValueError(f"forward reads the tensor {node.target!r} directly; {SUPPORTED}")
    groups: dict[str, int] = {}
    names: dict[int, str] = {}
    for s in range(len(spaces.parent)):
        r = spaces.root(s)
        if r == s and not spaces.fixed[r] and spaces.writers[r]:
            names[r] = spaces.writers[r][0]
            groups[names[r]] = spaces.size[r]

    def group(space: int | None) -> str | None:
        return None if space is None else names.get(spaces.root(space))

    axes = {key: (group(out), group(inp)) + ((segments,) if segments != 1 else ())
            for key, (out, inp, segments) in owners.items()}
    for key in model.state_dict():
        if key not in axes:
            owner = key.rpartition(".")[0]
            raise ValueError(f"{key!r} belongs to {owner or '(the model)'!r} "
                             f"({type(model.get_submodule(owner)).__name__}), which forward never calls as a "
                             f"layer; {SUPPORTED}")
    return groups, axes


def _nodes(args) -> list[fx.Node]:
    """The fx nodes in (nested) arguments."""
    found: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


def _module(m: nn.Module, name: str, x: _Value | None, spaces: _Spaces, layers: dict,
            owners: dict) -> _Value | None:
    """The value a call of the module ``m`` (at ``name``) makes from the input value ``x``; its state-dict keys
    recorded in ``owners`` with the spaces they belong to."""
    what = f"layer {name!r} ({type(m).__name__})"
    if not isinstance(m, WEIGHTS) and any(f"{name}.{key}" in owners for key in m.state_dict()):
        raise ValueError(f"{what} is called twice; align follows a second call of a Linear or Conv layer only")
    if isinstance(m, nn.Embedding):  # its indices may be made in forward (positions): no units to follow
        out = spaces.new(m.embedding_dim, writer=name)
        owners[f"{name}.weight"] = (None, out, 1)
        return _Value(out, "last")
    if x is None:
        raise ValueError(f"{what} is not called on a tensor of the model's; {SUPPORTED}")
    if isinstance(m, WEIGHTS):
        if not isinstance(m, nn.Linear) and m.groups != 1:
            raise ValueError(f"{what} has groups={m.groups}; {SUPPORTED}")
        n_in = m.in_features if isinstance(m, nn.Linear) else m.in_channels
        width = spaces.size[spaces.root(x.space)]
        if isinstance(m, nn.Linear):
            if x.layout == "channels":
                raise ValueError(f"{what} follows a conv's maps without a flatten; {SUPPORTED}")
            if x.layout == "flat" and width is not None and n_in % width:
                raise ValueError(f"{what} takes {n_in} inputs but its input has {width} units")
        elif x.layout not in ("channels", "input"):
            raise ValueError(f"{what} takes a flattened or Linear output; {SUPPORTED}")
        if x.layout != "flat" and width is not None and width != n_in:
            raise ValueError(f"{what} takes {n_in} inputs but its input has {width} units")
        if name in layers:  # called again: the same weights, so the same spaces
            spaces.tie(layers[name][0], x.space, what)
            return _Value(layers[name][1], "last" if isinstance(m, nn.Linear) else "channels")
        n_out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        out = spaces.new(n_out, writer=name)
        layers[name] = (x.space, out)
        for key in m.state_dict():
            owners[f"{name}.{key}"] = (out, x.space, 1) if key == "weight" else (out, None, 1)
        return _Value(out, "last" if isinstance(m, nn.Linear) else "channels")
    if isinstance(m, NORMS):
        width = spaces.size[spaces.root(x.space)]
        size = tuple(m.normalized_shape) if isinstance(m, nn.LayerNorm) else (m.num_features,)
        over_units = x.layout in ("last", "input") if isinstance(m, nn.LayerNorm) else x.layout != "flat"
        if (width is not None and size != (width,)) or not over_units:
            raise ValueError(f"{what} must normalize the {width} units of its input: BatchNorm with num_features="
                             f"{width}, or LayerNorm({width}) after a Linear")
        for key, t in m.state_dict().items():
            owners[f"{name}.{key}"] = (x.space if t.dim() == 1 else None, None, 1)
        return x
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1:
            raise ValueError(f"{what} flattens from dim {m.start_dim}; {SUPPORTED}")
        return _Value(x.space, "flat" if x.layout == "channels" else x.layout)
    if isinstance(m, PASS) and not m.state_dict():
        if isinstance(m, POOLS) and x.layout in ("last", "flat"):
            raise ValueError(f"{what} after a Linear would pool across its units")
        return x  # elementwise, or equivariant under a permutation of the units (softmax)
    if isinstance(m, nn.MultiheadAttention):
        return _attention(m, name, x, spaces, owners)
    raise ValueError(f"{what} is not supported; {SUPPORTED}")


def _attention(m: nn.MultiheadAttention, name: str, x: _Value, spaces: _Spaces, owners: dict) -> _Value:
    """Self-attention ``m(x, x, x)``: its heads are one group (their q, k and v rows and out_proj's columns move
    together, a head's dims as a block), out_proj writes a new space; the value is the (output, weights) pair."""
    what = f"layer {name!r} (MultiheadAttention)"
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise ValueError(f"{what} has separate q/k/v projections, bias_k/bias_v or add_zero_attn; align takes the "
                         f"plain packed projection")
    if x.layout not in ("last", "input") or spaces.size[spaces.root(x.space)] not in (None, m.embed_dim):
        raise ValueError(f"{what} must take {m.embed_dim} units on its last dim")
    heads = spaces.new(m.num_heads, writer=f"{name}.heads")
    out = spaces.new(m.embed_dim, writer=f"{name}.out_proj")
    owners.update({f"{name}.in_proj_weight": (heads, x.space, 3), f"{name}.in_proj_bias": (heads, None, 3),
                   f"{name}.out_proj.weight": (out, heads, 1), f"{name}.out_proj.bias": (out, None, 1)})
    return _Value(out, "pair")


def _is_number(node: fx.Node) -> bool:
    """Whether forward's value at ``node`` is a number or a shape (``x.size(0)``, ``x.shape[1] * 2``), not a tensor."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "numel")
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in ("shape", "ndim")
    arithmetic = (operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.neg)
    return node.op == "call_function" and node.target in arithmetic and all(_is_number(a) for a in _nodes(node.args))


def _function(node: fx.Node, tensors: list[_Value], untracked: list[fx.Node], spaces: _Spaces) -> _Value | None:
    """The value a function or method call in forward makes from its tensor arguments (None: not a tensor of
    units, e.g. ``x.size(0)``); ``untracked``: its arguments that are tensors made in forward, whose units
    cannot be followed (``torch.ones(C)``): none may meet the model's units in an addition or a product."""
    target = node.target
    inside = list(node.meta.get("nn_module_stack") or {})  # the modules whose forward it is in, outermost first
    what = f"{getattr(target, '__name__', target)!s} in {f'the forward of {inside[-1]!r}' if inside else 'forward'}"
    if not tensors or target in ("size", "dim", "numel", getattr):
        return None  # not a tensor of units: x.size(0), x.shape
    x = tensors[0]
    if x.layout == "pair":  # attention's (output, weights)
        if target is operator.getitem and node.args[1] == 0:
            return _Value(x.space, "last")
        if target is operator.getitem and node.args[1] == 1:
            return None
        raise ValueError(f"{what} on attention's (output, weights) pair; {SUPPORTED}")
    if untracked and (target in ADD or target in (operator.mul, operator.truediv, torch.mul, "mul", "div")):
        raise ValueError(f"{what} combines the model's units with a tensor made in forward ({untracked[0].name}), "
                         f"whose units align cannot follow; {SUPPORTED}")
    if target in ADD:
        for other in tensors[1:]:
            if other.layout != x.layout:
                raise ValueError(f"{what} adds a {other.layout} tensor to a {x.layout} one; {SUPPORTED}")
            x = _Value(spaces.tie(x.space, other.space, what), x.layout)
        return x
    if target in (operator.mul, operator.truediv, torch.mul, "mul", "div") and len(tensors) == 1:
        return x  # scaled by a number
    if target in ELEMENTWISE or target in POOLING:
        if target in POOLING and x.layout in ("last", "flat"):
            raise ValueError(f"{what} after a Linear would pool across its units")
        return x
    if target in (torch.flatten, "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start != 1:
            raise ValueError(f"{what} flattens from dim {start}; flatten(x, 1) keeps the batch; {SUPPORTED}")
        return _Value(x.space, "flat" if x.layout == "channels" else x.layout)
    if target in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
        return _Value(x.space, "flat" if x.layout == "channels" else x.layout)  # x.view(x.size(0), -1)
    if target in ("mean", torch.mean):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if x.layout == "channels" and dims and all(d >= 2 for d in dims) and not node.kwargs.get("keepdim"):
            return _Value(x.space, "last")  # a global average over the maps: [N, C]
    raise ValueError(f"{what} is not supported; {SUPPORTED}")


def units(model: nn.Module) -> dict[str, int]:
    """The model's permutation groups: {name of the first layer writing into them: number of units} (a residual
    stream, a hidden layer, an attention layer's heads as "<name>.heads").

    e.g. ``nn.Sequential(Linear(64, 32), Tanh(), Linear(32, 10)) -> {"0": 32}``.
    """
    return structure(model)[0]
