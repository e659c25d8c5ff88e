"""Mutation fuzzing of every rnnkit reader, the model files and the checkpoints.

Each target starts from real files (slices of ../shared/data, or files written by rnnkit's
own writers from real data where the data folder has none of that format), mutates them
(bit flips, inserted and deleted bytes, truncation, duplicated and swapped lines, huge numbers,
nan/inf, bytes that are not UTF-8, long lines, deep nesting, CRLF endings, splices of two
files) and hands each input to a worker process that reads it under a memory limit; the parent
kills a worker that takes longer than the time limit and starts a new one. Every outcome is
one of:

- ``ok``: the input was read (for the model files and checkpoints: and the tensors are the
  original ones, bit for bit);
- ``refused``: the target's documented error (a reader's ``ReaderError`` with its location; a
  model or checkpoint refused with a ``ValueError`` naming the file);
- a failure: any other exception (``unexpected``), different weights loaded without an error
  (``silent``), an error that does not name the file (``unnamed``), a worker that died
  (``crash``) or ran out of its time (``hang``), or, for CTF, the three scanners (C, Python
  fast, plain) disagreeing at some block size (``disagree``).

Inputs are a pure function of ``--seed`` and their number, so a failure is reproduced with
``--seed S --only TARGET:N``; the failing inputs are also written to ``--failures``.

    python bench/fuzz.py --inputs 100000                      # the long run (bench/README.md)
    python bench/fuzz.py --inputs 40 --budget 50 --json out.json   # CI's short run
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# ---------------------------------------------------------------------------------------------
# Seeds: small real files


def _head(path: Path, lines: int) -> bytes:
    """The first ``lines`` lines of a text file (bz2 and gzip files are decompressed)."""
    opener: Callable[..., Any] = open
    if path.suffix == ".bz2":
        opener = bz2.open
    elif path.suffix == ".gz":
        opener = gzip.open
    out = []
    with opener(path, "rb") as f:
        for _ in range(lines):
            line = f.readline()
            if not line:
                break
            out.append(line)
    return b"".join(out)


def _ts_head(path: Path, series: int) -> bytes:
    """The header of a ``.ts`` file and its first ``series`` data lines."""
    text = path.read_bytes()
    head, _, data = text.partition(b"@data")
    if not _:
        head, _, data = text.partition(b"@DATA")
    lines = data.lstrip(b"\r\n").splitlines(keepends=True)
    return head + b"@data\n" + b"".join(lines[:series])


def _written(write: Callable[[Path], None], name: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        write(path)
        return path.read_bytes()


def _idx_seeds() -> list[tuple[str, bytes]]:
    import numpy as np

    from rnnkit.data import read_idx, write_idx

    labels = read_idx(DATA / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")[:200]
    images = read_idx(DATA / "fashion-mnist" / "t10k-images-idx3-ubyte.gz")[:3]
    raw_labels = _written(lambda p: write_idx(p, labels), "labels.idx")
    raw_images = _written(lambda p: write_idx(p, np.ascontiguousarray(images)), "images.idx")
    return [
        ("t10k-labels[:200]", raw_labels),
        ("t10k-images[:3]", raw_images),
        ("t10k-labels[:200].gz", gzip.compress(raw_labels, mtime=0)),
    ]


def _listops_seed() -> bytes:
    from rnnkit.data.listops import generate_listops, write_listops_tsv

    return _written(lambda p: write_listops_tsv(p, generate_listops(30, seed=0)), "l.tsv")


def _visits_seed() -> bytes:
    from rnnkit.data.visits import synthetic_visits, write_visits

    return _written(lambda p: write_visits(p, synthetic_visits(8, seed=0)), "v.csv")


def _adding_seed() -> bytes:
    from rnnkit.data.synthetic import adding_problem, write_adding_csv

    return _written(lambda p: write_adding_csv(p, adding_problem(3, 20, seed=0)[0]), "a.csv")


def _copy_seed() -> bytes:
    from rnnkit.data.synthetic import copy_task, write_copy_file

    return _written(lambda p: write_copy_file(p, copy_task(5, 10, seed=0)[0]), "c.txt")


def _brackets_seed() -> bytes:
    """Penn-bracket trees of the real Brown sentences: (S (tag word) ...)."""
    lines = []
    for line in _head(DATA / "brown" / "ca01", 60).decode().splitlines():
        tokens = [t.rpartition("/") for t in line.split()]
        leaves = [f"({tag or 'X'} {word})" for word, _, tag in tokens if word and "(" not in word]
        leaves = [leaf for leaf in leaves if ")" not in leaf[1:-1]]
        if leaves:
            lines.append(f"(S {' '.join(leaves[:12])})")
    return ("\n".join(lines) + "\n").encode()


_SRL_SEED = (
    b"The DT - (A0* *\ncat NN - *) (A0*)\nsaw VBD see (V*) *\nit PRP - (A1*) *\n"
    b"purr VB purr * (V*)\n\nDogs NNS - (A0*)\nbark VBP bark (V*)\nloudly RB - (AM-MNR*)\n\n"
)


def _vocabulary_seeds() -> list[tuple[str, bytes]]:
    from rnnkit.data.text import Vocabulary

    words = _head(DATA / "brown" / "ca01", 10).decode().split()
    vocabulary = Vocabulary(sorted({w.rpartition("/")[0] for w in words}))
    return [("brown-ca01 words", json.dumps(vocabulary.to_dict(), indent=1).encode())]


def _vocabulary_call(path: Path) -> Any:
    """A vocabulary saved beside a model (``vocabulary.json``), read back as a run reads it."""
    from rnnkit.data.text import Vocabulary
    from rnnkit.serialization import read_json

    return Vocabulary.from_dict(read_json(path), path=path).tokens


def _parents_seed() -> bytes:
    return b"2 0 2\n0 1 1 3 3\n5 5 6 7 0 7 6\n3 3 0 3 3\n"


# ---------------------------------------------------------------------------------------------
# Mutators: bytes -> bytes, from one random generator

_INTERESTING_BYTES = b"\x00\xff\n\r\t |,\"'[]():#-.e/;_+"
_NUMBERS = [
    b"1" * 5000,
    b"9" * 40,
    b"1e999",
    b"-1e999",
    b"1.5e-400",
    b"nan",
    b"NaN",
    b"inf",
    b"-inf",
    b"Infinity",
    b"-0",
    b"00",
    b"007",
    b"1_0",
    b"0x10",
    b"-1",
    b"+1",
    b".5",
    b"5.",
    b"1e",
    b"--1",
    b"4294967296",
    b"18446744073709551616",
    b"-9223372036854775809",
]
_NOT_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
_DIGITS = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def _flip(r: random.Random, data: bytes, _: bytes) -> bytes:
    if not data:
        return bytes([r.randrange(256)])
    i = r.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << r.randrange(8))]) + data[i + 1 :]


def _insert(r: random.Random, data: bytes, _: bytes) -> bytes:
    i = r.randrange(len(data) + 1)
    byte = bytes([r.choice(_INTERESTING_BYTES)]) if r.random() < 0.7 else bytes([r.randrange(256)])
    return data[:i] + byte * r.choice((1, 1, 2, 3)) + data[i:]


def _delete(r: random.Random, data: bytes, _: bytes) -> bytes:
    if not data:
        return data
    i = r.randrange(len(data))
    return data[:i] + data[i + r.choice((1, 1, 2, 5, 20)) :]


def _truncate(r: random.Random, data: bytes, _: bytes) -> bytes:
    return data[: r.randrange(len(data) + 1)]


def _duplicate_line(r: random.Random, data: bytes, _: bytes) -> bytes:
    lines = _lines(data)
    i = r.randrange(len(lines))
    return b"".join(lines[: i + 1] + [lines[i]] * r.choice((1, 1, 3)) + lines[i + 1 :])


def _drop_line(r: random.Random, data: bytes, _: bytes) -> bytes:
    lines = _lines(data)
    del lines[r.randrange(len(lines))]
    return b"".join(lines)


def _swap_lines(r: random.Random, data: bytes, _: bytes) -> bytes:
    lines = _lines(data)
    i, j = r.randrange(len(lines)), r.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def _number(r: random.Random, data: bytes, _: bytes) -> bytes:
    found = list(_DIGITS.finditer(data[:20000]))
    if not found:
        return _insert(r, data, _)
    m = r.choice(found)
    return data[: m.start()] + r.choice(_NUMBERS) + data[m.end() :]


def _not_utf8(r: random.Random, data: bytes, _: bytes) -> bytes:
    i = r.randrange(len(data) + 1)
    return data[:i] + r.choice(_NOT_UTF8) + data[i:]


def _long_line(r: random.Random, data: bytes, _: bytes) -> bytes:
    i = r.randrange(len(data) + 1)
    piece = data[max(0, i - r.randrange(1, 12)) : i] or b"a"
    times = r.choices((100, 1000, 20000, 200000), (4, 4, 2, 0.5))[0]
    times = min(times, 400_000 // len(piece))  # at most 400 kB: long, and still quick to read
    return data[:i] + piece * times + data[i:]


def _nesting(r: random.Random, data: bytes, _: bytes) -> bytes:
    i = r.randrange(len(data) + 1)
    opener = r.choice((b"(", b"[", b"[MAX ", b"{", b"(S "))
    depth = r.choices((100, 1000, 10000, 100000), (4, 4, 2, 0.5))[0]
    closer = {b"(": b")", b"[": b"]", b"[MAX ": b" ]", b"{": b"}", b"(S ": b")"}[opener]
    tail = closer * depth if r.random() < 0.5 else b""
    return data[:i] + opener * depth + tail + data[i:]


def _crlf(r: random.Random, data: bytes, _: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n") if r.random() < 0.7 else data.replace(b"\n", b"\r")


def _empty(r: random.Random, data: bytes, _: bytes) -> bytes:
    return r.choice((b"", b"\n", b" ", b"\n\n\n", b"\xef\xbb\xbf"))


def _splice(r: random.Random, data: bytes, other: bytes) -> bytes:
    return data[: r.randrange(len(data) + 1)] + other[r.randrange(len(other) + 1) :]


MUTATORS: dict[str, Callable[[random.Random, bytes, bytes], bytes]] = {
    "flip": _flip,
    "insert": _insert,
    "delete": _delete,
    "truncate": _truncate,
    "duplicate_line": _duplicate_line,
    "drop_line": _drop_line,
    "swap_lines": _swap_lines,
    "number": _number,
    "not_utf8": _not_utf8,
    "long_line": _long_line,
    "nesting": _nesting,
    "crlf": _crlf,
    "empty": _empty,
    "splice": _splice,
}
_WEIGHTS = {"flip": 4, "insert": 3, "delete": 3, "number": 4, "truncate": 1, "empty": 0.3}


def mutate(seeds: list[tuple[str, bytes]], seed: int, number: int) -> tuple[str, bytes]:
    """Input ``number`` of a target: one to three mutations of one of its seeds."""
    r = random.Random(f"{seed}:{number}")
    name, data = r.choice(seeds)
    names = list(MUTATORS)
    weights = [_WEIGHTS.get(n, 1.0) for n in names]
    done = []
    for _ in range(r.choice((1, 1, 1, 2, 3))):
        which = r.choices(names, weights)[0]
        data = MUTATORS[which](r, data, r.choice(seeds)[1])
        done.append(which)
    return f"{name} {'+'.join(done)}", data


# ---------------------------------------------------------------------------------------------
# Targets


def _digest(value: Any) -> str:
    """A stable digest of a reader's result: tensors and arrays by dtype, shape and bytes."""
    import numpy as np
    import torch

    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            h.update(f"T{v.dtype}{tuple(v.shape)}".encode())
            h.update(v.contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
        elif isinstance(v, np.ndarray):
            h.update(f"A{v.dtype}{v.shape}".encode() + np.ascontiguousarray(v).tobytes())
        elif isinstance(v, dict):
            h.update(b"{")
            for k in v:
                walk(k)
                walk(v[k])
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for x in v:
                walk(x)
            h.update(b"]")
        elif hasattr(v, "__dataclass_fields__"):
            h.update(type(v).__name__.encode())
            walk({k: getattr(v, k) for k in v.__dataclass_fields__})
        else:
            h.update(repr(v).encode())

    walk(value)
    return h.hexdigest()[:16]


@dataclass
class Target:
    """A reader under test: its seeds, the call, and its documented errors."""

    name: str
    suffix: str
    seeds: Callable[[], list[tuple[str, bytes]]]
    call: Callable[[Path], Any]
    documented: tuple[type[BaseException], ...] = ()
    names_file: bool = True  # a refusal must name the file
    reads: int = 1  # readings of each input (the time limit is per reading)


def _reader_error() -> tuple[type[BaseException], ...]:
    from rnnkit.data import ReaderError

    return (ReaderError,)


_CTF_STREAMS: dict[str, list[tuple[str, int, bool]]] = {
    "solar": [("features", 1, False), ("target", 1, False)],
    "iris": [("features", 4, False), ("labels", 3, False)],
    "sparse": [("words", 50, True), ("tags", 5, True)],
}
_CTF_BLOCKS = (None, 1, 7, 64, 4096)


def _ctf_seeds() -> list[tuple[str, bytes]]:
    book = DATA / "cntk-book"
    sparse = (
        b"".join(
            f"{s} |words {w}:1 |tags {t}:1\n".encode()
            for s, w, t in [(0, 3, 1), (0, 17, 2), (0, 49, 0), (1, 5, 4), (2, 0, 3), (2, 8, 1)]
        )
        + b"3 |words 1:0.5 2:1e-3 |# a comment\n3 |words 4:2 |tags 0:1\n"
    )
    return [
        ("solar", _head(book / "solar_train.ctf", 60)),
        ("iris", _head(book / "iris_train.ctf", 30)),
        ("sparse", sparse),
    ]


def ctf_outcomes(path: Path, layout: str, skip_bad: bool, block: int | None) -> dict[str, str]:
    """What each scanner makes of ``path``: ``ok <digest>`` or ``error <message>``."""
    from rnnkit.data import CTFReader, ReaderError, Stream

    streams = {n: Stream(n, d, sparse=s) for n, d, s in _CTF_STREAMS[layout]}
    out = {}
    for scanner in ("c", "python", "plain"):
        reader = CTFReader(path, streams, skip_bad=skip_bad, scanner=scanner, block_bytes=block)
        try:
            examples = list(reader)
            out[scanner] = f"ok {_digest(examples)} {[str(e) for e in reader.errors]}"
        except ReaderError as e:
            out[scanner] = f"error {e}"
    return out


class Disagreement(Exception):
    """The CTF scanners read one input differently."""


def _ctf_call(path: Path) -> Any:
    layout = path.stem.split("-")[0]
    number = int(path.stem.split("-")[1])
    block = _CTF_BLOCKS[number % len(_CTF_BLOCKS)]
    if block is not None and block < 4096 and path.stat().st_size > 50_000:
        block = 4096  # a read a byte over a long mutated file costs seconds and finds nothing new
    skip_bad = number % 2 == 1
    outcomes = ctf_outcomes(path, layout, skip_bad, block)
    if len(set(outcomes.values())) > 1:
        shown = "; ".join(f"{k}: {v[:200]}" for k, v in outcomes.items())
        raise Disagreement(f"skip_bad={skip_bad} block_bytes={block}: {shown}")
    first = outcomes["plain"]
    if first.startswith("error "):
        from rnnkit.data import ReaderError

        raise ReaderError(first[len("error ") :])
    return first


def _model_seeds() -> list[tuple[str, bytes]]:
    folder = _model_folder()
    return [(name, (folder / name).read_bytes()) for name in ("model.safetensors", "model.json")]


_MODEL_DIR: Path | None = None


def _model_folder() -> Path:
    """A small saved model (an LSTM stack with a Dense head), made once per process."""
    global _MODEL_DIR
    if _MODEL_DIR is None:
        import torch

        import rnnkit
        from rnnkit import LSTMCell, Sequential
        from rnnkit.layers import Dense

        torch.manual_seed(0)
        model = Sequential([rnnkit.Fold(LSTMCell(3, 5)), Dense(5, 2)])
        _MODEL_DIR = Path(tempfile.mkdtemp(prefix="rnnkit-fuzz-model-"))
        rnnkit.save(model, _MODEL_DIR)
    return _MODEL_DIR


_MODEL_REFERENCE: dict[str, Any] = {}


def _model_call(path: Path) -> Any:
    """Load the model folder with one of its files replaced by ``path``'s bytes; the weights
    and the output on a fixed input must be the saved model's, bit for bit."""
    import torch

    import rnnkit

    original = _model_folder()
    if not _MODEL_REFERENCE:
        model = rnnkit.load(original)
        from rnnkit import SequenceBatch

        g = torch.Generator().manual_seed(1)
        x = SequenceBatch.from_list([torch.randn(n, 3, generator=g) for n in (4, 2)])
        _MODEL_REFERENCE.update(state=model.state_dict(), x=x, y=model(x))
    which = "model.json" if path.suffix == ".json" else "model.safetensors"
    folder = path.parent / "model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(original, folder)
    shutil.copyfile(path, folder / which)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = rnnkit.load(folder)
    reference, loaded = _MODEL_REFERENCE["state"], model.state_dict()
    same = reference.keys() == loaded.keys() and all(
        reference[k].dtype == loaded[k].dtype and torch.equal(reference[k], loaded[k])
        for k in reference
    )
    if not same:
        raise SilentChange(f"{folder / which}: loaded weights differ from the saved ones")
    with torch.no_grad():
        y = model(_MODEL_REFERENCE["x"])
    if not torch.equal(y, _MODEL_REFERENCE["y"]):
        raise SilentChange(f"{folder / which}: the loaded model computes something else")
    return "unchanged"


class SilentChange(Exception):
    """A mutated file loaded without an error but gave other tensors."""


def _checkpoint_state() -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        "model": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(4)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(4, generator=g)}}, "lr": 0.01},
        "step": 12,
        "betas": (0.9, 0.999),
        "best": float("inf"),
    }


