"""``rnnkit tree`` on files of trees (ListOps TSV, SST-style brackets, label TAB tree) and
``rnnkit predict`` on new ones (:mod:`rnnkit.data.treefiles`).

Oracles: the labels, ids and splits worked out here from the files the tests write; the saved
model applied by hand, one node at a time, by a recursion over ``rnnkit.trees.Tree`` (no
TreeBatch, no MinibatchSource, the vocabulary and classes rebuilt here from the training
file); the generator's run, which must give the same figures as its trees written to files.
"""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnkit import load
from rnnkit.cli import main
from rnnkit.data.errors import ReaderError
from rnnkit.data.listops import LISTOPS_VOCAB, ListOpsConfig, generate_listops, write_listops_tsv
from rnnkit.data.treefiles import detect_format, read_tree_file
from rnnkit.recipes.options import TrainSettings
from rnnkit.recipes.rundir import CONTRACT
from rnnkit.recipes.tree import RECIPE, TreeConfig
from rnnkit.trees import Tree

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--embedding-size", "8", "--hidden-size", "8", "--minibatch-size", "8"]
SMALL += ["--learning-rate", "0.01", "--epochs", "2", "--threads", "1", "--quiet"]
WORDS = {"good": 4, "fine": 3, "it": 2, "'s": 2, "a": 2, "film": 2, "dull": 1, "bad": 0}


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def sst_tree(rng: random.Random, depth: int) -> str:
    """A binary SST-style tree: every node labelled 0-4, words at the leaves."""
    if depth == 0 or rng.random() < 0.3:
        word = rng.choice(sorted(WORDS))
        return f"({WORDS[word]} {word})"
    left, right = sst_tree(rng, depth - 1), sst_tree(rng, depth - 1)
    return f"({rng.randint(0, 4)} {left} {right})"


