"""The CNTK book's solar tutorial, run as written: only its import lines are changed
(``cntk`` -> ``rnnkit.cntk``), plus what the book leaves out of the listing: the learner
line, the data files (the book's ``solar_train.ctf`` / ``solar_val.ctf``) and its
validation step, ``model(test_samples) * NORMALIZE`` on a list of sequences.

    python examples/cntk_tutorial_solar.py            # the book's 10 epochs of 12,434 samples
    python examples/cntk_tutorial_solar.py --quick    # 2 epochs of 700 samples (the tests)
    python examples/cntk_tutorial_solar.py --data DIR # the folder with the two CTF files

It prints CNTK's progress table, the test summary and, last, one JSON line: the validation
MSE in normalised units (the book reports 0.0086) and in the units of ``solar.total``.
"""

# ruff: noqa: E402, F401, I001 (the tutorial's imports, as it writes them)

import argparse
import json
from pathlib import Path

import numpy as np

from rnnkit.cntk.learners import adam, learning_parameter_schedule, momentum_schedule
from rnnkit.cntk.losses import squared_error
from rnnkit.cntk.io import (
    CTFDeserializer,
    MinibatchSource,
    INFINITELY_REPEAT,
    StreamDefs,
    StreamDef,
)
from rnnkit.cntk.logging import ProgressPrinter
from rnnkit.cntk.train import TestConfig

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="2 epochs of 700 samples")
parser.add_argument(
    "--data",
    type=Path,
    default=Path(__file__).resolve().parents[2] / "shared" / "data" / "cntk-book",
)
args = parser.parse_args()

BATCH_SIZE = 14 * 10
EPOCH_SIZE = 12434
EPOCHS = 10
if args.quick:
    EPOCH_SIZE, EPOCHS = 700, 2
from rnnkit.cntk import sequence, default_options, input_variable
from rnnkit.cntk.layers import Recurrence, LSTM, Dropout, Dense, Sequential, Fold

features = sequence.input_variable(1)
with default_options(initial_state=0.1):
    model = Sequential([Fold(LSTM(15)), Dense(1)])(features)
target = input_variable(1, dynamic_axes=model.dynamic_axes)
from rnnkit.cntk import Function


@Function
def criterion_factory(z, t):
    loss = squared_error(z, t)
    metric = squared_error(z, t)
    return loss, metric


loss = criterion_factory(model, target)
learner = adam(
    loss.parameters, lr=learning_parameter_schedule(0.005), momentum=momentum_schedule(0.9)
)


def create_datasource(filename, sweeps=INFINITELY_REPEAT):
    target_stream = StreamDef(field="target", shape=1, is_sparse=False)
    features_stream = StreamDef(field="features", shape=1, is_sparse=False)
    deserializer = CTFDeserializer(
        filename, StreamDefs(features=features_stream, target=target_stream)
    )
    datasource = MinibatchSource(deserializer, randomize=True, max_sweeps=sweeps)
    return datasource


train_datasource = create_datasource(str(args.data / "solar_train.ctf"))
test_datasource = create_datasource(str(args.data / "solar_val.ctf"), sweeps=1)
progress_writer = ProgressPrinter(0)
test_config = TestConfig(test_datasource)
input_map = {features: train_datasource.streams.features, target: train_datasource.streams.target}
history = loss.train(
    train_datasource,
    epoch_size=EPOCH_SIZE,
    parameter_learners=[learner],
    model_inputs_to_streams=input_map,
    callbacks=[progress_writer, test_config],
    minibatch_size=BATCH_SIZE,
    max_epochs=EPOCHS,
)

# validation, as the book does it: the model on a list of sequences, in solar.total's units
NORMALIZE = 19100
test_samples, test_targets = [], []
for line in (args.data / "solar_val.ctf").read_text().splitlines():
    parts = line.split("|")
    if "target" in line:  # a sequence's first line holds its target
        test_samples.append([])
        test_targets.append(float(parts[1].split()[1]))
    test_samples[-1].append([float(parts[-1].split()[1])])
test_samples = [np.array(s, dtype=np.float32) for s in test_samples]
predicted = model(test_samples) * NORMALIZE
expected = np.array(test_targets, dtype=np.float32)[:, None] * NORMALIZE
mse = float(np.mean(((predicted - expected) / NORMALIZE) ** 2))
print(
    json.dumps(
        {
            "val_mse": round(mse, 5),
            "val_rmse_solar_total": round(float(np.sqrt(np.mean((predicted - expected) ** 2))), 1),
            "test_summary_metric": round(history.test_summary.metric, 5),
            "epochs": len(history.epoch_summaries),
            "last_epoch_loss": round(history.epoch_summaries[-1].loss, 5),
            "sequences": len(test_samples),
        }
    )
)