def _checkpoint_seeds() -> list[tuple[str, bytes]]:
    from rnnkit.training.checkpoint import save_state

    return [("checkpoint", _written(lambda p: save_state(p, _checkpoint_state()), "c.safetensors"))]


def _checkpoint_call(path: Path) -> Any:
    from rnnkit.training.checkpoint import load_state

    state = load_state(path)
    if _digest(state) != _digest(_checkpoint_state()):
        raise SilentChange(f"{path}: loaded a state that differs from the saved one")
    return "unchanged"


def _targets() -> dict[str, Target]:
    from rnnkit.data import (
        read_conll,
        read_idx,
        read_tagged,
        read_text,
        read_ts,
    )
    from rnnkit.data.classify import read_labelled_ts
    from rnnkit.data.cmudict import read_cmudict, read_words
    from rnnkit.data.listops import read_listops_tsv
    from rnnkit.data.missing import read_series
    from rnnkit.data.srl import read_srl
    from rnnkit.data.synthetic import read_adding_csv, read_copy_file
    from rnnkit.data.verses import read_verse_lines
    from rnnkit.data.visits import read_visits
    from rnnkit.trees import Tree

    uea = DATA / "uea"
    series = DATA / "timeseries"
    brown = DATA / "brown"

    def conll_seed() -> list[tuple[str, bytes]]:
        rows = []
        for line in _head(brown / "ca01", 20).decode().splitlines():
            for token in line.split():
                word, _, tag = token.rpartition("/")
                rows.append(f"{word}\t{tag}")
            rows.append("")
        return [("brown-ca01 as CoNLL", ("\n".join(rows) + "\n").encode())]

    def lines_of(read: Callable[[str], Any]) -> Callable[[Path], Any]:
        """A string parser applied to each non-blank line of a file (its errors locate the
        column within the line and do not name the file: these targets set names_file=False)."""

        def call(path: Path) -> Any:
            from rnnkit.data.files import read_lines

            return [read(line) for line in read_lines(path) if line.strip()]

        return call

    reader = _reader_error()
    targets = [
        Target("ctf", ".ctf", _ctf_seeds, _ctf_call, reader, reads=3),
        Target(
            "ts",
            ".ts",
            lambda: [
                ("Chinatown", _ts_head(uea / "Chinatown" / "Chinatown_TRAIN.ts", 12)),
                ("JapaneseVowels", _ts_head(uea / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts", 4)),
                (
                    "AllGestureWiimoteX",
                    _ts_head(uea / "AllGestureWiimoteX" / "AllGestureWiimoteX_TRAIN.ts", 4),
                ),
            ],
            lambda p: read_ts(p, with_mask=True),
            reader,
        ),
        Target(
            "labelled-ts",
            ".ts",
            lambda: [("GunPoint", _ts_head(uea / "GunPoint" / "GunPoint_TRAIN.ts", 10))],
            read_labelled_ts,
            reader,
        ),
        Target("idx", ".idx", _idx_seeds, read_idx, reader),
        Target(
            "tagged",
            ".txt",
            lambda: [("brown-ca01", _head(brown / "ca01", 40))],
            read_tagged,
            reader,
        ),
        Target(
            "conll",
            ".conll",
            conll_seed,
            lambda p: read_conll(p, ("words", "tags")),
            reader,
        ),
        Target(
            "cmudict",
            ".dict",
            lambda: [("dict.txt", _head(DATA / "cmudict" / "dict.txt", 150))],
            lambda p: (read_cmudict(p), read_words(p)),
            reader,
        ),
        Target(
            "verses",
            ".txt",
            lambda: [("kjv", _head(DATA / "text" / "kjv-verses.txt", 40))],
            read_verse_lines,
            reader,
        ),
        Target(
            "text",
            ".txt",
            lambda: [("hamlet", _head(DATA / "text" / "hamlet.txt", 80))],
            read_text,
            reader,
        ),
        Target(
            "series-csv",
            ".csv",
            lambda: [
                ("co2-weekly", _head(series / "co2-weekly.csv", 80)),
                ("elecdemand", _head(series / "elecdemand-2014.csv", 80)),
            ],
            _series_call,
            reader,
        ),
        Target(
            "listops", ".tsv", lambda: [("generated", _listops_seed())], read_listops_tsv, reader
        ),
        Target("visits", ".csv", lambda: [("synthetic", _visits_seed())], read_visits, reader),
        Target("adding", ".csv", lambda: [("adding", _adding_seed())], read_adding_csv, reader),
        Target("copy", ".txt", lambda: [("copy", _copy_seed())], read_copy_file, reader),
        Target(
            "brackets",
            ".txt",
            lambda: [("brown as trees", _brackets_seed())],
            lines_of(Tree.from_brackets),
            reader,
            names_file=False,
        ),
        Target(
            "listops-trees",
            ".txt",
            lambda: [("generated", _listops_seed().replace(b"\t", b"\n"))],
            lines_of(Tree.from_listops),
            reader,
            names_file=False,
        ),
        Target(
            "parents",
            ".txt",
            lambda: [("parents", _parents_seed())],
            lines_of(Tree.from_parents),
            reader,
            names_file=False,
        ),
        Target(
            "srl",
            ".props",
            lambda: [("CoNLL-2005 style", _SRL_SEED)],
            lambda p: read_srl(p, columns=["words", "pos", "predicate"]),
            reader,
        ),
        Target(
            "airquality",
            ".csv",
            lambda: [("nyc-airquality-1973", _head(series / "nyc-airquality-1973.csv", 60))],
            lambda p: read_series("airquality", p),
            reader,
        ),
        Target(
            "panel",
            ".csv",
            lambda: [("m1-yearly", _head(series / "m1-yearly.csv", 80))],
            _panel_call,
            reader,
        ),
        Target("vocabulary", ".json", _vocabulary_seeds, _vocabulary_call, reader),
        Target("model", ".bin", _model_seeds, _model_call, (ValueError, FileNotFoundError)),
        Target("checkpoint", ".safetensors", _checkpoint_seeds, _checkpoint_call, (ValueError,)),
    ]
    return {t.name: t for t in targets}


def _panel_call(path: Path) -> Any:
    """A long-format many-series table with M1's columns."""
    from rnnkit.data.panel import load_panel

    return load_panel(path, times="integer")


def _series_call(path: Path) -> Any:
    from rnnkit.data import load_series

    header = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", "replace")
    if "WorkDay" in header or "Demand" in header:
        return load_series(path, None, ["Demand", "WorkDay", "Temperature"])
    return load_series(path, "date", ["co2"])


# ---------------------------------------------------------------------------------------------
# Workers


def _worker(conn: Connection, memory_mb: int) -> None:
    """Read inputs from ``conn`` until it closes: write each to a file, call its target."""
    import numpy  # noqa: F401  (import before the memory limit is set)
    import torch

    torch.set_num_threads(1)
    targets = _targets()
    for target in targets.values():  # build the seeds once, before the limit
        target.seeds()
    folder = Path(tempfile.mkdtemp(prefix="rnnkit-fuzz-"))
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) for line in f if line.startswith("VmSize")) * 1024
    limit = size + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        while True:
            try:
                name, number, layout, data = conn.recv()
            except EOFError:
                return
            target = targets[name]
            path = folder / f"{re.sub(r'[^A-Za-z0-9.]+', '_', layout)}-{number}{target.suffix}"
            if name == "model":
                path = folder / f"input{'.json' if layout == 'model.json' else '.safetensors'}"
            elif name == "idx" and layout.endswith(".gz"):
                path = folder / f"input-{number}.idx.gz"
            path.write_bytes(data)
            conn.send(_classify(target, path))
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _classify(target: Target, path: Path) -> tuple[str, str]:
    try:
        target.call(path)
        return "ok", ""
    except Disagreement as e:
        return "disagree", str(e)
    except SilentChange as e:
        return "silent", str(e)
    except MemoryError:
        return "memory", "MemoryError"
    except target.documented as e:
        message = str(e)
        # the model's files are read from a copy of the model folder, under their own names
        named = ("model.json", "model.safetensors") if target.name == "model" else (path.name,)
        if target.names_file and not any(n in message for n in named):
            return "unnamed", f"{type(e).__name__}: {message[:300]}"
        return "refused", ""
    except BaseException as e:  # everything else is what the fuzzing looks for
        where = traceback.extract_tb(e.__traceback__)[-1]
        return "unexpected", (
            f"{type(e).__name__}: {str(e)[:300]} at {Path(where.filename).name}:{where.lineno}"
        )


