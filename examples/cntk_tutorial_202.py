"""CNTK Tutorial 202, "Language Understanding with Recurrent Networks" (slot tagging), run as
written on a labelled CTF file built from the Brown corpus, since ATIS is not available here.

The data: ``../shared/data/brown`` read as ``word/tag`` sentences; each becomes an ATIS-like
sequence ``BOS w_1 ... w_n EOS`` with sparse one-hot word ids (``S0``, the 942 most frequent
lower-cased training words and ``<unk>``: 943 ids, ATIS's vocabulary size), the document's
genre as the "intent" on the first line (``S1``) and each word's part of speech (its Brown
tag without the ``-tl``/``-hl``/... suffixes; ``O`` for BOS and EOS) as the slot label
(``S2``). Documents alternate between the parts (every fifth one is test), so test
sentences come from documents the model never saw. The files go to a temporary folder.

Changed from the tutorial (CNTK 2.x, ``Tutorials/CNTK_202_Language_Understanding.ipynb``):
the import lines (``import cntk as C`` -> ``import rnnkit.cntk as C``); the download of
ATIS replaced by the Brown files above (``vocab_size``, ``num_labels``, ``num_intents`` set
from them); the notebook's aside on ``C.placeholder`` left out; the example sentence
(ATIS's ``BOS flights from new york to seattle EOS``) replaced by a Brown-like one; and
``--quick`` (300 training sentences, ``epoch_size`` 2000, 2 epochs) for the tests. The last
line printed is one JSON line: the test token error and the most-frequent-tag baseline.

    python examples/cntk_tutorial_202.py [--quick]
"""

# ruff: noqa: B905, F401, I001, RUF059, SIM115 (the tutorial's code, as it is)

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import math
import numpy as np

import rnnkit.cntk as C
from rnnkit.data.text import read_tagged

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="300 sentences, 2 short epochs")
parser.add_argument(
    "--brown", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "brown"
)
args = parser.parse_args()
C.cntk_py.set_fixed_random_seed(1)  # fix a random seed for CNTK components


# ----- the data: Brown sentences as an ATIS-like CTF file (in place of the download) -----
def brown_ctf(brown, folder, train_sentences, test_sentences, vocab_size=943):
    genres = dict(
        line.split() for line in (brown / "cats.txt").read_text().splitlines() if line.strip()
    )
    files = sorted(genres)
    parts = {"train": [], "test": []}
    for k, name in enumerate(files):
        part = "test" if k % 5 == 4 else "train"
        wanted = train_sentences if part == "train" else test_sentences
        if len(parts[part]) >= wanted:
            continue
        for s in read_tagged(brown / name):
            tags = [t.split("-")[0] or t for t in s["tags"]]
            parts[part].append(([w.lower() for w in s["words"]], tags, genres[name]))
    parts = {p: v[: train_sentences if p == "train" else test_sentences] for p, v in parts.items()}
    counts = collections.Counter(w for words, _, _ in parts["train"] for w in words)
    words = ["BOS", "EOS", "<unk>", *(w for w, _ in counts.most_common(vocab_size - 3))]
    slots = ["O", *sorted({t for _, tags, _ in parts["train"] + parts["test"] for t in tags})]
    intents = sorted(set(genres.values()))
    index = {w: i for i, w in enumerate(words)}
    for part, sentences in parts.items():
        with open(folder / f"brown.{part}.ctf", "w") as f:
            for sid, (ws, tags, genre) in enumerate(sentences):
                tokens = ["BOS", *ws, "EOS"]
                labels = ["O", *tags, "O"]
                for t, (w, tag) in enumerate(zip(tokens, labels, strict=True)):
                    i = index.get(w, index["<unk>"])
                    intent = f" |S1 {intents.index(genre)}:1 |# {genre}" if t == 0 else ""
                    f.write(f"{sid} |S0 {i}:1 |# {w}{intent} |S2 {slots.index(tag)}:1 |# {tag}\n")
    (folder / "query.wl").write_text("\n".join(words) + "\n")
    (folder / "slots.wl").write_text("\n".join(slots) + "\n")
    return len(words), len(slots), len(intents), parts


