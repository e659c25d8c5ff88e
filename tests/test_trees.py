"""Tree parsers (round trips, positions of errors) and TreeBatch (against hand-built layouts)."""

from __future__ import annotations

import ast
import inspect
import json.decoder
import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data.errors import ReaderError
from rnnkit.trees import Tree, TreeBatch

SST = "(3 (2 It) (4 (2 's) (2 fine)))"


# ------------------------------------------------------------------ brackets
def test_sst_tree_is_read_as_labelled_leaves_and_nodes() -> None:
    t = Tree.from_brackets(SST)
    assert t.label == 3 and [c.label for c in t.children] == [2, 4]
    it, rest = t.children
    assert it.is_leaf() and it.token == "It"
    assert [(n.label, n.token) for n in rest.children] == [(2, "'s"), (2, "fine")]
    assert [n.label for n in t.nodes()] == [3, 2, 4, 2, 2]
    assert t.height() == 2 and len(t) == 5


@pytest.mark.parametrize(
    "text",
    [
        SST,
        "(S (NP (DT the) (NN dog)) (VP (VBZ barks)))",
        "((2 a) (3 b))",  # an unlabelled root
        "(NP the big dog)",  # bare words: unlabelled leaves
        "word",
        "(X)",  # a labelled leaf without a token
        "(-1 (0 a) (10 b))",
        "(01 a)",  # not a canonical integer: stays a string label
    ],
)
def test_brackets_round_trip(text: str) -> None:
    assert Tree.from_brackets(text).to_string() == text
    assert str(Tree.from_brackets(f"  {text.replace(' ', '   ')} ")) == text


def test_brackets_labels_are_ints_only_when_canonical() -> None:
    assert Tree.from_brackets("(01 a)").label == "01"
    assert Tree.from_brackets("(-1 a)").label == -1


LABELS = st.one_of(st.integers(0, 4), st.sampled_from(["NP", "VP", "S"]))
WORDS = st.text(alphabet="abcxyz'.,", min_size=1, max_size=4)
SST_TREES = st.recursive(
    st.builds(lambda label, word: Tree(label, token=word), LABELS, WORDS),
    lambda kids: st.builds(
        lambda label, children: Tree(label, children),
        LABELS,
        st.lists(kids, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(SST_TREES)
def test_brackets_round_trip_on_random_trees(tree: Tree) -> None:
    text = tree.to_string()
    again = Tree.from_brackets(text)
    assert again == tree
    assert again.to_string() == text


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("(3 (2 It) (4 (2 's) (2 fine))", 30, "opened at column 1 is not closed"),
        ("(3 (2 It)))", 11, "expected the end of the tree, found ')'"),
        ("(3 () (2 a))", 5, "expected a label or a child"),
        ("", 1, "empty"),
        (") a", 1, "found ')'"),
        ("(2 a) (3 b)", 7, "expected the end of the tree"),
    ],
)
def test_brackets_errors_carry_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(ReaderError, match=re.escape(message)) as err:
        Tree.from_brackets(text)
    assert (err.value.line, err.value.column) == (1, column)
    assert f"1:{column}: " in str(err.value)


# ------------------------------------------------------------------ ListOps
def test_listops_gold_tree_is_left_branching_within_each_list() -> None:
    t = Tree.from_listops("[MAX 2 9 [MIN 4 7 ] 0 ]")
    # ((((([MAX 2) 9) L) 0) ]) with L = ((([MIN 4) 7) ])
    assert t.to_string("brackets") == "((((([MAX 2) 9) ((([MIN 4) 7) ])) 0) ])"
    assert all(len(n.children) in (0, 2) for n in t.nodes())
    assert all((n.token is None) == bool(n.children) for n in t.nodes())
    assert " ".join(str(leaf.token) for leaf in t.leaves()) == "[MAX 2 9 [MIN 4 7 ] 0 ]"
    assert t.height() == 6 and len(t) == 2 * 9 - 1


def listops_strings(depth: int = 0) -> st.SearchStrategy[str]:
    digit = st.sampled_from([str(d) for d in range(10)])
    if depth >= 3:
        return digit
    op = st.sampled_from(["[MIN", "[MAX", "[MED", "[SM"])
    lists = st.builds(
        lambda o, args: " ".join([o, *args, "]"]),
        op,
        st.lists(st.deferred(lambda: listops_strings(depth + 1)), min_size=1, max_size=4),
    )
    return st.one_of(digit, lists)


@settings(max_examples=60, deadline=None)
@given(listops_strings())
def test_listops_round_trip_on_random_expressions(text: str) -> None:
    tree = Tree.from_listops(text)
    assert tree.to_string() == text
    assert tree == Tree.from_listops(str(tree))
    assert len(tree.leaves()) == len(text.split())


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("] 2", 1, "found ']' with no open list"),
        ("[MAX 2 ] ]", 10, "expected the end, found ']'"),
        ("[MAX ]", 6, "no arguments"),
        ("[MAX 2 [MIN 3 ]", 16, "opened at column 1 is not closed"),
        ("[MAX 2 (3) ]", 8, "expected an operator, a value or ']'"),
        ("[SM 1 ] 4", 9, "expected the end"),
        ("   ", 1, "empty"),
    ],
)
def test_listops_errors_carry_the_column(text: str, column: int, message: str) -> None:
    with pytest.raises(ReaderError, match=re.escape(message)) as err:
        Tree.from_listops(text)
    assert err.value.column == column


