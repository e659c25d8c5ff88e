"""``rnnkit classify``: one label per sequence: series, images read row by row, sentences.

Files: TRAIN.ts TEST.ts (UEA/UCR series, the official split); TRAIN_IMAGES TRAIN_LABELS
TEST_IMAGES TEST_LABELS (IDX, the MNIST family: 28 steps of 28 pixels); or one CSV of labelled
sentences, split 0.8/0.1/0.1 by --group-column. The format, and with it the preset (ts, idx or
text), comes from the first file's name (.ts, *ubyte*, .csv[.bz2|.gz]) unless --format says.
Model (--model): rnn, [Embedding >>] [Conv >> ...] Bidirectional(GRU or LSTM) >> Pool(mean,
max) >> Dropout >> Dense; or fcn, resnet, inception (rnnkit.layers.timeconv: convolutions over
each series alone, global average pooling; series longer than --max-steps averaged in windows
first) >> Dropout >> Dense; or rocket (the .ts default: rnnkit.layers.rocket, 10,000 random
kernels and a ridge classifier fitted in closed form, no epochs). Cross entropy (optionally
label-smoothed), Adam; --train-steps fixes the series steps training processes (the
convolutional models); an --ensemble
averages the class probabilities of models of seeds SEED, SEED+1, ... that share --epochs.
Baselines on the same test part: the majority class; 1-nearest neighbour (series, images);
bag of words (sentences).
`rnnkit classify cv TRAIN.ts --folds K` scores settings by stratified K-fold cross-validation
on a training file alone.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnkit.recipes.harness import Metric, Recipe, RecipeData, adam
from rnnkit.recipes.options import TrainSettings, check_config, option

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from torch import nn

__all__ = ["RECIPE", "ClassifyConfig", "ClassifyRecipe", "config_for", "cross_validate"]

FILES = {
    "ts": "TRAIN.ts TEST.ts",
    "idx": "TRAIN_IMAGES TRAIN_LABELS TEST_IMAGES TEST_LABELS",
    "text": "one CSV file",
}


def guess_format(names: Sequence[Path | str]) -> str | None:
    """``ts``, ``idx`` or ``text`` from the first name that tells (None: none does)."""
    for name in (Path(n).name.lower() for n in names):
        if name.endswith(".ts"):
            return "ts"
        if "ubyte" in name or name.endswith((".idx", ".idx.gz")):
            return "idx"
        if name.endswith((".csv", ".csv.bz2", ".csv.gz")):
            return "text"
    return None


def _ints(name: str, values: Sequence[Any]) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected integers >= 1, found {list(values)!r}") from None
    if out == (0,):
        return ()
    if any(v < 1 for v in out):
        raise ValueError(f"{name}: expected integers >= 1, found {list(out)!r}")
    return out


def _folds(text: str) -> int:
    import argparse

    if not text.strip().isdigit() or int(text) < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, found {text!r}")
    return int(text)


MODELS = ("rnn", "fcn", "resnet", "inception", "rocket")

_TRAIN = TrainSettings(
    epochs=150, minibatch_size=16, learning_rate=0.003, clip_norm=5.0, patience=30
)


@dataclass(frozen=True)
class ClassifyConfig:
    """One classification run (see the module docstring)."""

    files: tuple[Path, ...] = option(
        help="the data files (see above)", positional=True, metavar="FILE"
    )
    format: str = option(
        "auto",
        "the files' format (auto: from the first name)",
        choices=("auto", "ts", "idx", "text"),
    )
    model: str = option(
        "rnn",
        "the network: rnn ([Conv >>] Bidirectional RNN >> Pool), fcn, resnet or inception "
        "(convolutions, global average pooling), or rocket (random kernels and a ridge "
        "classifier, fitted in closed form; docs/classify.md)",
        choices=MODELS,
    )
    cell: str = option("gru", "rnn: the recurrent cell", choices=("gru", "lstm"))
    hidden_size: int = option(64, "hidden units of each direction", low=1)
    layers: int = option(1, "bidirectional recurrent layers", low=1)
    embedding_dim: int = option(100, "text: word vector size", low=1)
    dropout: float = option(
        0.2, "dropout before the output layer (text: after the embedding too)", low=0.0, high=0.95
    )
    conv_channels: tuple[int, ...] = option(
        (), "output channels of convolution blocks before the recurrent layers (0: none)"
    )
    conv_kernels: tuple[int, ...] = option((8, 5, 3), "kernel size of each convolution block")
    max_steps: int = option(
        512,
        "fcn, resnet, inception: series are averaged in windows of ceil(longest training "
        "length / this) steps first",
        low=1,
    )
    inception_kernel: int = option(
        40, "inception: the longest kernel (the others are a half and a quarter)", low=4
    )
    rocket_kernels: int = option(10_000, "rocket: random kernels (two features each)", low=1)
    train_steps: int = option(
        0,
        "series steps (after averaging) that training processes in all, spread over --epochs "
        "(0: each epoch is one sweep of the training series)",
        low=0,
    )
    label_smoothing: float = option(
        0.0, "target mass spread evenly over the classes", low=0.0, high=0.95
    )
    l2: float = option(0.0, "Adam's L2 penalty, added to the gradient (0: none)", low=0.0)
    validation: float = option(
        0.2,
        "ts: stratified fraction of train held out for early stopping (0: none)",
        low=0.0,
        high=0.95,
    )
    series_norm: bool = option(False, "ts: z-normalise each series on its own first")
    dtw: bool = option(
        False, "ts: also the 1-NN DTW baseline (full window; minutes on long series)"
    )
    validation_images: int = option(5000, "idx: the last training images held out", low=1)
    text_column: str = option("text", "text: the column of the sentences")
    label_column: str = option("category", "text: the column of the labels")
    group_column: str = option("movie_name", "text: rows of one group stay in one part")
    drop_labels: tuple[str, ...] = option(("plot",), "text: labels whose rows are skipped")
    folds: int = option(
        0, "cross-validation folds of the training file (0: the test file)", low=0, cli=False
    )
    fold: int = option(1, "the fold tested when folds > 0", low=1, cli=False)
    train: TrainSettings = option(_TRAIN, "training settings")

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(Path(f) for f in self.files))
        for name in ("conv_channels", "conv_kernels"):
            object.__setattr__(self, name, _ints(name, getattr(self, name)))
        check_config(self)
        if len(self.conv_kernels) < len(self.conv_channels):
            raise ValueError(
                f"conv_kernels: expected a kernel size for each of the {len(self.conv_channels)} "
                f"conv_channels, found {list(self.conv_kernels)}"
            )
        fmt = self.data_format
        if fmt is None:
            raise ValueError(
                f"format: cannot tell the format of {str(self.files[0])!r} from its name; "
                "give --format ts, idx or text"
            )
        wanted = 1 if fmt == "text" or self.folds else len(FILES[fmt].split())
        if len(self.files) != wanted:
            what = "TRAIN.ts (cross-validation)" if self.folds else FILES[fmt]
            raise ValueError(
                f"files: --format {fmt} expects {what}, found {len(self.files)} file(s)"
            )
        if self.folds and (fmt != "ts" or not self.fold <= self.folds):
            raise ValueError(f"folds: cross-validation is for .ts files, fold 1..{self.folds}")

    @property
    def data_format(self) -> str | None:
        """``ts``, ``idx`` or ``text`` (None: the names do not tell)."""
        return self.format if self.format != "auto" else guess_format(self.files[:1])


_TS = dict(
    conv_channels=(64, 64, 64), validation=0.0, schedule="cosine", label_smoothing=0.1, threads=1
)
# The ts default, chosen by cross-validation on the training files (docs/classify.md).
_DEFAULT = dict(model="rocket")
_FCN = dict(model="fcn", train_steps=1_000_000)
_IDX = dict(hidden_size=128, dropout=0.1, minibatch_size=128, learning_rate=0.002, patience=3)
_TEXT = dict(
    cell="lstm", dropout=0.5, patience=3, minibatch_size=32, learning_rate=0.001, threads=1
)


class ClassifyRecipe(Recipe[ClassifyConfig]):
    name = "classify"
    summary = "classify sequences: UEA .ts, Fashion-MNIST by rows, sentences"
    description = __doc__ or ""
    config = ClassifyConfig
    presets = {
        "ts": {**_TS, **_DEFAULT},
        "ts-published": {**_TS, **_DEFAULT, "ensemble": 5},
        "ts-fcn": {**_TS, **_FCN, "epochs": 20},
        "ts-rnn": {**_TS, "epochs": 20},
        "ts-rnn-published": {**_TS, "epochs": 500, "ensemble": 5},
        "idx": {**_IDX, "epochs": 4},
        "idx-published": {**_IDX, "epochs": 15},
        "text": {**_TEXT, "epochs": 12, "l2": 1e-5},
    }
    preset_help = {
        "ts": "ROCKET: 10,000 random kernels and a ridge classifier (chosen by "
        "cross-validation on the training files; docs/classify.md)",
        "ts-published": "the same, an ensemble of 5 (kernels of seeds SEED .. SEED+4)",
        "ts-fcn": "FCN, 1,000,000 series steps in 20 epochs",
        "ts-rnn": "Conv x 3 >> GRU, whole training file, 20 epochs",
        "ts-rnn-published": "the same, an ensemble of 5 models of 100 epochs",
        "idx": "GRU 128, 4 epochs",
        "idx-published": "GRU 128, 15 epochs (docs/results.md)",
        "text": "LSTM 64 over word vectors, up to 12 epochs (docs/results.md)",
    }
    target_stream = "label"
    metric = Metric("error rate", percent=True)
    validation_optional = True
    actions = {"cv": "stratified K-fold cross-validation on a .ts training file alone"}
    training_actions = frozenset({"cv"})

    def default_preset(self, argv: Sequence[str]) -> str | None:
        for flag, value in itertools.pairwise([*argv, ""]):
            if flag.startswith("--format="):
                flag, value = "--format", flag.split("=", 1)[1]
            if flag == "--format" and value in ("ts", "idx", "text"):
                return value
        return guess_format([a for a in argv if not a.startswith("-")])

    def load_data(self, config: ClassifyConfig) -> RecipeData:
        from rnnkit.data import classify as d

        fmt, files, seed = config.data_format, config.files, config.train.seed
        if config.folds:
            data = d.ts_fold_data(
                files[0],
                config.fold,
                config.folds,
                seed=seed,
                validation=config.validation,
                series_norm=config.series_norm,
            )
        elif fmt == "ts":
            data = d.ts_data(
                *files, validation=config.validation, seed=seed, series_norm=config.series_norm
            )
        elif fmt == "idx":
            data = d.idx_data(*files, validation=config.validation_images)
        else:
            data = d.text_data(
                files[0],
                text_column=config.text_column,
                label_column=config.label_column,
                group_column=config.group_column,
                drop_labels=config.drop_labels,
                seed=seed,
            )
        return RecipeData(
            data.train,
            data.validation,
            data.test,
            inputs=list(files),
            ids=data.test_ids,
            info={"format": fmt, **data.info()},
            description=f"{data.source}: {len(data.class_names)} classes; split: {data.split}",
            extra={"data": data},
        )

    def build_model(self, config: ClassifyConfig, data: RecipeData) -> nn.Module:
        from rnnkit.cells import GRUCell, LSTMCell
        from rnnkit.layers import Dense, Dropout, Embedding, Sequential
        from rnnkit.layers.conv import Conv, Pool
        from rnnkit.recurrence import Bidirectional

        if config.model == "rocket":
            return self._rocket_model(config, data)
        if config.model != "rnn":
            return self._conv_model(config, data)
        cell = LSTMCell if config.cell == "lstm" else GRUCell
        h, size = config.hidden_size, int(data.info["input_size"])
        layers: list[nn.Module] = []
        if "vocabulary" in data.info:
            layers += [Embedding(size, config.embedding_dim), Dropout(config.dropout)]
            size = config.embedding_dim
        for channels, kernel in zip(config.conv_channels, config.conv_kernels, strict=False):
            layers.append(Conv(size, channels, kernel))
            size = channels
        for _ in range(config.layers):
            layers.append(Bidirectional(cell(size, h), cell(size, h)))
            size = 2 * h
        layers += [Pool(), Dropout(config.dropout), Dense(2 * size, len(data.info["classes"]))]
        return Sequential(layers)

    def _conv_model(self, config: ClassifyConfig, data: RecipeData) -> nn.Module:
        from rnnkit.layers import Dense, Dropout, Sequential
        from rnnkit.layers.timeconv import FCN, InceptionTime, ResNet

        if "vocabulary" in data.info:
            raise ValueError(f"model: {config.model} is for series and images, not sentences")
        size, factor = int(data.info["input_size"]), downsample_factor(config, data.train)
        body: FCN | ResNet | InceptionTime
        if config.model == "fcn":
            body = FCN(size, downsample=factor)
        elif config.model == "resnet":
            body = ResNet(size, downsample=factor)
        else:
            k = config.inception_kernel
            body = InceptionTime(size, kernels=(k, k // 2, k // 4), downsample=factor)
        head = Dense(body.out_features, len(data.info["classes"]))
        return Sequential([body, Dropout(config.dropout), head])

    def _rocket_model(self, config: ClassifyConfig, data: RecipeData) -> nn.Module:
        import torch

        from rnnkit.layers import Dense
        from rnnkit.layers.rocket import Rocket

        if "vocabulary" in data.info:
            raise ValueError("model: rocket is for series and images, not sentences")
        longest = max(int(e["features"].shape[0]) for e in data.train)
        rocket = Rocket(
            int(data.info["input_size"]),
            longest,
            config.rocket_kernels,
            seed=int(torch.randint(2**31 - 1, ()).item()),
        )
        return rocket >> Dense(rocket.out_features, len(data.info["classes"]))

    def fit_directly(self, config: ClassifyConfig, model: nn.Module, data: RecipeData) -> bool:
        """rocket: the ridge classifier on the training series' features (the penalty by
        leave-one-out error), written into the Dense layer; other models train."""
        if config.model != "rocket":
            return False
        import torch

        from rnnkit.layers import Dense, Sequential
        from rnnkit.layers.rocket import Rocket, fit_ridge, rocket_features
        from rnnkit.sequences import SequenceBatch

        assert isinstance(model, Sequential)
        rocket, head = model[0], model[1]
        assert isinstance(rocket, Rocket) and isinstance(head, Dense)
        series = [e["features"] for e in data.train]
        batches = (SequenceBatch.from_list(series[i : i + 64]) for i in range(0, len(series), 64))
        labels = torch.tensor([int(e["label"]) for e in data.train])
        ridge = fit_ridge(rocket_features(rocket, batches), labels, head.out_features)
        with torch.no_grad():
            head.linear.weight.copy_(ridge.weight)
            head.linear.bias.copy_(ridge.bias)
        return True

    def source(
        self, config: ClassifyConfig, examples: Sequence[Any], *, training: bool, seed: int = 0
    ) -> Any:
        """The harness's minibatches, except for training with ``train_steps`` or a
        convolutional model: samples counted by the label stream (one a series, as the
        trainer counts ``epoch_size``, so that the schedule spans the epochs) and, for the
        convolutional models, minibatches of series of similar lengths (buckets of 4
        minibatches), so that little padding is computed."""
        from rnnkit.data.minibatch import MinibatchSource

        if not training or (config.model == "rnn" and not config.train_steps):
            return super().source(config, examples, training=training, seed=seed)
        return MinibatchSource.for_fit(
            examples,
            config.train.minibatch_size,
            training=True,
            unit=self.unit,
            size_stream=self.target_stream,
            seed=seed,
            stack_single=self.stack_single,
            bucket=4 if config.model != "rnn" else None,
        )

    def epoch_size(self, config: ClassifyConfig, data: RecipeData) -> int | None:
        """With ``train_steps``: the series per epoch that make ``train_steps`` steps (after
        the model's averaging) over ``epochs`` epochs; else None (one sweep)."""
        if not config.train_steps:
            return None
        factor = downsample_factor(config, data.train) if config.model != "rnn" else 1
        steps = sum(-(-int(e["features"].shape[0]) // factor) for e in data.train)
        per_epoch = config.train_steps / config.train.member_epochs
        return max(1, round(per_epoch * len(data.train) / steps))

    def criterion(self, config: ClassifyConfig, data: RecipeData) -> Any:
        from rnnkit.training import (
            Criterion,
            classification_error,
            cross_entropy_with_softmax,
            smoothed_cross_entropy,
        )

        eps = config.label_smoothing
        loss = smoothed_cross_entropy(eps) if eps > 0 else cross_entropy_with_softmax
        return Criterion(loss, classification_error)

    def optimizer(self, config: ClassifyConfig, model: nn.Module) -> Any:
        """With ``l2`` > 0, Adam with that L2 penalty (the published text figures); else the
        harness's Adam or AdamW."""
        if config.l2 == 0:
            return super().optimizer(config, model)
        return adam(model, config.train.learning_rate, config.l2)

    def combine(self, models: list[nn.Module]) -> nn.Module:
        from rnnkit.layers.conv import Ensemble

        return models[0] if len(models) == 1 else Ensemble(models)

    def score(
        self, config: ClassifyConfig, data: RecipeData, predictions: list[Any]
    ) -> dict[str, float]:
        right = [
            int(p.argmax()) == int(e["label"]) for p, e in zip(predictions, data.test, strict=True)
        ]
        return {"test_accuracy": sum(right) / len(right)}

    def baselines(self, config: ClassifyConfig, data: RecipeData) -> dict[str, dict[str, float]]:
        from rnnkit.data import classify as d

        out = {"majority": {"test_accuracy": d.majority_accuracy(data.train, data.test)}}
        if "vocabulary" in data.info:
            accuracy = d.bag_of_words_accuracy(data.extra["data"], seed=config.train.seed)
            out["bag of words"] = {"test_accuracy": accuracy}
        else:
            accuracy = d.nearest_neighbour_accuracy([*data.train, *data.validation], data.test)
            out["1-NN Euclidean"] = {"test_accuracy": accuracy}
            if config.dtw and config.data_format == "ts":
                from rnnkit.data.nearest import nearest_neighbour_dtw_accuracy

                dtw = nearest_neighbour_dtw_accuracy([*data.train, *data.validation], data.test)
                out["1-NN DTW"] = {"test_accuracy": dtw}
        return out

    def notes(
        self, config: ClassifyConfig, data: RecipeData, figures: Mapping[str, Any]
    ) -> list[str]:
        return [
            f"Data: {data.description}.",
            "1-NN Euclidean: 1-nearest neighbour, training and validation examples as references "
            "(series resampled to one length); bag of words: logistic regression on word "
            "presence, weight decay chosen on the validation part.",
        ]

    def prediction_rows(
        self, info: Mapping[str, Any], examples: Sequence[Any], predictions: Sequence[Any]
    ) -> list[dict[str, Any]]:
        classes = info["classes"]
        rows = []
        for example, scores in zip(examples, predictions, strict=True):
            p = scores.softmax(-1)
            row: dict[str, Any] = (
                {"target": classes[int(example["label"])]} if "label" in example else {}
            )
            row["prediction"] = classes[int(p.argmax())]
            row["probability"] = float(p.max())
            rows.append(row)
        return rows

    def read_inputs(
        self, info: Mapping[str, Any], config: ClassifyConfig, paths: Sequence[Path]
    ) -> tuple[list[str], list[Any]]:
        from rnnkit.data.classify import read_new

        return read_new(
            info, paths, text_column=config.text_column, label_column=config.label_column
        )

    def add_action_arguments(self, action: str, parser: Any) -> None:
        parser.add_argument(
            "--folds", type=_folds, default=5, metavar="K", help="folds (default: 5)"
        )

    def run_action(self, action: str, args: Any) -> int:
        from rnnkit.recipes.options import config_from_args

        args.fold = 1
        config = config_from_args(ClassifyConfig, args)
        result = cross_validate(config, args.folds, args.run_dir, progress=not args.quiet)
        import json

        print(json.dumps(result))
        return 0


def cross_validate(
    config: ClassifyConfig, folds: int, run_dir: str | Path, *, progress: bool = False
) -> dict[str, Any]:
    """The test accuracy of ``config`` on each of ``folds`` stratified folds of its ``.ts``
    training file (``config.files[0]``; folds seed ``config.train.seed``), trained on the
    other folds, each through :func:`~rnnkit.recipes.harness.run_recipe` (run directories
    ``run_dir/fold-K``). Only the training file is read."""
    from rnnkit.recipes.harness import run_recipe

    scores = []
    for k in range(1, folds + 1):
        fold = dataclasses.replace(config, files=config.files[:1], folds=folds, fold=k)
        result = run_recipe(
            RECIPE,
            fold,
            Path(run_dir) / f"fold-{k}",
            progress=progress,
            log=print if progress else (lambda _: None),
        )
        scores.append(result.figures["test_accuracy"])
    mean = sum(scores) / len(scores)
    return {
        "data": config.files[0].name,
        "cv_folds": [round(s, 4) for s in scores],
        "cv_accuracy": round(mean, 4),
    }


def downsample_factor(config: ClassifyConfig, train: Sequence[Mapping[str, Any]]) -> int:
    """The averaging window of the convolutional models: ``ceil(longest / max_steps)`` over the
    training series' lengths (1 when none is longer than ``max_steps``)."""
    longest = max(int(e["features"].shape[0]) for e in train)
    return max(1, -(-longest // config.max_steps))


def config_for(
    files: Sequence[Path | str], preset: str | None = None, **changes: Any
) -> ClassifyConfig:
    """The config of ``rnnkit classify FILES [--preset P]`` with ``changes`` (keys of the config
    or of its training settings), for the Python API."""
    names = [str(f) for f in files]
    preset = preset or RECIPE.default_preset(names)
    values = {**RECIPE.presets.get(preset or "", {}), **changes}
    train_keys = {f.name for f in dataclasses.fields(TrainSettings)}
    train = dataclasses.replace(_TRAIN, **{k: v for k, v in values.items() if k in train_keys})
    rest = {k: v for k, v in values.items() if k not in train_keys}
    return ClassifyConfig(files=tuple(Path(f) for f in files), train=train, **rest)


RECIPE = ClassifyRecipe()