folder = Path(tempfile.mkdtemp(prefix="cntk202-"))
vocab_size, num_labels, num_intents, parts = brown_ctf(
    args.brown, folder, 300 if args.quick else 1600, 100 if args.quick else 500
)
data = {
    "train": {"file": str(folder / "brown.train.ctf")},
    "test": {"file": str(folder / "brown.test.ctf")},
    "query": {"file": str(folder / "query.wl")},
    "slots": {"file": str(folder / "slots.wl")},
}

# ----- the tutorial -----
# number of words in vocab, slot labels, and intent labels: set from the files above

# model dimensions
input_dim = vocab_size
label_dim = num_labels
emb_dim = 150
hidden_dim = 300

# Create the containers for input feature (x) and the label (y)
x = C.sequence.input_variable(vocab_size)
y = C.sequence.input_variable(num_labels)


def create_model():
    with C.layers.default_options(initial_state=0.1):
        return C.layers.Sequential(
            [
                C.layers.Embedding(emb_dim, name="embed"),
                C.layers.Recurrence(C.layers.LSTM(hidden_dim), go_backwards=False),
                C.layers.Dense(num_labels, name="classify"),
            ]
        )


# peek
z = create_model()
print(z.embed.E.shape)
print(z.classify.b.value)

# Pass an input and check the dimension
z = create_model()
print(z(x).embed.E.shape)


def create_reader(path, is_training):
    return C.io.MinibatchSource(
        C.io.CTFDeserializer(
            path,
            C.io.StreamDefs(
                query=C.io.StreamDef(field="S0", shape=vocab_size, is_sparse=True),
                intent_unused=C.io.StreamDef(field="S1", shape=num_intents, is_sparse=True),
                slot_labels=C.io.StreamDef(field="S2", shape=num_labels, is_sparse=True),
            ),
        ),
        randomize=is_training,
        max_sweeps=C.io.INFINITELY_REPEAT if is_training else 1,
    )


# peek
reader = create_reader(data["train"]["file"], is_training=True)
print(reader.streams.keys())


def create_criterion_function_preferred(model, labels):
    ce = C.cross_entropy_with_softmax(model, labels)
    errs = C.classification_error(model, labels)
    return ce, errs  # (model, labels) -> (loss, error metric)


def train(reader, model_func, max_epochs=10):

    # Instantiate the model function; x is the input (feature) variable
    model = model_func(x)

    # Instantiate the loss and error function
    loss, label_error = create_criterion_function_preferred(model, y)

    # training config
    epoch_size = 18000 if not args.quick else 2000  # 18000 samples is half the dataset size
    minibatch_size = 70

    # LR schedule over epochs
    # In CNTK, an epoch is how often we get out of the minibatch loop to
    # do other stuff (e.g. checkpointing, adjust learning rate, etc.)
    lr_per_sample = [3e-4] * 4 + [1.5e-4]
    lr_per_minibatch = [lr * minibatch_size for lr in lr_per_sample]
    lr_schedule = C.learning_parameter_schedule(lr_per_minibatch, epoch_size=epoch_size)

    # Momentum schedule
    momentums = C.momentum_schedule(0.9048374180359595, minibatch_size=minibatch_size)

    # We use a the Adam optimizer which is known to work well on this dataset
    # Feel free to try other optimizers from
    # https://www.cntk.ai/pythondocs/cntk.learner.html#module-cntk.learner
    learner = C.adam(
        parameters=model.parameters,
        lr=lr_schedule,
        momentum=momentums,
        gradient_clipping_threshold_per_sample=15,
        gradient_clipping_with_truncation=True,
    )

    # Setup the progress updater
    progress_printer = C.logging.ProgressPrinter(tag="Training", num_epochs=max_epochs)

    # Uncomment below for more detailed logging
    # progress_printer = ProgressPrinter(freq=100, first=10, tag='Training', num_epochs=max_epochs)

    # Instantiate the trainer
    trainer = C.Trainer(model, (loss, label_error), learner, progress_printer)

    # process minibatches and perform model training
    C.logging.log_number_of_parameters(model)

    t = 0
    for epoch in range(max_epochs):  # loop over epochs
        epoch_end = (epoch + 1) * epoch_size
        while t < epoch_end:  # loop over minibatches on the epoch
            data = reader.next_minibatch(
                minibatch_size,
                input_map={  # fetch minibatch
                    x: reader.streams.query,
                    y: reader.streams.slot_labels,
                },
            )
            trainer.train_minibatch(data)  # update model with it
            t += data[y].num_samples  # samples so far
        trainer.summarize_training_progress()