# ------------------------------------------------------------------ parent pointers
def test_parents_dependency_tree() -> None:
    t = Tree.from_parents([2, 0, 2, 3], tokens=["the", "dog", "barks", "loudly"])
    assert t.token == "dog" and [c.token for c in t.children] == ["the", "barks"]
    assert [c.token for c in t.children[1].children] == ["loudly"]
    assert t.to_parents() == ([2, 0, 2, 3], ["the", "dog", "barks", "loudly"])
    assert str(t) == "2 0 2 3"


def test_parents_constituency_file_lines_tokens_on_leading_leaves() -> None:
    # Tai et al.'s SST files: leaves 1..3 first, then internal nodes 4 (root) and 5.
    t = Tree.from_parents("4 5 5 0 4", tokens="It 's fine")
    assert t.to_string("brackets") == "(It ('s fine))"
    assert t.to_parents() == ([4, 5, 5, 0, 4], ["It", "'s", "fine"])


@st.composite
def parent_arrays(draw: st.DrawFn) -> list[int]:
    n = draw(st.integers(1, 12))
    order = draw(st.permutations(range(n)))
    heads = [0] * n
    for k, node in enumerate(order[1:], start=1):
        heads[node] = order[draw(st.integers(0, k - 1))] + 1
    return heads


@settings(max_examples=80, deadline=None)
@given(parent_arrays())
def test_parents_round_trip_on_random_arrays(heads: list[int]) -> None:
    tokens = [f"w{i}" for i in range(len(heads))]
    t = Tree.from_parents(heads, tokens=tokens)
    assert t.to_parents() == (heads, tokens)
    assert Tree.from_parents(str(t), tokens=" ".join(tokens)) == t


def test_parents_without_positions_number_leaves_first() -> None:
    t = Tree(None, [Tree(None, [Tree(token="a"), Tree(token="b")]), Tree(token="c")])
    assert t.to_parents() == ([4, 4, 5, 5, 0], ["a", "b", "c"])


def test_parents_errors() -> None:
    with pytest.raises(ReaderError, match="head index") as err:
        Tree.from_parents("2 x 2")
    assert err.value.column == 3
    with pytest.raises(ValueError, match="exactly one root"):
        Tree.from_parents([0, 0])
    with pytest.raises(ValueError, match=r"parents\[1\]: expected a head in 0..2"):
        Tree.from_parents([0, 3])
    with pytest.raises(ValueError, match="not connected"):
        Tree.from_parents([0, 3, 2])
    with pytest.raises(ValueError, match="own head"):
        Tree.from_parents([0, 2])
    with pytest.raises(ValueError, match="tokens: expected at most 1"):
        Tree.from_parents([0], tokens=["a", "b"])


