"""Trees: `Tree` (one tree), its string formats, and `TreeBatch` (a forest as tensors).

Shape legend: N nodes in a batch (all trees together), F node input features, K the most
children any node of the batch has.

A :class:`Tree` has ordered children, an optional ``token`` (a string) and ``value`` (a
tensor) at any node, and an optional ``label`` at any node. Four readers build one:

- :meth:`Tree.from_brackets`: Penn-Treebank brackets, e.g. the Stanford Sentiment Treebank
  ``(3 (2 It) (4 (2 's) (2 fine)))``;
- :meth:`Tree.from_listops`: ListOps prefix lists ``[MAX 2 9 [MIN 4 7 ] 0 ]`` with the gold
  left-branching tree of Nangia & Bowman (2018);
- :meth:`Tree.from_parents`: parent-pointer arrays (1-based heads, 0 for the root), as in the
  data of Tai et al. (2015);
- :meth:`Tree.from_python`: the syntax tree of Python source (node type names as tokens).

A tree remembers the format it was read from, and ``str(tree)`` writes it back in that format
(whitespace normalised to single spaces), so reading then printing gives the string back.

>>> t = Tree.from_brackets("(3 (2 It) (4 (2 's) (2 fine)))")
>>> t.label, [leaf.token for leaf in t.leaves()], t.height()
(3, ['It', "'s", 'fine'], 2)
>>> str(t)
"(3 (2 It) (4 (2 's) (2 fine)))"
>>> batch = TreeBatch.from_trees([t], vocab={"It": 0, "'s": 1, "fine": 2})
>>> batch.inputs.tolist(), batch.heights.tolist(), batch.children.tolist()
([0, 1, 2, -1, -1], [0, 0, 0, 1, 2], [[-1, -1], [-1, -1], [-1, -1], [1, 2], [0, 3]])
"""

from __future__ import annotations

import ast
import functools
import gc
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import pairwise
from os import PathLike
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.errors import ReaderError

__all__ = ["GatherSchedule", "Tree", "TreeBatch"]

TreeFormat = Literal["brackets", "listops", "parents", "python", "sexpr"]
FORMATS: tuple[str, ...] = ("brackets", "listops", "parents", "python", "sexpr")

_INT_LABEL = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _label_from_text(text: str) -> int | str:
    """An integer label when ``text`` is an integer written canonically, else the text."""
    if _INT_LABEL.match(text):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts: kept as text
            pass
    return text


_F = TypeVar("_F", bound=Callable[..., Any])


def _without_gc(parse: _F) -> _F:
    """``parse`` with Python's cyclic garbage collector paused while it runs.

    A parser makes one node per token, and every few hundred allocations the collector walks
    all live objects: on a long line in a big process that made parsing quadratic (seconds for
    200,000 tokens). Trees hold no reference cycles, so pausing it leaves nothing behind.
    """

    @functools.wraps(parse)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return parse(*args, **kwargs)
        gc.disable()
        try:
            return parse(*args, **kwargs)
        finally:
            gc.enable()

    return wrapper  # type: ignore[return-value]


class _Where:
    """``line`` and ``column`` (1-based) of offsets in a text, for its :class:`ReaderError`."""

    def __init__(self, text: str, path: str | PathLike[str] | None) -> None:
        self.text = text
        self.path = path

    def error(self, message: str, offset: int) -> ReaderError:
        """The error at 0-based ``offset`` of the text (its end when ``offset`` is past it)."""
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return ReaderError(message, path=self.path, line=line, column=column)

    def place(self, offset: int) -> str:
        """``column N`` of ``offset`` in a one-line text, ``line L column N`` in a longer one."""
        err = self.error("", offset)
        if "\n" in self.text:
            return f"line {err.line} column {err.column}"
        return f"column {err.column}"