def write_sst(path: Path, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [sst_tree(rng, 3) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def write_labelled(path: Path, n: int, seed: int, wide: bool = False) -> list[tuple[str, str]]:
    """``label TAB tree`` lines, string labels, PTB-style trees whose node labels (S, NP, VP)
    are no classes: ``(S (NP w w) (VP w))``; with ``wide``, noun phrases of three words."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [rng.choice(sorted(WORDS)) for _ in range(4 if wide else 3)]
        label = "pos" if sum(WORDS[w] for w in words) / len(words) >= 2 else "neg"
        tree = f"(S (NP {' '.join(words[:-1])}) (VP {words[-1]}))"
        pairs.append((label, tree))
    path.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    return pairs


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, Path]]:
    base = tmp_path_factory.mktemp("trees")
    out: dict[str, dict[str, Path]] = {}
    examples = generate_listops(60, ListOpsConfig(max_depth=3, max_length=30), seed=5)
    listops = {"train": base / "lo-train.tsv", "test": base / "lo-test.tsv"}
    write_listops_tsv(listops["train"], examples[:40])
    write_listops_tsv(listops["test"], examples[40:52])
    listops["new"] = base / "lo-new.tsv"
    listops["new"].write_text(
        "".join(f"{ex.label}\t{ex.sequence}\n" for ex in examples[52:56])
        + "".join(f"{ex.sequence}\n" for ex in examples[56:])  # no labels
    )
    out["listops"] = listops
    sst = {k: base / f"sst-{k}.txt" for k in ("train", "test", "valid", "new")}
    write_sst(sst["train"], 40, 1)
    write_sst(sst["test"], 12, 2)
    write_sst(sst["valid"], 8, 3)
    new = write_sst(sst["new"], 5, 4)
    new.append("((2 unseen) (2 words))")  # no label at the root; tokens never seen
    sst["new"].write_text("\n".join(new) + "\n")
    out["brackets"] = sst
    labelled = {k: base / f"lab-{k}.tsv" for k in ("train", "test", "new")}
    write_labelled(labelled["train"], 40, 1)
    write_labelled(labelled["test"], 12, 2)
    pairs = write_labelled(labelled["new"], 5, 3)
    labelled["new"].write_text("".join(f"{a}\t{b}\n" for a, b in pairs) + "(S (NP good))\n")
    out["labelled"] = labelled
    return out


def train_run(tmp_path: Path, files: dict[str, Path], *extra: str, model: str = "tree-lstm"):
    run = tmp_path / "run"
    argv = ["tree", "--train", str(files["train"]), "--test", str(files["test"]), *SMALL]
    argv += ["--model", model, "--no-compare", "--run-dir", str(run), *extra]
    assert main(argv) == 0
    return run


# ----------------------------------------------------------------------------- by hand


def classes_of(path: Path, fmt: str) -> list:
    """The classes worked out here: the ListOps values, or the labels sorted."""
    if fmt == "listops":
        return list(range(10))
    labels = set()
    for line in path.read_text().splitlines():
        text = line.split("\t")[0] if fmt == "labelled" else line[1:].split()[0]
        labels.add(int(text) if text.isdigit() else text)
    return sorted(labels, key=lambda v: (isinstance(v, str), v))


def parse(text: str, fmt: str) -> Tree:
    return Tree.from_listops(text) if fmt == "listops" else Tree.from_brackets(text)


def by_hand(run: Path, texts: list[str], fmt: str, vocab: dict[str, int]) -> list[int]:
    """The saved model's class indices for ``texts``, one node at a time."""
    model = load(run).eval()
    cell = model.encoder.cell
    hidden = model.hidden_size
    n = model.max_children

    def state(node: Tree) -> tuple[torch.Tensor, torch.Tensor]:
        if node.token is None:
            x = torch.zeros(1, model.embedding_size)
        else:
            x = model.embedding.weight[vocab.get(node.token, 0)].unsqueeze(0)
        kids = [state(c) for c in node.children]
        width = n if n is not None else len(kids)
        h = torch.zeros(1, width, hidden)
        c = torch.zeros(1, width, hidden)
        mask = torch.zeros(1, width, dtype=torch.bool)
        for k, (hk, ck) in enumerate(kids):
            h[0, k], c[0, k], mask[0, k] = hk[0], ck[0], True
        return cell(x, (h, c), mask)

    out = []
    with torch.no_grad():
        for text in texts:
            h, _ = state(parse(text, fmt))
            out.append(int(model.output(h).argmax()))
    return out


def vocab_of(path: Path, fmt: str) -> dict[str, int]:
    """The vocabulary worked out here from a training file (all of it trains when --valid is
    given): <unk> then the sorted tokens of its leaves; ListOps: its 15 tokens."""
    if fmt == "listops":
        return dict(LISTOPS_VOCAB)
    tokens = set()
    for line in path.read_text().splitlines():
        text = line.split("\t")[-1]
        tokens |= {leaf.token for leaf in Tree.from_brackets(text).leaves()}
    return {t: i for i, t in enumerate(["<unk>", *sorted(tokens)])}


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", ["listops", "brackets", "labelled"])
def test_train_test_predict_round_trip(fmt, files, tmp_path) -> None:
    paths = files[fmt]
    assert detect_format(paths["train"]) == fmt
    valid = ["--valid", str(paths["valid"] if "valid" in paths else paths["test"])]
    run = train_run(tmp_path, paths, *valid)
    assert sorted(p.name for p in run.iterdir()) == sorted(CONTRACT)
    info = json.loads((run / "run.json").read_text())
    classes = classes_of(paths["train"], fmt)
    assert info["data"]["format"] == fmt and info["data"]["classes"] == classes
    # the test part: its ids, labels and the saved model's classes for its trees
    rows = rows_of(run / "predictions.csv")
    lines = paths["test"].read_text().splitlines()
    column = "expression" if fmt == "listops" else "tree"
    texts = [line.split("\t")[-1] for line in lines]
    assert [r["id"] for r in rows] == [f"{paths['test'].name}:{i}" for i in range(1, 13)]
    assert [r[column] for r in rows] == texts
    truth = [str(t.label) for t in read_tree_file(paths["test"])]
    assert [r["target"] for r in rows] == truth
    vocab = vocab_of(paths["train"], fmt)
    hand = by_hand(run, texts, fmt, vocab)
    assert [r["prediction"] for r in rows] == [str(classes[k]) for k in hand]
    right = sum(r["prediction"] == r["target"] for r in rows) / len(rows)
    assert info["result"]["test_accuracy"] == right
    # new trees, some without a label
    out = tmp_path / "new.csv"
    assert main(["predict", str(run), str(paths["new"]), "--out", str(out)]) == 0
    new_rows = rows_of(out)
    new_lines = paths["new"].read_text().splitlines()
    assert [r["id"] for r in new_rows] == [
        f"{paths['new'].name}:{i + 1}" for i in range(len(new_lines))
    ]
    new_texts = [line.split("\t")[-1] for line in new_lines]
    hand = by_hand(run, new_texts, fmt, vocab)
    assert [r["prediction"] for r in new_rows] == [str(classes[k]) for k in hand]
    labelled = [r["target"] for r in new_rows]
    assert labelled[-1] == "" and all(labelled[:4])


def test_the_file_path_gives_the_generators_run(tmp_path) -> None:
    """The generator's split written to three files and read back: the same figures."""
    generated = tmp_path / "generated"
    sizes = ["--generated-train", "48", "--generated-test", "16", "--generated-validation", "16"]
    shape = ["--max-depth", "3", "--max-length", "30"]
    argv = ["tree", *SMALL, "--no-compare"]
    assert main([*argv, *sizes, *shape, "--run-dir", str(generated)]) == 0
    examples = generate_listops(80, ListOpsConfig(max_depth=3, max_length=30), seed=0)
    for name, part in (("train", examples[:48]), ("test", examples[48:64])):
        write_listops_tsv(tmp_path / f"{name}.tsv", part)
    write_listops_tsv(tmp_path / "valid.tsv", examples[64:])
    from_files = tmp_path / "files"
    files = ["--train", str(tmp_path / "train.tsv"), "--test", str(tmp_path / "test.tsv")]
    files += ["--valid", str(tmp_path / "valid.tsv")]
    assert main([*argv, *files, "--run-dir", str(from_files)]) == 0
    a = json.loads((generated / "run.json").read_text())["result"]
    b = json.loads((from_files / "run.json").read_text())["result"]
    assert a == b
    rows_a, rows_b = rows_of(generated / "predictions.csv"), rows_of(from_files / "predictions.csv")
    assert [(r["target"], r["prediction"]) for r in rows_a] == [
        (r["target"], r["prediction"]) for r in rows_b
    ]


def test_the_validation_part_is_cut_from_the_training_file_by_seed(files) -> None:
    paths = files["brackets"]
    lines = [t.text for t in read_tree_file(paths["train"])]

    def parts(seed: int, fraction: float = 0.25) -> tuple[list[str], list[str]]:
        config = TreeConfig(
            train_file=paths["train"],
            test=paths["test"],
            valid_fraction=fraction,
            train=TrainSettings(seed=seed),
        )
        data = RECIPE.load_data(config)
        return [e["expression"].text for e in data.train], [
            e["expression"].text for e in data.validation
        ]

    train, valid = parts(0)
    assert len(valid) == 10 and len(train) == 30  # round(0.25 * 40)
    assert sorted(train + valid) == sorted(lines)
    rest = iter(lines)
    assert all(t in rest for t in train)  # the file's order is kept
    assert parts(0) == (train, valid)
    assert parts(1)[1] != valid


def test_unknown_tokens_read_as_unk_and_the_vocabulary_comes_from_training(files, tmp_path):
    paths = files["brackets"]
    run = train_run(tmp_path, paths, "--valid", str(paths["valid"]))
    info = json.loads((run / "run.json").read_text())["data"]
    train_tokens = {
        leaf.token
        for t in read_tree_file(paths["train"])
        for leaf in parse(t.text, "brackets").leaves()
    }
    assert info["vocabulary"] == ["<unk>", *sorted(train_tokens)]
    new = tmp_path / "unk.txt"
    new.write_text("(2 (2 zork) (3 (2 blah) (4 good)))\n(2 (2 <unk>) (3 (2 <unk>) (4 good)))\n")
    out = tmp_path / "unk.csv"
    assert main(["predict", str(run), str(new), "--out", str(out)]) == 0
    a, b = rows_of(out)
    assert a["prediction"] == b["prediction"]
    model = load(run).eval()
    from rnnkit.data.treefiles import ParsedTree

    vocab = {t: i for i, t in enumerate(info["vocabulary"])}
    classes = {c: i for i, c in enumerate(info["classes"])}
    trees = [
        ParsedTree.make(line, "brackets", vocab, classes) for line in new.read_text().splitlines()
    ]
    with torch.no_grad():
        logits = model(ParsedTree.collate(trees))
    assert torch.allclose(logits[0], logits[1])


def test_wide_trees_get_a_child_sum_tree_lstm(tmp_path) -> None:
    train, test = tmp_path / "wide-train.tsv", tmp_path / "wide-test.tsv"
    write_labelled(train, 30, 7, wide=True)
    write_labelled(test, 8, 8, wide=True)
    run = train_run(tmp_path, {"train": train, "test": test})
    model = load(run)
    assert model.max_children is None
    assert type(model.encoder.cell).__name__ == "ChildSumTreeLSTMCell"
    rows = rows_of(run / "predictions.csv")
    info = json.loads((run / "run.json").read_text())["data"]
    vocab = {t: i for i, t in enumerate(info["vocabulary"])}
    hand = by_hand(run, [r["tree"] for r in rows], "labelled", vocab)
    assert [r["prediction"] for r in rows] == [info["classes"][k] for k in hand]


def test_a_binary_run_refuses_a_wider_tree_with_its_place(files, tmp_path, capsys) -> None:
    run = train_run(tmp_path, files["brackets"], "--valid", str(files["brackets"]["valid"]))
    new = tmp_path / "wide.txt"
    new.write_text("(1 (1 a) (2 b))\n(3 (1 a) (2 b) (3 good))\n")
    assert main(["predict", str(run), str(new)]) == 1
    err = capsys.readouterr().err
    assert f"{new}:2:1: expected nodes of at most 2 children" in err and "found one of 3" in err


def test_the_lstm_reads_the_leaves(files, tmp_path) -> None:
    paths = files["labelled"]
    run = train_run(tmp_path, paths, "--valid", str(paths["test"]), model="lstm")
    info = json.loads((run / "run.json").read_text())["data"]
    vocab = {t: i for i, t in enumerate(info["vocabulary"])}
    rows = rows_of(run / "predictions.csv")
    model = load(run).eval()
    out = []
    with torch.no_grad():
        for row in rows:
            leaves = [leaf.token for leaf in Tree.from_brackets(row["tree"]).leaves()]
            ids = torch.tensor([vocab.get(t, 0) for t in leaves])
            h = torch.zeros(1, model.hidden_size)
            c = torch.zeros(1, model.hidden_size)
            for x in model.embedding(ids):
                h, c = model.encoder.cell(x.unsqueeze(0), (h, c))
            out.append(info["classes"][int(model.output(h).argmax())])
    assert [r["prediction"] for r in rows] == out


def test_load_in_a_fresh_interpreter(files, tmp_path) -> None:
    paths = files["brackets"]
    run = train_run(tmp_path, paths, "--valid", str(paths["valid"]))
    rows = rows_of(run / "predictions.csv")
    info = json.loads((run / "run.json").read_text())["data"]
    code = (
        "import json, sys, torch, rnnkit\n"
        "from rnnkit.data.treefiles import ParsedTree\n"
        f"model = rnnkit.load({str(run)!r}).eval()\n"
        f"vocab = {{t: i for i, t in enumerate({info['vocabulary']!r})}}\n"
        f"classes = {info['classes']!r}\n"
        f"texts = {[r['tree'] for r in rows]!r}\n"
        "index = {c: i for i, c in enumerate(classes)}\n"
        "trees = [ParsedTree.make(t, 'brackets', vocab, index) for t in texts]\n"
        "batch = ParsedTree.collate(trees)\n"
        "with torch.no_grad():\n"
        "    print(' '.join(str(classes[k]) for k in model(batch).argmax(1).tolist()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [r["prediction"] for r in rows]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fmt", "text", "place", "message"),
    [
        ("brackets", "(3 (2 a) (1 b))\n(3 (2 a) (1 b)\n", "2:15", "the bracket opened at column 1"),
        ("brackets", "(3 (2 a) (1 b))\n(3 (2 a)) (1 b))\n", "2:11", "expected the end of the tree"),
        ("labelled", "pos\t(S a b)\nneg\t(S (NP a) b\n", "2:16", "the bracket opened at column 5"),
        ("listops", "3\t[SM 1 2 ]\n9\t[MAX 1 9\n", "2:11", "the list opened at column 3"),
        ("listops", "3\t[SM 1 2 ]\n9\t[FOO 1 9 ]\n", "2:3", "expected a ListOps token"),
        ("listops", "3\t[SM 1 2 ]\n12\t[MAX 1 9 ]\n", "2:1", "expected a ListOps label 0-9"),
        ("brackets", "(3 (2 a) (1 b))\n((2 a) (1 b))\n", "2:2", "expected a label at the root"),
        ("labelled", "pos\t(S a b)\n(S a b)\n", "2:8", "expected 'label<TAB>tree'"),
    ],
)
def test_bad_lines_are_located(fmt, text, place, message, tmp_path, files, capsys) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    with pytest.raises(ReaderError) as info:
        read_tree_file(bad, fmt)
    assert str(info.value).startswith(f"{bad}:{place}: ") and message in str(info.value)
    # the same through the command, as a training file and as a test file
    good = files[fmt]["train"]
    for train, test in ((bad, good), (good, bad)):
        argv = ["tree", "--train", str(train), "--test", str(test), "--format", fmt, *SMALL]
        assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 1
        assert f"{bad}:{place}: " in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["brackets", "labelled"])