# ------------------------------------------------------------------ Python syntax trees
def test_python_tree_mirrors_ast_on_real_source() -> None:
    source = inspect.getsource(random)
    tree = Tree.from_python(source)
    walked = list(ast.walk(ast.parse(source)))
    assert len(tree) == len(walked)
    assert sorted(str(n.token) for n in tree.nodes()) == sorted(type(n).__name__ for n in walked)
    assert Tree.from_python("def f(a):\n    return a + 1\n").to_string("sexpr") == (
        "(Module (FunctionDef (arguments (arg)) (Return (BinOp (Name (Load)) (Add) (Constant)))))"
    )


@pytest.mark.parametrize("module", [random, ast, inspect, json.decoder])
def test_python_tree_prints_back_its_source(module: object) -> None:
    source = inspect.getsource(module)  # type: ignore[arg-type]
    printed = str(Tree.from_python(source))
    # Layout and comments are not in the syntax tree: the same tree, and a fixed point.
    assert ast.dump(ast.parse(printed)) == ast.dump(ast.parse(source))
    assert str(Tree.from_python(printed)) == printed


def test_python_tree_prints_its_edits_and_refuses_bad_source() -> None:
    tree = Tree.from_python("a = 1\nb = f(a, *c, k=None)\n")
    assert str(tree) == "a = 1\nb = f(a, *c, k=None)"
    tree.children.reverse()  # the two statements, swapped
    assert str(tree) == "b = f(a, *c, k=None)\na = 1"
    assert repr(Tree.from_python("pass")) == "Tree.from_python('pass')"
    with pytest.raises(SyntaxError):
        Tree.from_python("def f(:\n")
    # A tree built by hand has no syntax to rebuild: it prints as an s-expression.
    assert (
        str(Tree(children=[Tree(token="Pass", format="python")], token="Module", format="python"))
        == "(Module (Pass))"
    )


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format: expected one of"):
        Tree.from_brackets(SST).to_string("json")  # type: ignore[arg-type]


# ------------------------------------------------------------------ TreeBatch
def test_tree_batch_layout_by_hand() -> None:
    sst = Tree.from_brackets(SST)
    leaf = Tree(1, token="fine")
    batch = TreeBatch.from_trees([sst, leaf], vocab={"It": 0, "'s": 1, "fine": 2})
    # Postorder: It(0) 's(1) fine(2) [4](3) [3](4) | fine(5). Sorted by height (stable):
    # It, 's, fine, fine(tree 1), [4], [3].
    assert batch.inputs is not None
    assert batch.inputs.tolist() == [0, 1, 2, 2, -1, -1]
    assert batch.has_input.tolist() == [True] * 4 + [False] * 2
    assert batch.heights.tolist() == [0, 0, 0, 0, 1, 2]
    assert batch.children.tolist() == [[-1, -1]] * 4 + [[1, 2], [0, 4]]
    assert batch.num_children.tolist() == [0, 0, 0, 0, 2, 2]
    assert batch.parents.tolist() == [5, 4, 4, -1, 5, -1]
    assert [lv.tolist() for lv in batch.levels] == [[0, 1, 2, 3], [4], [5]]
    assert batch.roots.tolist() == [5, 3]
    assert batch.labels.tolist() == [2, 2, 2, 1, 4, 3]
    assert batch.root_labels.tolist() == [3, 1]
    assert batch.tree_index.tolist() == [0, 0, 0, 1, 0, 0]
    assert batch.tree_nodes(0).tolist() == [5, 0, 4, 1, 2]
    assert batch.tree_nodes(1).tolist() == [3]
    assert batch.height == 2