def do_train():
    global z
    z = create_model()
    reader = create_reader(data["train"]["file"], is_training=True)
    train(reader, z, max_epochs=2 if args.quick else 10)


do_train()


def evaluate(reader, model_func):

    # Instantiate the model function; x is the input (feature) variable
    model = model_func(x)

    # Create the loss and error functions
    loss, label_error = create_criterion_function_preferred(model, y)

    # process minibatches and perform evaluation
    progress_printer = C.logging.ProgressPrinter(tag="Evaluation", num_epochs=0)

    while True:
        minibatch_size = 500
        data = reader.next_minibatch(
            minibatch_size,
            input_map={  # fetch minibatch
                x: reader.streams.query,
                y: reader.streams.slot_labels,
            },
        )
        if not data:  # until we hit the end
            break

        evaluator = C.eval.Evaluator(loss, progress_printer)
        evaluator.test_minibatch(data)

    evaluator.summarize_test_progress()


def do_test():
    reader = create_reader(data["test"]["file"], is_training=False)
    evaluate(reader, z)


do_test()
print(z.classify.b.value)

# load dictionaries
query_wl = [line.rstrip("\n") for line in open(data["query"]["file"])]
slots_wl = [line.rstrip("\n") for line in open(data["slots"]["file"])]
query_dict = {query_wl[i]: i for i in range(len(query_wl))}
slots_dict = {slots_wl[i]: i for i in range(len(slots_wl))}

# let's run a sequence through
seq = "BOS the jury said it was an election EOS"
w = [query_dict[w] for w in seq.split()]  # convert to word indices
print(w)
onehot = np.zeros([len(w), len(query_dict)], np.float32)
for t in range(len(w)):
    onehot[t, w[t]] = 1

pred = z(x).eval({x: [onehot]})[0]
print(pred.shape)
best = np.argmax(pred, axis=1)
print(best)
print(list(zip(seq.split(), [slots_wl[s] for s in best])))

# ----- what the run reached: token error on the test words, against guessing each word's
# most frequent training tag, the word seen as the model sees it (one of the 942 words, or
# <unk>), and against always guessing the most frequent tag -----
test_reader = create_reader(data["test"]["file"], is_training=False)
errors = tokens = 0
while True:
    mb = test_reader.next_minibatch(
        500, input_map={x: test_reader.streams.query, y: test_reader.streams.slot_labels}
    )
    if not mb:
        break
    for p, labels in zip(z(x).eval({x: mb[x]}), mb[y].asarray()):
        errors += int((p[1:-1].argmax(1) != labels[1:-1].argmax(1)).sum())
        tokens += len(labels) - 2


def seen(word):
    return word if word in query_dict else "<unk>"


by_word = collections.defaultdict(collections.Counter)
for ws, tags, _ in parts["train"]:
    for word, tag in zip(ws, tags):
        by_word[seen(word)][tag] += 1
guess = {word: c.most_common(1)[0][0] for word, c in by_word.items()}
test_pairs = [(seen(word), tag) for ws, tags, _ in parts["test"] for word, tag in zip(ws, tags)]
base_errors = sum(guess[word] != tag for word, tag in test_pairs)
overall = collections.Counter(t for _, tags, _ in parts["train"] for t in tags).most_common(1)[0][0]
print(
    json.dumps(
        {
            "test_token_error": round(errors / tokens, 4),
            "most_frequent_tag_error": round(base_errors / tokens, 4),
            "always_most_frequent_tag_error": round(
                sum(t != overall for _, t in test_pairs) / tokens, 4
            ),
            "test_tokens": tokens,
            "vocab_size": vocab_size,
            "num_labels": num_labels,
        }
    )
)