class Tree:
    """One tree: ordered ``children``, optional ``token``/``value``/``label`` at every node.

    Args:
        label: an integer class (SST sentiment 0-4) or a string (a PTB category), or None.
        children: the subtrees in order; none for a leaf.
        token: a word or symbol at this node (usually at leaves), or None.
        value: a tensor input at this node (any shape, the same for all nodes), or None.
        position: the 0-based index of this node in a parent-pointer array (kept by
            :meth:`from_parents` so that :meth:`to_parents` gives the same array back).
        format: the string format :meth:`to_string` writes, one of ``brackets``, ``listops``,
            ``parents``, ``python``, ``sexpr``.
        syntax: for a node read by :meth:`from_python`, how its ``ast`` node is rebuilt: each
            field of the node, either ``("child", i)`` (``children[i]``), ``("list", items)``
            (items of either kind) or ``("value", v)`` (a name, a constant, None).

    >>> leaf = Tree(token="a")
    >>> t = Tree(1, [leaf, Tree(0, token="b")])
    >>> str(t), len(t), t.is_leaf(), leaf.is_leaf()
    ('(1 a (0 b))', 3, False, True)
    """

    __slots__ = ("children", "format", "label", "position", "syntax", "token", "value")

    def __init__(
        self,
        label: int | str | None = None,
        children: Sequence[Tree] = (),
        *,
        token: str | None = None,
        value: Tensor | None = None,
        position: int | None = None,
        format: TreeFormat = "brackets",
        syntax: dict[str, Any] | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, found {format!r}")
        for i, child in enumerate(children):
            if not isinstance(child, Tree):
                raise TypeError(f"children[{i}]: expected a Tree, found {type(child).__name__}")
        self.label = label
        self.children: list[Tree] = list(children)
        self.token = token
        self.value = value
        self.position = position
        self.format: TreeFormat = format
        self.syntax = syntax

    @classmethod
    def _node(
        cls,
        children: list[Tree],
        token: str | None,
        format: TreeFormat,
        position: int | None = None,
    ) -> Tree:
        """A node made by a parser: its arguments are known good, so the checks of
        ``__init__`` are skipped (a parser makes one node per token of its input)."""
        node = object.__new__(cls)
        node.label, node.children, node.token, node.value = None, children, token, None
        node.position, node.format, node.syntax = position, format, None
        return node

    # ------------------------------------------------------------------ structure
    def is_leaf(self) -> bool:
        """True when the node has no children."""
        return not self.children

    def nodes(self) -> Iterator[Tree]:
        """All nodes in preorder (a node before its children, children left to right)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def postorder(self) -> list[Tree]:
        """All nodes in postorder (children left to right, then the node)."""
        return list(reversed(list(_reverse_preorder(self))))

    def leaves(self) -> list[Tree]:
        """The leaves, left to right."""
        return [node for node in self.nodes() if not node.children]

    def height(self) -> int:
        """Length of the longest path from this node down to a leaf (a leaf has height 0)."""
        heights: dict[int, int] = {}
        for node in self.postorder():
            heights[id(node)] = 1 + max((heights[id(c)] for c in node.children), default=-1)
        return heights[id(self)]

    def __len__(self) -> int:
        return sum(1 for _ in self.nodes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tree):
            return NotImplemented
        pairs = [(self, other)]
        while pairs:
            a, b = pairs.pop()
            if (a.label, a.token, a.position, len(a.children)) != (
                b.label,
                b.token,
                b.position,
                len(b.children),
            ):
                return False
            if (a.value is None) != (b.value is None):
                return False
            if a.value is not None and b.value is not None and not torch.equal(a.value, b.value):
                return False
            pairs.extend(zip(a.children, b.children, strict=True))
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self.format == "sexpr":
            return f"<Tree {self.to_string()}>"
        return f"Tree.from_{self.format}({self.to_string()!r})"

    def __str__(self) -> str:
        return self.to_string()

    # ------------------------------------------------------------------ writing
    def to_string(self, format: TreeFormat | None = None) -> str:
        """The tree in ``format`` (default: the format it was read from).

        - ``brackets``: ``(label child child ...)``; a leaf with a label is ``(label token)``,
          a leaf without one is its bare token; an unlabelled node is ``(child ...)``.
        - ``listops``: the tokens of the leaves, left to right, separated by spaces.
        - ``parents``: the 1-based heads, separated by spaces (see :meth:`to_parents`).
        - ``python``: Python source, ``ast.unparse`` of the syntax tree rebuilt from the nodes
          (trees read by :meth:`from_python`; other trees fall back to ``sexpr``).
        - ``sexpr``: an s-expression of the tokens, ``(Module (Pass))``.
        """
        fmt = self.format if format is None else format
        if fmt == "brackets":
            return _to_brackets(self)
        if fmt == "listops":
            return _to_listops(self)
        if fmt == "parents":
            return " ".join(str(h) for h in self.to_parents()[0])
        if fmt == "python" and all(node.syntax is not None for node in self.nodes()):
            return ast.unparse(ast.fix_missing_locations(_to_ast(self)))
        if fmt in ("python", "sexpr"):
            return _to_sexpr(self)
        raise ValueError(f"format: expected one of {FORMATS}, found {fmt!r}")

    def to_parents(self) -> tuple[list[int], list[str]]:
        """The parent-pointer array (1-based heads, 0 at the root) and the tokens.

        Nodes keep the ``position`` :meth:`from_parents` gave them. A tree without positions is
        numbered leaves first (left to right), then internal nodes in postorder, the
        convention of Tai et al.'s constituency files. The tokens are those of nodes
        ``0, 1, ...`` up to the last node that has one.

        >>> Tree.from_parents([2, 0, 2], tokens=["a", "b", "c"]).to_parents()
        ([2, 0, 2], ['a', 'b', 'c'])
        """
        order = self.postorder()
        if all(node.position is not None for node in order):
            index = {id(node): node.position for node in order}
        else:
            leaves = [node for node in order if not node.children]
            internal = [node for node in order if node.children]
            index = {id(node): i for i, node in enumerate(leaves + internal)}
        heads = [0] * len(order)
        tokens: list[str | None] = [None] * len(order)
        for node in order:
            i = int(index[id(node)])  # type: ignore[arg-type]
            tokens[i] = node.token
            for child in node.children:
                heads[int(index[id(child)])] = i + 1  # type: ignore[arg-type]
        while tokens and tokens[-1] is None:
            tokens.pop()
        missing = [i for i, tok in enumerate(tokens) if tok is None]
        if missing:
            raise ValueError(
                f"to_parents: node {missing[0]} has no token but a later node has one; tokens "
                "must be on nodes 0..n-1"
            )
        return heads, [str(tok) for tok in tokens]

    # ------------------------------------------------------------------ reading
    @classmethod
    @_without_gc
    def from_brackets(cls, text: str, *, path: str | PathLike[str] | None = None) -> Tree:
        """Read Penn-Treebank brackets (labels are ints when written as integers).

        Grammar: ``tree := WORD | "(" [LABEL] item* ")"``; in ``(L w)`` with one bare word the
        node is a leaf with label ``L`` and token ``w`` (the PTB preterminal); other bare words
        are unlabelled leaves. Errors are :class:`ReaderError` with the 1-based line and column
        in ``text`` (and ``path``, the file it came from, when given).

        >>> t = Tree.from_brackets("(S (NP the dog) (VP barks))")
        >>> t.label, [c.label for c in t.children], [leaf.token for leaf in t.leaves()]
        ('S', ['NP', 'VP'], ['the', 'dog', 'barks'])
        """
        where = _Where(text, path)
        tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(text)]
        if not tokens:
            raise where.error("expected a tree, found an empty string", 0)
        tree, end = _read_bracket(tokens, 0, where)
        if end != len(tokens):
            word, offset = tokens[end]
            raise where.error(f"expected the end of the tree, found {word!r}", offset)
        return tree

    @classmethod
    @_without_gc
    def from_listops(cls, text: str, *, path: str | PathLike[str] | None = None) -> Tree:
        """Read a ListOps prefix list into its gold tree (Nangia & Bowman 2018).

        Every token is a leaf. A list ``[OP a1 ... ak ]`` becomes k + 1 binary nodes,
        left-branching: ``n1 = ([OP, a1)``, ``n_i = (n_{i-1}, a_i)``, and the list's node is
        ``(n_k, ])``, where an argument ``a_i`` is a digit leaf or the node of a nested list.
        Internal nodes have no token. A single value (``7``) is a one-leaf tree. Errors are
        :class:`ReaderError` with the 1-based line and column in ``text`` (and ``path``).

        >>> t = Tree.from_listops("[MAX 2 [MIN 4 7 ] ]")
        >>> t.to_string("brackets")
        '((([MAX 2) ((([MIN 4) 7) ])) ])'
        >>> t.height(), [leaf.token for leaf in t.leaves()][:3]
        (5, ['[MAX', '2', '[MIN'])
        """
        where = _Where(text, path)
        spans = [(m.group(), m.start()) for m in re.finditer(r"\S+", text)]
        if not spans:
            raise where.error("expected a ListOps expression, found an empty string", 0)
        stack: list[tuple[Tree, int, int]] = []  # (partial node, arguments so far, offset)
        top: list[Tree] = []
        for word, offset in spans:
            if top:
                raise where.error(f"expected the end, found {word!r}", offset)
            if word.startswith("[") and len(word) > 1:
                stack.append((cls._node([], word, "listops"), 0, offset))
                continue
            if word == "]":
                if not stack:
                    raise where.error("found ']' with no open list", offset)
                node, nargs, opened = stack.pop()
                if nargs == 0:
                    raise where.error(
                        f"the list opened at {where.place(opened)} has no arguments",
                        offset,
                    )
                item = cls._node([node, cls._node([], "]", "listops")], None, "listops")
            elif any(c in word for c in "[]()"):
                raise where.error(f"expected an operator, a value or ']', found {word!r}", offset)
            else:
                item = cls._node([], word, "listops")
            if stack:
                node, nargs, open_col = stack.pop()
                stack.append((cls._node([node, item], None, "listops"), nargs + 1, open_col))
            else:
                top.append(item)
        if stack:
            raise where.error(
                f"the list opened at {where.place(stack[-1][2])} is not closed by ']'",
                len(text),
            )
        return top[0]

    @classmethod
    @_without_gc
    def from_parents(
        cls,
        parents: Sequence[int] | str,
        tokens: Sequence[str] | str | None = None,
        *,
        path: str | PathLike[str] | None = None,
    ) -> Tree:
        """Build a tree from parent pointers: ``parents[i]`` is the 1-based head of node i.

        ``0`` marks the root. ``tokens[i]`` is the token of node i (dependency trees give one
        per node; Tai et al.'s constituency files give tokens for the leading leaves only).
        Children are ordered by index. Both arguments may be strings of space-separated items
        (the lines of Tai et al.'s ``.parents`` and ``.toks`` files).

        Raises:
            ReaderError: a head that is not an integer in ``0..n``, a node that is its own head,
                not exactly one root, nodes cut off from the root (a cycle), more tokens than
                nodes. When ``parents`` is a string, the error has the line and column of the
                offending head in it (and ``path``, the file it came from, when given).

        >>> t = Tree.from_parents("2 0 2", tokens="the dog barks")
        >>> t.token, [c.token for c in t.children], str(t)
        ('dog', ['the', 'barks'], '2 0 2')
        """
        heads: list[int] = []
        offsets: list[int] = []  # of each head in the string, for the errors
        text = parents if isinstance(parents, str) else None
        where = _Where(text or "", path)

        def error(message: str, i: int | None) -> ReaderError:
            if text is None:
                return ReaderError(message, path=path)
            return where.error(message, len(text) if i is None else offsets[i])

        if text is not None:
            for m in re.finditer(r"\S+", text):
                word = m.group()
                if not _INT_LABEL.match(word) or word.startswith("-"):
                    raise where.error(
                        f"expected a head index (an integer >= 0), found {word!r}", m.start()
                    )
                # A head of more than 18 digits is out of range (-1), and may be too long for
                # int() to convert.
                heads.append(int(word) if len(word) <= 18 else -1)
                offsets.append(m.start())
        else:
            heads = [int(h) for h in parents]
        toks = tokens.split() if isinstance(tokens, str) else list(tokens or [])
        n = len(heads)
        if n == 0:
            raise error("parents: expected at least one node, found none", None)
        if len(toks) > n:
            raise error(f"tokens: expected at most {n} (one per node), found {len(toks)}", None)
        for i, h in enumerate(heads):
            if not 0 <= h <= n:
                found = str(h) if h >= 0 or text is None else "a number of more than 18 digits"
                raise error(f"parents[{i}]: expected a head in 0..{n}, found {found}", i)
            if h == i + 1:
                raise error(
                    f"parents[{i}]: expected another node's index or 0, found {h}: node {i + 1} "
                    "is its own head",
                    i,
                )
        roots = [i for i, h in enumerate(heads) if h == 0]
        if len(roots) != 1:
            raise error(
                f"parents: expected exactly one root (head 0), found {len(roots)}",
                roots[1] if len(roots) > 1 else None,
            )
        nodes = [cls._node([], toks[i] if i < len(toks) else None, "parents", i) for i in range(n)]
        for i, h in enumerate(heads):
            if h:
                nodes[h - 1].children.append(nodes[i])
        root = nodes[roots[0]]
        reached = {node.position for node in root.nodes()}
        if len(reached) != n:
            cut = next(i for i in range(n) if i not in reached)
            raise error(
                f"parents: expected every node connected to the root, found {n - len(reached)} "
                f"nodes that are not connected (a cycle), the first node {cut + 1}",
                cut,
            )
        return root

    @classmethod
    def from_python(cls, source: str, *, path: str | PathLike[str] | None = None) -> Tree:
        """The syntax tree of Python ``source``: one node per ``ast`` node, its type as token.

        Children are in ``ast.iter_child_nodes`` order; names, constants and other plain fields
        are kept in each node's :attr:`syntax`, so the tree prints back as source (formatted
        by ``ast.unparse``: comments and layout are not part of the syntax tree) and
        ``to_string("sexpr")`` gives the node types alone. Source that does not parse (a syntax
        error, a null byte, nesting too deep for Python's parser) raises ``SyntaxError`` with
        its line and column (and ``path`` as its file name, when given).

        >>> t = Tree.from_python("x = 1")
        >>> str(t), t.to_string("sexpr")
        ('x = 1', '(Module (Assign (Name (Store)) (Constant)))')
        """
        root_node = _parse_python(source, path)
        root = cls(token=type(root_node).__name__, format="python")
        stack: list[tuple[ast.AST, Tree]] = [(root_node, root)]
        while stack:
            node, out = stack.pop()
            syntax: dict[str, Any] = {}

            def place(item: Any, out: Tree = out) -> tuple[str, Any]:
                if not isinstance(item, ast.AST):
                    return ("value", item)
                child = cls(token=type(item).__name__, format="python")
                out.children.append(child)
                stack.append((item, child))
                return ("child", len(out.children) - 1)

            for name, field in ast.iter_fields(node):
                if isinstance(field, list):
                    syntax[name] = ("list", [place(item) for item in field])
                else:
                    syntax[name] = place(field)
            out.syntax = syntax
        return root

    # ------------------------------------------------------------------ batching
    def map_tokens(self, vocab: Mapping[str, int], unknown: int | None = None) -> Tree:
        """A copy whose nodes with a token carry its id as ``value`` (a 0-dim int64 tensor).

        A batch of such trees has token ids as ``inputs``, so a stream of trees read once can
        be collated by :meth:`collate` without a vocabulary.

        >>> vocab = {"[SM": 0, "1": 1, "2": 2, "]": 3}
        >>> Tree.from_listops("[SM 1 2 ]").map_tokens(vocab).leaves()[1].value
        tensor(1)
        """
        copies: dict[int, Tree] = {}
        for node in self.postorder():
            value = node.value
            if node.token is not None:
                value = torch.tensor(_token_id(node.token, vocab, unknown))
            copies[id(node)] = Tree(
                node.label,
                [copies[id(c)] for c in node.children],
                token=node.token,
                value=value,
                position=node.position,
                format=node.format,
                syntax=node.syntax,
            )
        return copies[id(self)]

    @classmethod
    def collate(cls, trees: Sequence[Tree]) -> TreeBatch:
        """A :class:`TreeBatch` of ``trees`` (the hook a MinibatchSource calls)."""
        return TreeBatch.from_trees(trees)


def _parse_python(source: str, path: str | PathLike[str] | None) -> ast.AST:
    """``ast.parse(source)``; every failure is a ``SyntaxError`` with a line and a column."""
    filename = "<unknown>" if path is None else str(path)
    null = source.find("\0")
    if null >= 0:
        line = source.count("\n", 0, null) + 1
        column = null - (source.rfind("\n", 0, null) + 1) + 1
        raise SyntaxError(
            "expected Python source, found a null byte", (filename, line, column, None)
        )
    try:
        return ast.parse(source, filename=filename)
    except SyntaxError as e:
        if e.lineno is None or not e.offset:
            e.lineno, e.offset = e.lineno or 1, e.offset or 1
        raise
    except (RecursionError, MemoryError):
        raise SyntaxError(
            "expected Python source that Python's parser can hold, found nesting too deep to parse",
            (filename, 1, 1, None),
        ) from None


def _reverse_preorder(root: Tree) -> Iterator[Tree]:
    """Node, then children right to left: the reverse of postorder."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def _token_id(token: str, vocab: Mapping[str, int], unknown: int | None) -> int:
    if token in vocab:
        return vocab[token]
    if unknown is None:
        raise KeyError(f"vocab: token {token!r} is not in the vocabulary and unknown is None")
    return unknown


def _write(root: Tree, text: Callable[[Tree], str]) -> str:
    """A tree as nested parentheses without recursion: ``text(node)`` is the whole text of a
    leaf, or the opening of an inner node, whose children follow separated by spaces, then
    ``)``."""
    parts: list[str] = []
    stack: list[Tree | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            continue
        parts.append(text(item))
        if not item.children:
            continue
        stack.append(")")
        for i, child in enumerate(reversed(item.children)):
            stack.append(child)
            if i < len(item.children) - 1:
                stack.append(" ")
    return "".join(parts)


def _bracket_text(node: Tree) -> str:
    if node.children:
        return "(" if node.label is None else f"({node.label} "
    if node.token is None and node.label is None:
        raise ValueError("brackets: a leaf needs a token or a label")
    if node.label is None:
        return str(node.token)
    return f"({node.label})" if node.token is None else f"({node.label} {node.token})"


def _to_brackets(root: Tree) -> str:
    return _write(root, _bracket_text)


def _to_listops(root: Tree) -> str:
    tokens = []
    for leaf in root.leaves():
        if leaf.token is None:
            raise ValueError("listops: every leaf needs a token")
        tokens.append(leaf.token)
    return " ".join(tokens)


def _to_ast(root: Tree) -> ast.AST:
    """Rebuild the ``ast`` node of a tree read by :meth:`Tree.from_python` (children may have
    been replaced by other such trees)."""
    built: dict[int, ast.AST] = {}
    for node in root.postorder():
        assert node.syntax is not None and node.token is not None

        def rebuild(spec: tuple[str, Any], node: Tree = node) -> Any:
            kind, item = spec
            if kind == "child":
                return built[id(node.children[item])]
            if kind == "list":
                return [rebuild(part) for part in item]
            return item

        node_type = getattr(ast, node.token, None)
        if not (isinstance(node_type, type) and issubclass(node_type, ast.AST)):
            raise ValueError(f"token: expected an ast node type, found {node.token!r}")
        fields = {name: rebuild(spec) for name, spec in node.syntax.items()}
        built[id(node)] = node_type(**fields)
    return built[id(root)]


def _to_sexpr(root: Tree) -> str:
    return _write(root, lambda node: f"({node.token} " if node.children else f"({node.token})")


def _read_bracket(tokens: list[tuple[str, int]], start: int, where: _Where) -> tuple[Tree, int]:
    """Parse one tree from ``tokens[start:]`` (words and their 0-based offsets); return it and
    the index after it."""
    word, offset = tokens[start]
    if word == ")":
        raise where.error("expected '(' or a word, found ')'", offset)
    if word != "(":
        return Tree._node([], word, "brackets"), start + 1
    root = Tree._node([], None, "brackets")
    # One frame per open bracket: the node, the offset of its '(' and its bare-word children.
    stack: list[tuple[Tree, int, set[int]]] = [(root, offset, set())]
    i = start + 1
    while stack:
        if i == len(tokens):
            raise where.error(
                f"the bracket opened at {where.place(stack[-1][1])} is not closed",
                len(where.text),
            )
        word, offset = tokens[i]
        node, _, bare = stack[-1]
        if word == "(":
            child = Tree._node([], None, "brackets")
            node.children.append(child)
            stack.append((child, offset, set()))
        elif word == ")":
            if node.label is None and not node.children:
                raise where.error("expected a label or a child, found ')'", offset)
            if node.label is not None and len(node.children) == 1 and id(node.children[0]) in bare:
                node.token = node.children[0].token  # (label word): a labelled leaf
                node.children = []
            stack.pop()
        elif node.label is None and not node.children and tokens[i - 1][0] == "(":
            node.label = _label_from_text(word)
        else:
            leaf = Tree._node([], word, "brackets")
            bare.add(id(leaf))
            node.children.append(leaf)
        i += 1
    return root, i


class GatherSchedule(NamedTuple):
    """How :class:`~rnnkit.recursive.Recursive` moves states from children to parents.

    Every node but a root is the child of exactly one parent, so the states of height l are
    sent once: reordered by their parent's height (``order[l]``, positions within height l,
    roots left out) and cut into one block per parent height ``p = l + 1, ..., height``
    (``splits[l]``, block sizes). Height p concatenates the blocks it received (from l = 0,
    1, ..., p - 1) and a zero row, and reads its children's states at ``slots[p]`` ``[n_p, K_p]``
    (the zero row, index ``num_received[p]``, where a node has fewer children). Each state is
    copied a constant number of times, so a forest costs O(N) memory traffic, not O(N x height).
    """

    order: list[Tensor]
    splits: list[list[int]]
    slots: list[Tensor]
    num_received: list[int]


class TreeBatch:
    """A forest made into tensors once, nodes sorted by height (all leaves first).

    Attributes:
        num_trees: number of trees.
        num_nodes: N, the number of nodes of all trees.
        inputs: ``[N, *F]`` node values (zeros where a node has none), or ``[N]`` int64 token
            ids (``-1`` where a node has no token), or None when no node has either.
        has_input: ``[N]`` bool, True where the node has a token or a value.
        children: ``[N, K]`` int64 batch indices of each node's children in order, ``-1``
            padding (K = the most children of any node, at least 1).
        num_children: ``[N]`` int64.
        parents: ``[N]`` int64 batch index of each node's parent, ``-1`` at the roots.
        heights: ``[N]`` int64, 0 at leaves, ``1 + max(children)`` above; non-decreasing.
        levels: one ``[n_h]`` int64 index tensor per height h; the nodes of a height are
            contiguous, so ``levels[h]`` is ``arange(level_starts[h], level_starts[h + 1])``.
        level_starts: Python ints, ``len(levels) + 1`` boundaries.
        level_max_children: Python ints, the most children of a node of each height.
        roots: ``[num_trees]`` int64 batch index of each tree's root.
        labels: ``[N]`` int64 node labels, ``-1`` where a node has none.
        root_labels: ``[num_trees]`` int64 (``labels[roots]``).
        tree_index: ``[N]`` int64, the tree each node belongs to.
        preorder: ``[N]`` int64 batch indices, tree after tree, each tree's nodes in the
            preorder of :meth:`Tree.nodes`; ``tree_starts`` are its boundaries.
        schedule: the :class:`GatherSchedule` a Recursive follows.

    >>> b = Tree.collate([Tree.from_listops("[SM 1 2 ]"), Tree.from_listops("5")])
    >>> b.num_nodes, b.roots.tolist(), b.level_starts, b.height
    (8, [7, 4], [0, 5, 6, 7, 8], 3)
    >>> b.parents.tolist(), b.schedule.slots[1].tolist(), b.schedule.splits[0]
    ([5, 5, 6, 7, -1, 6, 7, -1], [[0, 1]], [2, 1, 1])
    """

    __slots__ = (
        "children",
        "has_input",
        "heights",
        "inputs",
        "labels",
        "level_max_children",
        "level_starts",
        "levels",
        "num_children",
        "num_nodes",
        "num_trees",
        "parents",
        "preorder",
        "root_labels",
        "roots",
        "schedule",
        "tree_index",
        "tree_starts",
    )

    def __init__(
        self,
        *,
        inputs: Tensor | None,
        has_input: Tensor,
        children: Tensor,
        parents: Tensor,
        heights: Tensor,
        level_starts: list[int],
        roots: Tensor,
        labels: Tensor,
        tree_index: Tensor,
        preorder: Tensor,
        tree_starts: list[int],
        schedule: GatherSchedule,
    ) -> None:
        self.inputs = inputs
        self.has_input = has_input
        self.children = children
        self.num_children = (children >= 0).sum(dim=1)
        self.parents = parents
        self.heights = heights
        self.level_starts = level_starts
        self.levels = [torch.arange(a, b, device=heights.device) for a, b in pairwise(level_starts)]
        counts = self.num_children.tolist()
        self.level_max_children = [max(counts[a:b]) for a, b in pairwise(level_starts)]
        self.roots = roots
        self.labels = labels
        self.root_labels = labels[roots]
        self.tree_index = tree_index
        self.preorder = preorder
        self.tree_starts = tree_starts
        self.schedule = schedule
        self.num_trees = int(roots.numel())
        self.num_nodes = int(heights.numel())

    @property
    def height(self) -> int:
        """Height of the tallest tree (the number of sequential steps of a Recursive)."""
        return len(self.levels) - 1

    @classmethod
    def from_trees(cls, trees: Sequence[Tree], vocab: Mapping[str, int] | None = None) -> TreeBatch:
        """Batch ``trees``; with ``vocab``, ``inputs`` are the ids of the node tokens.

        Without a vocabulary, ``inputs`` stacks the node ``value`` tensors (zeros, or ``-1``
        for integer values, where a node has none). Labels must be integers or None.
        """
        if isinstance(trees, Tree) or not isinstance(trees, Sequence) or not trees:
            raise ValueError(f"trees: expected a non-empty sequence of Tree, found {trees!r:.80}")
        nodes: list[Tree] = []
        heights: list[int] = []
        edges: list[tuple[int, int, int]] = []  # (parent, slot, child), postorder numbers
        tree_of: list[int] = []
        roots: list[int] = []
        pre: list[int] = []
        tree_starts = [0]
        for t, tree in enumerate(trees):
            if not isinstance(tree, Tree):
                raise TypeError(f"trees[{t}]: expected a Tree, found {type(tree).__name__}")
            local: dict[int, int] = {}
            for node in tree.postorder():
                j = len(nodes)
                height = 0
                for slot, child in enumerate(node.children):
                    k = local[id(child)]
                    edges.append((j, slot, k))
                    if heights[k] >= height:
                        height = heights[k] + 1
                local[id(node)] = j
                nodes.append(node)
                heights.append(height)
                tree_of.append(t)
            roots.append(local[id(tree)])
            pre.extend(local[id(node)] for node in tree.nodes())
            tree_starts.append(len(pre))
        num = len(nodes)
        order = np.argsort(np.asarray(heights, dtype=np.int64), kind="stable")
        new_index = np.empty(num, dtype=np.int64)
        new_index[order] = np.arange(num)
        edge = np.asarray(edges, dtype=np.int64).reshape(-1, 3)
        width = 1 + int(edge[:, 1].max()) if len(edge) else 1
        children = np.full((num, width), -1, dtype=np.int64)
        children[new_index[edge[:, 0]], edge[:, 1]] = new_index[edge[:, 2]]
        parents = np.full(num, -1, dtype=np.int64)
        parents[new_index[edge[:, 2]]] = new_index[edge[:, 0]]
        sorted_heights = np.asarray(heights, dtype=np.int64)[order]
        level_starts = [0, *np.cumsum(np.bincount(sorted_heights)).tolist()]
        labels = np.full(num, -1, dtype=np.int64)
        for old, node in enumerate(nodes):
            if node.label is not None:
                if not isinstance(node.label, int):
                    raise ValueError(
                        f"trees[{tree_of[old]}]: expected integer labels (or None), found "
                        f"{node.label!r}; map the labels to class indices first"
                    )
                labels[new_index[old]] = node.label
        inputs, has_input = _node_inputs([nodes[i] for i in order], vocab)
        return cls(
            inputs=inputs,
            has_input=has_input,
            children=torch.from_numpy(children),
            parents=torch.from_numpy(parents),
            heights=torch.from_numpy(sorted_heights),
            level_starts=level_starts,
            roots=torch.from_numpy(new_index[roots]),
            labels=torch.from_numpy(labels),
            tree_index=torch.from_numpy(np.asarray(tree_of, dtype=np.int64)[order]),
            preorder=torch.from_numpy(new_index[pre]),
            tree_starts=tree_starts,
            schedule=_gather_schedule(children, parents, sorted_heights, level_starts),
        )

    def tree_nodes(self, i: int) -> Tensor:
        """Batch indices of tree ``i``'s nodes, in the preorder of :meth:`Tree.nodes`."""
        if not 0 <= i < self.num_trees:
            raise IndexError(f"i: expected a tree index in 0..{self.num_trees - 1}, found {i}")
        return self.preorder[self.tree_starts[i] : self.tree_starts[i + 1]]

    def to(self, device: torch.device | str) -> TreeBatch:
        """The same batch with its tensors on ``device``."""
        s = self.schedule
        return TreeBatch(
            inputs=None if self.inputs is None else self.inputs.to(device),
            has_input=self.has_input.to(device),
            children=self.children.to(device),
            parents=self.parents.to(device),
            heights=self.heights.to(device),
            level_starts=self.level_starts,
            roots=self.roots.to(device),
            labels=self.labels.to(device),
            tree_index=self.tree_index.to(device),
            preorder=self.preorder.to(device),
            tree_starts=self.tree_starts,
            schedule=GatherSchedule(
                [t.to(device) for t in s.order],
                s.splits,
                [t.to(device) for t in s.slots],
                s.num_received,
            ),
        )

    def embed(self, embedding: torch.nn.Module) -> Tensor:
        """``[N, I]`` embeddings of the token ids in ``inputs``, zeros where there is none.

        >>> vocab = {"[SM": 0, "1": 1, "]": 2}
        >>> b = TreeBatch.from_trees([Tree.from_listops("[SM 1 ]")], vocab=vocab)
        >>> emb = torch.nn.Embedding(3, 2)
        >>> x = b.embed(emb)
        >>> x.shape, bool((x[3:] == 0).all())
        (torch.Size([5, 2]), True)
        """
        if self.inputs is None or self.inputs.dtype != torch.int64 or self.inputs.dim() != 1:
            found = None if self.inputs is None else (self.inputs.dtype, tuple(self.inputs.shape))
            raise ValueError(f"inputs: expected [N] int64 token ids, found {found}")
        vectors = embedding(self.inputs.clamp(min=0))
        return vectors * self.has_input.unsqueeze(1).to(vectors.dtype)

    def __repr__(self) -> str:
        return (
            f"TreeBatch(num_trees={self.num_trees}, num_nodes={self.num_nodes}, "
            f"height={self.height}, max_children={self.children.shape[1]})"
        )


def _node_inputs(
    nodes: list[Tree], vocab: Mapping[str, int] | None
) -> tuple[Tensor | None, Tensor]:
    if vocab is not None:
        ids = [-1 if n.token is None else _token_id(n.token, vocab, None) for n in nodes]
        tensor = torch.tensor(ids, dtype=torch.int64)
        return tensor, tensor >= 0
    has = torch.tensor([n.value is not None for n in nodes], dtype=torch.bool)
    values = [n.value for n in nodes if n.value is not None]
    if not values:
        return None, has
    first = values[0]
    for v in values:
        if v.shape != first.shape or v.dtype != first.dtype:
            raise ValueError(
                f"value: expected every node value to have shape {tuple(first.shape)} and dtype "
                f"{first.dtype}, found {tuple(v.shape)} {v.dtype}"
            )
    fill = -1 if not (first.dtype.is_floating_point or first.dtype.is_complex) else 0
    out = torch.full((len(nodes), *first.shape), fill, dtype=first.dtype)
    out[has] = torch.stack(values)
    return out, has


def _gather_schedule(
    children: np.ndarray, parents: np.ndarray, heights: np.ndarray, level_starts: list[int]
) -> GatherSchedule:
    """The :class:`GatherSchedule` of a forest whose nodes are sorted by height."""
    num = len(heights)
    height = len(level_starts) - 2
    parent_height = np.where(parents >= 0, heights[parents], -1)
    # Every non-root node, by (parent height, height, index): the blocks height p receives,
    # in the order it concatenates them.
    sent = np.nonzero(parents >= 0)[0]
    sent = sent[np.lexsort((sent, heights[sent], parent_height[sent]))]
    position = np.zeros(num, dtype=np.int64)
    position[sent] = np.arange(len(sent))
    first = np.searchsorted(parent_height[sent], np.arange(height + 2))
    order, splits, slots, received = [], [], [], []
    for h, (a, b) in enumerate(pairwise(level_starts)):
        mine = np.arange(a, b)[parent_height[a:b] >= 0]
        mine = mine[np.argsort(parent_height[mine], kind="stable")]
        order.append(torch.from_numpy(mine - a))
        splits.append(np.bincount(parent_height[mine], minlength=height + 1)[h + 1 :].tolist())
        count = int(first[h + 1] - first[h]) if h > 0 else 0
        kids = children[a:b, : max(1, int((children[a:b] >= 0).sum(axis=1).max()))]
        slot = np.where(kids >= 0, position[kids] - (first[h] if h > 0 else 0), count)
        slots.append(torch.from_numpy(slot.astype(np.int64)))
        received.append(count)
    return GatherSchedule(order, splits, slots, received)