def test_gather_schedule_sends_every_child_once() -> None:
    rng = random.Random(0)

    def grow(depth: int) -> Tree:
        if depth > 5 or (depth and rng.random() < 0.4):
            return Tree(token="x")
        return Tree(None, [grow(depth + 1) for _ in range(rng.randint(1, 4))])

    batch = TreeBatch.from_trees([grow(0) for _ in range(20)])
    s = batch.schedule
    # Replay the schedule with node indices as "states": each node must read its children.
    received: dict[int, list[int]] = {}
    for h, (a, b) in enumerate(zip(batch.level_starts, batch.level_starts[1:], strict=False)):
        if h:
            pool = [*received.get(h, []), -1]
            assert len(pool) - 1 == s.num_received[h]
            got = [[pool[k] for k in row] for row in s.slots[h].tolist()]
            want = batch.children[a:b, : s.slots[h].shape[1]].tolist()
            assert got == want
        sent = (torch.arange(a, b)[s.order[h]]).split(s.splits[h]) if h < batch.height else []
        for p, block in enumerate(sent, start=h + 1):
            received.setdefault(p, []).extend(block.tolist())
    for j in range(batch.num_nodes):  # heights from the Tree objects agree
        kids = batch.children[j, : batch.num_children[j]]
        expect = 0 if kids.numel() == 0 else 1 + int(batch.heights[kids].max())
        assert int(batch.heights[j]) == expect


def test_values_collate_and_map_tokens() -> None:
    a = Tree(None, [Tree(value=torch.tensor([1.0, 2.0])), Tree(value=torch.tensor([3.0, 4.0]))])
    batch = Tree.collate([a])
    assert batch.inputs is not None
    assert batch.inputs.tolist() == [[1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]
    vocab = {"[SM": 0, "1": 1, "2": 2, "]": 3}
    t = Tree.from_listops("[SM 1 2 ]")
    by_vocab = TreeBatch.from_trees([t], vocab=vocab)
    by_values = Tree.collate([t.map_tokens(vocab)])
    assert by_vocab.inputs is not None and by_values.inputs is not None
    assert torch.equal(by_vocab.inputs, by_values.inputs)
    assert by_vocab.inputs.tolist() == [0, 1, 2, 3, -1, -1, -1]
    emb = torch.nn.Embedding(4, 3)
    x = by_vocab.embed(emb)
    torch.testing.assert_close(x[:4], emb.weight[[0, 1, 2, 3]])
    assert torch.equal(x[4:], torch.zeros(3, 3))


def test_tree_batch_errors() -> None:
    with pytest.raises(ValueError, match="trees: expected a non-empty sequence"):
        TreeBatch.from_trees([])
    with pytest.raises(ValueError, match="expected integer labels"):
        TreeBatch.from_trees([Tree.from_brackets("(NP a)")])
    with pytest.raises(KeyError, match="'b' is not in the vocabulary"):
        TreeBatch.from_trees([Tree.from_brackets("(1 b)")], vocab={"a": 0})
    with pytest.raises(ValueError, match="every node value to have shape"):
        Tree.collate([Tree(None, [Tree(value=torch.zeros(2)), Tree(value=torch.zeros(3))])])
    with pytest.raises(ValueError, match=r"inputs: expected \[N\] int64 token ids"):
        Tree.collate([Tree(token="a")]).embed(torch.nn.Embedding(2, 2))


def test_minibatch_source_collates_tree_streams() -> None:
    minibatch = pytest.importorskip("rnnkit.data.minibatch")
    vocab = {"[SM": 0, "[MAX": 1, "]": 2, **{str(d): 3 + d for d in range(10)}}
    texts = ["[SM 1 2 ]", "[MAX 3 [SM 4 5 ] ]", "7", "[MAX 0 9 1 ]"]
    examples = [
        {"tree": Tree.from_listops(t).map_tokens(vocab), "label": torch.tensor([[k]])}
        for k, t in enumerate(texts)
    ]
    source = minibatch.MinibatchSource(examples, 2, unit="sequences", randomize=False, max_sweeps=1)
    seen = []
    for mb in source:
        batch = mb["tree"]
        assert isinstance(batch, TreeBatch)
        chosen = [Tree.from_listops(texts[i]) for i in mb.indices]
        expected = TreeBatch.from_trees(chosen, vocab=vocab)
        assert batch.inputs is not None and expected.inputs is not None
        assert torch.equal(batch.inputs, expected.inputs)
        assert torch.equal(batch.children, expected.children)
        seen.extend(mb.indices)
    assert seen == [0, 1, 2, 3]
