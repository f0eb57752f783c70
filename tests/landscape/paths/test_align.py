"""Weight matching: exact recovery of a permuted copy, the same function after alignment, a brute-force optimum."""

import itertools
import json

import pytest
import torch
from torch import nn

from landscape.paths.align import Alignment, structure, units, weight_matching


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def deep_mlp() -> nn.Module:
    """Three hidden layers, with a LayerNorm, a BatchNorm1d and dropout carried along."""
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.LayerNorm(12), nn.GELU(), nn.Dropout(0.1),
                         nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


def cnn() -> nn.Module:
    """For 8x8 inputs: the last Linear sees 8 channels of 2x2."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 10))


def resnet() -> nn.Module:
    """ResNet-14 of width 4: identity shortcuts within a stage, projections between them."""
    from landscape.vision import ResNet

    return ResNet(14, 4)


class ChainOrderResidual(nn.Module):
    """A residual MLP whose layers are registered in the order they run: the chain reading of old mistook it."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.hidden = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = self.norm(h + torch.relu(self.hidden(h)))
        return self.out(h)


class Transformer(nn.Module):
    """Two pre-norm blocks (self-attention with 2 heads, a GELU MLP) on token and position embeddings."""

    class Block(nn.Module):
        def __init__(self, width: int = 8):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
            self.fc1, self.fc2 = nn.Linear(width, 12), nn.Linear(12, width)

        def forward(self, x):
            h = self.norm1(x)
            x = x + self.attn(query=h, key=h, value=h, need_weights=False)[0]
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))

    def __init__(self):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(11, 8), nn.Embedding(5, 8)
        self.blocks = nn.Sequential(self.Block(), self.Block())
        self.norm, self.head = nn.LayerNorm(8), nn.Linear(8, 11)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.norm(self.blocks(x)))


class Branches(nn.Module):
    """Two branches concatenated: their units land side by side in one layer's inputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], 1))


class Scaled(nn.Module):
    """Units scaled by a vector made in forward: permuting the units would leave the vector behind."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.out(h * torch.ones(h.shape[-1]))


class TwiceNormed(nn.Module):
    """One LayerNorm over two different spaces."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.norm, self.out = nn.Linear(3, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(self.norm(self.b(self.norm(self.a(x)))))


class Branching(nn.Module):
    """A forward whose path depends on the data: no graph to read."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.out(h if h.sum() > 0 else -h)