def test_an_unseen_test_label_is_refused_with_its_place(fmt, files, tmp_path, capsys) -> None:
    test = tmp_path / "unseen.txt"
    line = "(9 (2 a) (2 b))" if fmt == "brackets" else "great\t(S a b)"
    test.write_text(files[fmt]["test"].read_text().splitlines()[0] + "\n" + line + "\n")
    argv = ["tree", "--train", str(files[fmt]["train"]), "--test", str(test), *SMALL]
    assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    shown = "9" if fmt == "brackets" else "'great'"
    column = 2 if fmt == "brackets" else 1
    assert f"{test}:2:{column}: expected a label of the training file (" in err
    assert err.rstrip().endswith(f"found {shown}")


def test_empty_and_unreadable_files_are_refused(files, tmp_path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ReaderError, match="expected at least one tree, found no non-blank line"):
        detect_format(empty)
    with pytest.raises(ReaderError, match="expected at least one brackets tree"):
        read_tree_file(empty, "brackets")
    good = files["brackets"]
    for argv in (
        ["--train", str(empty), "--test", str(good["test"])],
        ["--train", str(good["train"]), "--test", str(empty)],
    ):
        assert main(["tree", *argv, *SMALL, "--run-dir", str(tmp_path / "r")]) == 1
        assert f"{empty}: expected at least one" in capsys.readouterr().err
    missing = tmp_path / "missing.txt"
    argv = ["--train", str(good["train"]), "--test", str(missing)]
    assert main(["tree", *argv, *SMALL, "--run-dir", str(tmp_path / "r")]) == 1
    assert f"--test: expected a file of trees, found no file '{missing}'" in capsys.readouterr().err
    prose = tmp_path / "prose.txt"
    prose.write_text("It was a good film.\n")
    with pytest.raises(ReaderError, match=r"prose.txt:1:1: cannot tell the format.*--format"):
        detect_format(prose)
    one = tmp_path / "one.txt"
    one.write_text("(1 (1 a) (1 b))\n")
    argv = ["--train", str(one), "--test", str(good["test"])]
    assert main(["tree", *argv, *SMALL, "--run-dir", str(tmp_path / "r")]) == 1
    assert "expected at least 2 trees to cut a validation part" in capsys.readouterr().err


def test_diagnose_a_file_run(files, tmp_path, capsys) -> None:
    paths = files["brackets"]
    run = train_run(tmp_path, paths)  # validation cut from the training file, as rebuilt
    capsys.readouterr()
    assert main(["diagnose", str(run)]) == 0
    assert capsys.readouterr().out.startswith("encoder: |dL/dh_t| from ")


def test_older_run_json_names_of_the_generated_sizes_are_read() -> None:
    values = {"train_size": 64, "test_size": 16, "validation_size": 8, "max_depth": 2}
    config = RECIPE.config_from_run(values, {})
    assert (config.generated_train, config.generated_test, config.generated_validation) == (
        64,
        16,
        8,
    )
    assert config.max_depth == 2 and config.train_file is None
