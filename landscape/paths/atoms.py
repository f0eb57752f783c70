"""Unit atoms and their unification, for reading a model's permutation groups (``paths.groups``).

Every dim of every tensor in a forward is labelled by a tuple of atoms, the factors of its size in mixed radix
(outermost first): a Linear's output dim is one atom, the same dim viewed as (heads, head dims) two. ``Atoms``
is a union-find over them: ``unify`` ties two labels of the same size atom by atom, splitting an atom (its whole
class: every tensor that shares it sees the split) where the two factorizations differ; an atom is ``fixed``
when no permutation may move it (the model's inputs and outputs, or an operation the reading does not follow,
whose name is kept as the ``reason``).
"""

from __future__ import annotations


class Atoms:
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


def atoms_of(value) -> list[int]:
    """Every atom of a node's labels (a tensor's dims, or a tuple of tensors')."""
    if isinstance(value, tuple):
        return list(value)
    return [a for item in value or () for a in atoms_of(item)]