def build(make, seed: int) -> nn.Module:
    """A float64 model in eval mode with random weights, norm affine parameters and running statistics."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = make().double().eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_()
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2.0)
    return model


def inputs(make, seed: int = 100) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if make is Transformer:
        return torch.randint(0, 11, (3, 5), generator=generator)
    shape = {cnn: (5, 1, 8, 8), deep_mlp: (5, 6), mlp: (5, 64), resnet: (5, 3, 16, 16), ChainOrderResidual: (5, 6)}[make]
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def random_alignment(model: nn.Module, seed: int) -> Alignment:
    generator = torch.Generator().manual_seed(seed)
    return Alignment({g: torch.randperm(n, generator=generator) for g, n in units(model).items()})


def similarity(a: nn.Module, b: nn.Module) -> float:
    """sum over parameters of <A, B>, straight from the two models."""
    pb = dict(b.named_parameters())
    return sum(float((p.detach() * pb[k].detach()).sum()) for k, p in a.named_parameters())


def test_units():
    assert units(mlp()) == {"0": 32}
    assert units(deep_mlp()) == {"0": 16, "2": 12, "6": 8}
    assert units(cnn()) == {"0": 4, "4": 8}
    assert units(nn.Sequential(nn.Sequential(nn.Linear(3, 5), nn.ReLU()), nn.Linear(5, 2))) == {"0.0": 5}
    assert units(nn.Linear(3, 2)) == {}


@pytest.mark.parametrize("make", [mlp, deep_mlp, cnn, resnet, ChainOrderResidual, Transformer])
def test_a_random_permutation_keeps_the_function(make):
    model, X = build(make, 0), inputs(make)
    alignment = random_alignment(model, 1)
    permuted = alignment.apply(model, X)
    assert alignment.moved() > 0.5
    first = next(k for k in model.state_dict() if k.endswith("weight"))
    assert not torch.equal(permuted.state_dict()[first], model.state_dict()[first])
    torch.testing.assert_close(permuted(X), model(X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [mlp, deep_mlp, cnn, resnet, ChainOrderResidual, Transformer])
def test_weight_matching_keeps_the_function(make):
    a, b, X = build(make, 0), build(make, 1), inputs(make)
    alignment = weight_matching(a, b)
    assert alignment.moved() > 0
    torch.testing.assert_close(alignment.apply(b)(X), b(X), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [mlp, deep_mlp, cnn, resnet, ChainOrderResidual, Transformer])
def test_a_permuted_copy_is_recovered_exactly(make):
    model = build(make, 0)
    scramble = random_alignment(model, 2)
    alignment = weight_matching(model, scramble.apply(model))
    for g, p in scramble.permutations.items():
        assert torch.equal(alignment.permutations[g], torch.argsort(p))
    aligned = alignment.apply(scramble.apply(model)).state_dict()
    expected = model.state_dict()
    assert list(aligned) == list(expected)
    assert all(torch.equal(aligned[k], expected[k]) for k in expected)
    before, after = alignment.similarity
    assert after == pytest.approx(similarity(model, model), rel=1e-12)
    assert before < after


def test_residual_streams_share_one_permutation():
    from landscape.vision import ResNet

    model = ResNet(14, 4)  # two blocks a stage: the stage's stream is written by the stem or a projection
    groups = units(model)
    assert groups == {"conv": 4, "layer1.0.conv1": 4, "layer1.1.conv1": 4, "layer2.0.conv1": 8,
                      "layer2.0.conv2": 8, "layer2.1.conv1": 8, "layer3.0.conv1": 16,
                      "layer3.0.conv2": 16, "layer3.1.conv1": 16}
    axes = structure(model)[1]
    # every layer writing into stage 1's stream (stem, both blocks' second convolutions) takes the stem's group
    assert axes["conv.weight"] == ("conv", None) and axes["bn.weight"] == ("conv", None)
    assert axes["layer1.0.conv2.weight"] == ("conv", "layer1.0.conv1")
    assert axes["layer1.1.conv2.weight"] == ("conv", "layer1.1.conv1")
    # stage 2's stream: block 0's second convolution and its projection shortcut, block 1's second convolution
    assert axes["layer2.0.shortcut.0.weight"] == ("layer2.0.conv2", "conv")
    assert axes["layer2.0.shortcut.1.running_mean"] == ("layer2.0.conv2", None)
    assert axes["layer2.1.conv2.weight"] == ("layer2.0.conv2", "layer2.1.conv1")
    assert axes["fc.weight"] == (None, "layer3.0.conv2")


def test_attention_heads_and_the_mlp_are_groups_and_the_stream_is_one():
    model = Transformer()
    groups, axes = structure(model)
    assert groups == {"tokens": 8, "blocks.0.attn.heads": 2, "blocks.0.fc1": 12, "blocks.1.attn.heads": 2,
                      "blocks.1.fc1": 12}  # the embeddings, both blocks' outputs and the head share the stream
    assert axes["blocks.0.attn.in_proj_weight"] == ("blocks.0.attn.heads", "tokens", 3)  # q, k, v: 3 segments
    assert axes["blocks.0.attn.out_proj.weight"] == ("tokens", "blocks.0.attn.heads")
    assert axes["positions.weight"] == (None, "tokens") and axes["head.weight"] == (None, "tokens")
    # swapping the two heads moves rows 0-3 and 4-7 of each of q, k and v, and out_proj's columns likewise
    model = build(Transformer, 3)
    swap = Alignment({g: torch.arange(n) for g, n in groups.items()})
    swap.permutations["blocks.1.attn.heads"] = torch.tensor([1, 0])
    state = swap.apply(model, inputs(Transformer)).state_dict()
    W = model.state_dict()["blocks.1.attn.in_proj_weight"]
    order = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    assert torch.equal(state["blocks.1.attn.in_proj_weight"], W[torch.cat([order, order + 8, order + 16])])
    assert torch.equal(state["blocks.1.attn.out_proj.weight"], model.state_dict()["blocks.1.attn.out_proj.weight"][:, order])
    import landscape  # attention written by hand (tiny-gpt's) is refused, naming where

    tiny = landscape.load("tiny-gpt", steps=0, examples=8, context=16, width=16, layers=1).model
    with pytest.raises(ValueError, match="view in the forward of 'blocks.0.attention' is not supported"):
        units(tiny)


def test_apply_refuses_permutations_that_change_the_function(monkeypatch):
    from landscape.paths import align

    model, X = build(ChainOrderResidual, 0), inputs(ChainOrderResidual)
    groups, axes = align.structure(model)
    assert groups == {"inp": 8}  # the residual stream: inp's and hidden's outputs are added, one group
    chain = dict(axes)  # what reading the layers as a chain gives: hidden's outputs a group of their own
    chain["hidden.weight"], chain["hidden.bias"] = ("hidden", "inp"), ("hidden", None)
    chain["norm.weight"], chain["norm.bias"], chain["out.weight"] = ("hidden", None), ("hidden", None), (None, "hidden")
    monkeypatch.setattr(align, "structure", lambda m: ({"inp": 8, "hidden": 8}, chain))
    wrong = Alignment({"inp": torch.randperm(8, generator=torch.Generator().manual_seed(1)),
                       "hidden": torch.randperm(8, generator=torch.Generator().manual_seed(2))})
    assert (wrong.apply(model)(X) - model(X)).abs().max() > 0.01  # silently another function without a probe
    with pytest.raises(ValueError, match=r"the aligned model computes a different function: its outputs on the probe "
                                         r"batch differ by \S+ \(relative; rounding allows 1e-08\)"):
        wrong.apply(model, X)


def test_weight_matching_reaches_a_local_optimum():
    a, b = build(deep_mlp, 0), build(deep_mlp, 1)
    alignment = weight_matching(a, b, seed=3)
    aligned = alignment.apply(b)
    before, after = alignment.similarity
    assert before == pytest.approx(similarity(a, b), rel=1e-12)
    assert after == pytest.approx(similarity(a, aligned), rel=1e-12)
    assert after > before
    assert 1 < alignment.iterations < 100
    again = weight_matching(a, aligned, seed=4)
    assert again.moved() == 0 and again.iterations == 1
    assert again.similarity == pytest.approx((after, after), rel=1e-12)
    # independently of the assignment solver: swapping two units of any one group does not help
    for g, n in units(a).items():
        for i, j in itertools.combinations(range(n), 2):
            swap = Alignment({h: torch.arange(m) for h, m in units(a).items()})
            swap.permutations[g][[i, j]] = torch.tensor([j, i])
            assert similarity(a, swap.apply(aligned)) <= after * (1 + 1e-12)


def test_a_single_group_is_the_brute_force_optimum():
    make = lambda: nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2))  # noqa: E731
    a, b = build(make, 5), build(make, 6)
    scores = {p: similarity(a, Alignment({"0": torch.tensor(p)}).apply(b)) for p in itertools.permutations(range(4))}
    best = max(scores, key=scores.get)
    assert best != (0, 1, 2, 3)
    alignment = weight_matching(a, b)
    assert alignment.permutations["0"].tolist() == list(best)
    assert alignment.similarity == pytest.approx((scores[(0, 1, 2, 3)], scores[best]), rel=1e-12)


def test_permute_a_state_dict_is_apply():
    model = build(cnn, 0)
    alignment = random_alignment(model, 7)
    state = {k: t.clone() for k, t in model.state_dict().items()}
    permuted = alignment.permute(state, model)
    expected = alignment.apply(model).state_dict()
    assert list(permuted) == list(expected)
    assert all(torch.equal(permuted[k], expected[k]) for k in expected)
    assert all(torch.equal(state[k], t) for k, t in model.state_dict().items())  # the input is left alone
    # the last Linear's inputs move in blocks of 2x2: unit c of the aligned model is unit perm[c] of the original
    perm = alignment.permutations["4"]
    W = model[9].weight.reshape(10, 8, 4)
    assert torch.equal(permuted["9.weight"].reshape(10, 8, 4), W[:, perm])
    assert torch.equal(permuted["5.running_var"], model[5].running_var[perm])
    assert torch.equal(permuted["5.num_batches_tracked"], model[5].num_batches_tracked)


def test_moved_and_to_dict():
    alignment = Alignment({"0": torch.tensor([1, 0, 2, 3]), "2": torch.arange(4)}, 2, (1.0, 3.0), 0.5)
    assert alignment.moved() == 2 / 8
    assert json.loads(json.dumps(alignment.to_dict())) == {
        "iterations": 2, "similarity": [1.0, 3.0], "seconds": 0.5, "moved": 0.25, "units": {"0": 4, "2": 4}}


@pytest.mark.parametrize("model, match", [
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4, 2)), r"'1' \(GroupNorm\)"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 2, 1)), r"'0' \(Conv2d\) has groups=2"),
    (nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 1)), r"'1' \(MultiheadAttention\) is called with different query, key and value"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Linear(4, 2)), r"'1' \(Linear\) follows a conv's maps without a flatten"),
    (nn.Sequential(nn.Linear(3, 4), nn.MaxPool1d(2), nn.Linear(2, 2)), r"'1' \(MaxPool1d\) after a Linear would pool across its units"),
    (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), r"'1' \(Linear\) takes 5 inputs but its input has 4 units"),
    (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(5), nn.Linear(4, 2)), r"'1' \(BatchNorm1d\) must normalize the 4"),
    (nn.Sequential(nn.Conv1d(3, 4, 1), nn.LayerNorm(4), nn.Conv1d(4, 2, 1)), r"'1' \(LayerNorm\) must normalize"),
    (Branches(), r"cat in forward is not supported"),
    (Scaled(), r"mul in forward combines the model's units with a tensor made in forward \(ones\)"),
    (TwiceNormed(), r"layer 'norm' \(LayerNorm\) is called twice"),
    (Branching(), r"torch.fx cannot trace Branching: TraceError: symbolically traced variables cannot be used as"),
])
def test_unsupported_layers_are_named(model, match):
    with pytest.raises(ValueError, match=match):
        units(model)
    with pytest.raises(ValueError, match=match):
        weight_matching(model, model)


def test_mismatched_models_and_alignments_are_named():
    wide = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    narrow = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"differ at '0\.weight': \(8, 3\) against \(4, 3\)"):
        weight_matching(wide, narrow)
    with pytest.raises(ValueError, match=r"differ at '0\.weight'"):
        Alignment({"0": torch.arange(8)}).permute(narrow.state_dict(), wide)
    with pytest.raises(ValueError, match="groups"):
        Alignment({"0": torch.arange(4)}).permute(wide.state_dict(), wide)
    with pytest.raises(ValueError, match=r"permutations\['0'\] is not a permutation of 0\.\.7"):
        Alignment({"0": torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])}).apply(wide)