@dataclass
class Worker:
    memory_mb: int
    process: Any = None
    conn: Connection | None = None

    def start(self) -> None:
        context = mp.get_context("fork")
        parent, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, self.memory_mb), daemon=True)
        self.process.start()
        child.close()
        self.conn = parent

    def ask(self, item: tuple[str, int, str, bytes], seconds: float) -> tuple[str, str]:
        if self.process is None or not self.process.is_alive():
            self.start()
        assert self.conn is not None
        try:
            self.conn.send(item)
        except OSError:  # the worker died after its last answer: start another
            self.stop()
            self.start()
            assert self.conn is not None
            self.conn.send(item)
        if not self.conn.poll(seconds):
            self.stop()
            return "hang", f"no answer within {seconds} s"
        try:
            return self.conn.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            code = self.process.exitcode if self.process is not None else None
            self.stop()
            return "crash", f"the worker died (exit code {code})"

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
        self.process = None
        self.conn = None


# ---------------------------------------------------------------------------------------------
# The run

FAILURES = ("unexpected", "silent", "unnamed", "disagree", "hang", "crash", "memory")


@dataclass
class Tally:
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def failures(self) -> int:
        return sum(self.outcomes[k] for k in FAILURES)


def run(
    names: list[str],
    inputs: int,
    seed: int,
    seconds: float,
    memory_mb: int,
    budget: float | None,
    failures: Path | None,
    start: int = 0,
    workers: int = 1,
    progress: Callable[[str, dict[str, Tally]], None] | None = None,
) -> dict[str, Tally]:
    """Fuzz each target in turn with ``inputs`` inputs (numbers ``start`` on), shared among
    ``workers`` worker processes; ``budget`` seconds (if given) are shared among the targets.
    ``progress(name, tallies)`` is called after each target."""
    targets = _targets()
    tallies = {name: Tally() for name in names}
    if "model" in names:
        _model_folder()  # made before any worker forks, so that all of them share it
    pool = [Worker(memory_mb) for _ in range(workers)]
    lock = threading.Lock()

    errors: list[BaseException] = []

    def drive(
        worker: Worker,
        name: str,
        seeds: list[tuple[str, bytes]],
        numbers: range,
        deadline: float | None,
    ) -> None:
        try:
            feed(worker, name, seeds, numbers, deadline)
        except BaseException as error:  # the main thread raises it: no input is lost unseen
            errors.append(error)

    def feed(
        worker: Worker,
        name: str,
        seeds: list[tuple[str, bytes]],
        numbers: range,
        deadline: float | None,
    ) -> None:
        target, tally = targets[name], tallies[name]
        for number in numbers:
            if deadline is not None and time.perf_counter() > deadline:
                break
            layout, data = mutate(seeds, seed, number)
            item = (name, number, layout.split()[0], data)
            kind, detail = worker.ask(item, seconds * target.reads)
            with lock:
                tally.inputs += 1
                tally.outcomes[kind] += 1
                if kind in FAILURES:
                    shown = tally.examples.setdefault(kind, [])
                    if len(shown) < 5:
                        shown.append(f"#{number} ({layout}): {detail}")
                    if failures is not None:
                        failures.mkdir(parents=True, exist_ok=True)
                        (failures / f"{name}-{number}{target.suffix}").write_bytes(data)

    try:
        for name in names:
            t0 = time.perf_counter()
            deadline = None if budget is None else t0 + budget / len(names)
            # the seeds are made once, here: threads making them at once would race on torch's
            # global random generator (two different "saved models")
            seeds = targets[name].seeds()
            threads = [
                threading.Thread(
                    target=drive,
                    args=(w, name, seeds, range(start + k, start + inputs, workers), deadline),
                )
                for k, w in enumerate(pool)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if errors:
                raise RuntimeError(f"fuzzing {name} stopped: {errors[0]!r}") from errors[0]
            tallies[name].seconds = time.perf_counter() - t0
            if progress is not None:
                progress(name, tallies)
    finally:
        for worker in pool:
            worker.stop()
    return tallies


def _table(tallies: dict[str, Tally]) -> str:
    head = "| target | inputs | ok | refused | " + " | ".join(FAILURES) + " | s |"
    rows = [head, "|" + "---|" * (5 + len(FAILURES))]
    for name, t in tallies.items():
        cells = [name, t.inputs, t.outcomes["ok"], t.outcomes["refused"]]
        cells += [t.outcomes[k] for k in FAILURES] + [f"{t.seconds:.0f}"]
        rows.append("| " + " | ".join(f"{c:,}" if isinstance(c, int) else c for c in cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1000, help="inputs per target")
    parser.add_argument("--start", type=int, default=0, help="the first input's number")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--only", help="TARGET:N, one input, its outcome printed")
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per input")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory per worker")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--budget", type=float, help="seconds for the whole run, shared out")
    parser.add_argument("--json", type=Path, help="write the counts here")
    parser.add_argument("--failures", type=Path, help="write each failing input here")
    args = parser.parse_args(argv)
    known = list(_targets())
    if args.only:
        name, _, number = args.only.partition(":")
        tallies = run(
            [name], 1, args.seed, args.time_limit, args.memory_mb, None, None, int(number)
        )
        print(json.dumps(tallies[name].examples or dict(tallies[name].outcomes), indent=1))
        return 1 if tallies[name].failures() else 0
    names = known if args.targets == "all" else args.targets.split(",")
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"argument --targets: expected names among {known}, found {unknown}")
    t0 = time.perf_counter()

    def summary(tallies: dict[str, Tally]) -> dict[str, Any]:
        return {
            "seed": args.seed,
            "inputs_per_target": args.inputs,
            "targets": {
                n: {**dict(t.outcomes), "inputs": t.inputs, "examples": t.examples}
                | {"seconds": round(t.seconds, 1)}
                for n, t in tallies.items()
                if t.inputs
            },
        }

    def progress(name: str, tallies: dict[str, Tally]) -> None:
        t = tallies[name]
        shown = f"{name}: {t.inputs:,} inputs, {t.failures()} failures, {t.seconds:.0f} s"
        print(shown, file=sys.stderr, flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(summary(tallies), indent=1) + "\n")

    tallies = run(
        names,
        args.inputs,
        args.seed,
        args.time_limit,
        args.memory_mb,
        args.budget,
        args.failures,
        workers=args.workers,
        progress=progress,
    )
    print(_table(tallies))
    for name, t in tallies.items():
        for kind, shown in t.examples.items():
            for line in shown:
                print(f"{name} {kind} {line}", file=sys.stderr)
    total = sum(t.failures() for t in tallies.values())
    print(
        f"{sum(t.inputs for t in tallies.values()):,} inputs, {total} failures, "
        f"{time.perf_counter() - t0:.0f} s (seed {args.seed})"
    )
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
