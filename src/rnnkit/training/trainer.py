"""`Trainer`: fit a model on a MinibatchSource, evaluate it, predict with it, resume it exactly.

The loss of a step is the criterion's loss sum divided by the number of label samples of all
processes (see :mod:`rnnkit.training.criteria`), so the learning rate applies to the mean
gradient per sample, and two processes with half a batch each take the same step as one
process with the whole batch. Checkpoints (:class:`~rnnkit.training.Checkpoint`) hold the
model, optimizer, scheduler, random states, counters, callbacks and the source's position; a
run killed at any moment and resumed from its last checkpoint ends with the same weights, bit
for bit on the CPU, as a run that was never interrupted.

>>> import torch
>>> from rnnkit import Dense, Fold, LSTMCell
>>> from rnnkit.data.minibatch import MinibatchSource
>>> from rnnkit.training import Criterion, Trainer, squared_error
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> examples = [{"features": torch.full((n, 1), 0.1 * n), "labels": torch.tensor([[0.1 * n]])}
...             for n in range(2, 10)]
>>> model = Fold(LSTMCell(1, 4)) >> Dense(4, 1)
>>> trainer = Trainer(model, Criterion(squared_error), torch.optim.Adam(model.parameters(), 0.05))
>>> summary = trainer.fit(MinibatchSource(examples, 12, seed=1), epochs=12)
>>> len(summary.history), summary.samples, summary.stop_reason  # 8 labels per epoch
(12, 96, 'epochs')
>>> summary.history[-1].metrics["loss"] < 0.2 * summary.history[0].metrics["loss"]
True
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rnnkit.data.minibatch import Minibatch, MinibatchSource
from rnnkit.sequences import SequenceBatch
from rnnkit.serialization import CorruptFileError
from rnnkit.training.callbacks import Callback, EpochInfo, StepInfo, Validation
from rnnkit.training.checkpoint import Checkpoint, load_state
from rnnkit.training.criteria import count_samples
from rnnkit.training.distributed import Processes, join, launched_device, sum_over_processes

__all__ = [
    "FitSummary",
    "ModelInputError",
    "NonFiniteError",
    "Trainer",
    "TrainerState",
    "split_examples",
]

CriterionFn = Callable[[Any, Any], tuple[Tensor, Tensor]]


class NonFiniteError(FloatingPointError):
    """The loss or the gradient of a step was NaN or infinite (``on_nonfinite='stop'``)."""


class ModelInputError(ValueError):
    """The first minibatch does not fit the model or the criterion."""


@dataclass
class TrainerState:
    """The counters a checkpoint saves; counts are label samples of all processes."""

    step: int = 0
    epoch: int = 0  # completed epochs
    samples: int = 0
    epoch_steps: int = 0
    epoch_samples: int = 0  # consumed in this epoch, skipped steps included (for epoch_size)
    epoch_trained: int = 0  # samples of the steps that were not skipped
    epoch_loss: float = 0.0
    epoch_metric: float = 0.0
    epoch_seconds: float = 0.0
    skipped_steps: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class FitSummary:
    """What ``fit`` did: the epochs it finished, the totals since training began, and why it
    stopped (``'epochs'``, ``'max_samples'``, ``'the source is exhausted'``, or a callback's
    reason such as early stopping)."""

    history: list[EpochInfo]
    steps: int
    samples: int
    skipped_steps: tuple[int, ...]
    stop_reason: str


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, SequenceBatch):
        return value if value.data.device == device else value.to(device)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, SequenceBatch):
        lengths = value.lengths
        return (
            f"SequenceBatch of {value.batch_size} sequences (lengths {int(lengths.min())}.."
            f"{int(lengths.max())}) of steps {tuple(value.feature_shape)} {value.data.dtype}"
        )
    if isinstance(value, Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype}"
    return type(value).__name__


def _expected_input(model: nn.Module) -> str:
    for name, module in model.named_modules():
        for attribute in ("input_size", "in_features", "num_embeddings"):
            size = getattr(module, attribute, None)
            if isinstance(size, int):
                where = f"'{name}'" if name else "the model"
                return (
                    f"its first layer, {where} ({type(module).__name__}), takes {attribute}={size}"
                )
    return "no layer of the model states its input size"


def _stream_names(mb: Any) -> list[str]:
    return list(mb.streams) if isinstance(mb, Minibatch) else list(mb)


def _nonfinite_streams(mb: Minibatch) -> str:
    """Which streams of ``mb`` hold NaN or infinite values, and in which examples."""
    found = []
    for name, value in mb.streams.items():
        rows = value.to_list() if isinstance(value, SequenceBatch) else value
        if not isinstance(value, (Tensor, SequenceBatch)) or not rows[0].is_floating_point():
            continue
        bad = [(i, int((~torch.isfinite(r)).sum())) for i, r in enumerate(rows)]
        bad = [(mb.indices[i], n) for i, n in bad if n]
        if bad:
            found.append(
                f"stream {name!r} holds {sum(n for _, n in bad)} non-finite values, in the "
                f"examples at source positions {[i for i, _ in bad]}"
            )
    if not found:
        return (
            "every stream of the minibatch is finite, so the model produced it (diverging "
            "weights? try a lower learning rate or clip_norm)"
        )
    return "; ".join(found)


def split_examples(output: Any, count: int) -> list[Any]:
    """One entry per example of a batched model output: the rows of a ``[B, ...]`` tensor,
    the sequences of a SequenceBatch, element-wise for a tuple or list of those."""
    if isinstance(output, SequenceBatch):
        return [t.cpu() for t in output.to_list()]
    if isinstance(output, Tensor):
        if output.dim() == 0 or output.shape[0] != count:
            raise ValueError(
                f"model output: expected one row per example ({count}), found shape "
                f"{tuple(output.shape)}"
            )
        return list(output.detach().cpu().unbind(0))
    if isinstance(output, (tuple, list)):
        parts = [split_examples(o, count) for o in output]
        return [tuple(p[i] for p in parts) for i in range(count)]
    raise TypeError(
        f"model output: expected a Tensor, a SequenceBatch or a tuple of them, found "
        f"{type(output).__name__}"
    )


def _copy_source(source: MinibatchSource, **changes: Any) -> MinibatchSource:
    """A new source over the same examples with some settings changed."""
    settings: dict[str, Any] = {
        "unit": source.unit,
        "size_stream": source.size_stream,
        "randomize": source.randomize,
        "seed": source.seed,
        "max_sweeps": source.max_sweeps,
        "max_samples": source.max_samples,
        "partition": (source.rank, source.world_size),
        "bucket": source.bucket,
        "stack_single": source.stack_single,
        "pin_memory": source.pin_memory,
        # how samples are counted carries over; CNTK's cursor options (crossing sweeps, exact
        # limits, consecutive seeds) are the training source's own and are not copied
        "count_per_stream": source.count_per_stream,
    }
    settings.update(changes)
    return MinibatchSource(source.examples, source.minibatch_size, **settings)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_positive(name: str, value: object, number: bool = False) -> None:
    """``value`` is None or a positive int (or any positive real number when ``number``)."""
    kinds = (int, float) if number else (int,)
    if value is None:
        return
    if not isinstance(value, kinds) or isinstance(value, bool) or not value > 0:
        kind = "number" if number else "integer"
        raise ValueError(f"{name}: expected a positive {kind} or None, found {value!r}")


class Trainer:
    """Train ``model`` with ``criterion`` and ``optimizer``; see the module docstring.

    Args:
        model: called as ``model(*inputs)`` with the minibatch's ``input_streams``.
        criterion: ``(output, target) -> (loss_sum, metric_sum)``, sums over the samples
            (:class:`~rnnkit.training.Criterion` builds one).
        optimizer: a ``torch.optim`` optimizer over the model's parameters.
        input_streams: the streams passed to the model, in order.
        target_stream: the stream passed to the criterion as the target.
        lr_scheduler: a ``torch.optim.lr_scheduler`` scheduler, stepped after every update
            (write per-epoch schedules in steps, e.g. ``StepLR(step_size=steps_per_epoch)``).
        clip_norm: rescale the gradient to at most this total 2-norm.
        clip_value: clamp every gradient entry to ``[-clip_value, clip_value]`` (before
            ``clip_norm`` when both are given).
        on_nonfinite: when the loss or the gradient norm is NaN or infinite, ``'stop'`` raises
            :class:`NonFiniteError` naming the step and the examples with non-finite values,
            before the update (checkpoints are untouched); ``'skip'`` drops the update, counts
            it (:attr:`TrainerState.skipped_steps`, the progress printer) and goes on.
        callbacks: :class:`~rnnkit.training.callbacks.Callback` objects, called in order.
        checkpoint: where and how often to write checkpoints (every epoch end and every
            ``every_steps`` steps).
        device: where the model and batches go; ``None`` keeps the model where it is (under
            torchrun on a CUDA machine: ``cuda:LOCAL_RANK``).

    Several processes: under ``torchrun`` the trainer joins the process group (gloo on the
    CPU, nccl on CUDA), wraps the model in ``DistributedDataParallel``, gives each process its
    share of the source (``partition=(rank, world_size)``; each rank's minibatch has the
    source's ``minibatch_size``, so the global batch is ``world_size`` times larger), sums
    losses and counts over processes, and lets only rank 0 print and write.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: CriterionFn,
        optimizer: torch.optim.Optimizer,
        *,
        input_streams: Sequence[str] = ("features",),
        target_stream: str = "labels",
        lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        on_nonfinite: Literal["stop", "skip"] = "stop",
        callbacks: Iterable[Callback] = (),
        checkpoint: Checkpoint | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, found {type(model).__name__}")
        if not callable(criterion):
            raise TypeError(f"criterion: expected a callable, found {type(criterion).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer: expected a torch.optim.Optimizer, found {type(optimizer).__name__}"
            )
        if isinstance(input_streams, str) or not all(isinstance(s, str) for s in input_streams):
            raise TypeError(
                f"input_streams: expected a tuple of stream names such as ('features',), found "
                f"{input_streams!r}"
            )
        _check_positive("clip_norm", clip_norm, number=True)
        _check_positive("clip_value", clip_value, number=True)
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite: expected 'stop' or 'skip', found {on_nonfinite!r}")
        self.callbacks = tuple(callbacks)
        for i, cb in enumerate(self.callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks[{i}]: expected a rnnkit.training.Callback, found "
                    f"{type(cb).__name__}"
                )
        if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"checkpoint: expected a Checkpoint, found {type(checkpoint).__name__}")
        parameter = next(model.parameters(), None)
        here = parameter.device if parameter is not None else torch.device("cpu")
        self.device = torch.device(device) if device is not None else launched_device() or here
        self.model = model.to(self.device)
        self._parameters = list(model.parameters())  # walked once, not at every step
        self.criterion, self.optimizer, self.lr_scheduler = criterion, optimizer, lr_scheduler
        self.input_streams, self.target_stream = tuple(input_streams), target_stream
        self.clip_norm, self.clip_value, self.on_nonfinite = clip_norm, clip_value, on_nonfinite
        self.checkpoint = checkpoint
        self.processes: Processes = join(self.device)
        self._net: nn.Module = model
        if self.processes.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._net = DistributedDataParallel(model, device_ids=ids)
        self.state = TrainerState()
        self.fit_epochs: int | None = None
        self.epoch_target: int | None = None
        self.failed = False
        self.stop_reason: str | None = None
        self._active: list[Callback] = list(self.callbacks)
        self._hooks: dict[str, list[Callable[..., None]]] = {}  # hook -> the calls _emit makes
        self._pending: tuple[Any, Any, Path] | None = None
        self._sweeps: weakref.WeakKeyDictionary[
            MinibatchSource, tuple[MinibatchSource, dict[str, Any]]
        ] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------ the training step
    def _step(self, mb: Minibatch, first: bool) -> StepInfo:
        """One update: forward, loss per sample over all processes, backward, clip, step."""
        inputs, target = self._streams(mb)
        if not self._net.training:
            self._net.train()
        try:
            loss_sum, metric_sum = self.criterion(self._net(*inputs), target)
        except Exception as error:
            if first:
                raise self._input_error(inputs, target, error) from error
            raise
        samples, loss, metric = self._sums(count_samples(target), loss_sum, metric_sum)
        (loss_sum * (self.processes.world_size / samples)).backward()
        grads = [g for p in self._parameters if (g := p.grad) is not None]
        if not grads:
            total_norm = torch.zeros(())
        elif len({(g.device, g.dtype) for g in grads}) == 1:
            # What nn.utils.get_total_norm computes, without its wrappers (this runs every step).
            total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        else:
            total_norm = nn.utils.get_total_norm(grads)
        grad_norm = float(total_norm)
        lr = float(self.optimizer.param_groups[0]["lr"])
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if finite:
            if self.clip_value is not None:
                nn.utils.clip_grad_value_(self._parameters, self.clip_value)
            if self.clip_norm is not None and self.clip_value is None:
                # the norm is measured already: scale by it rather than measure again
                nn.utils.clip_grads_with_norm_(self._parameters, self.clip_norm, total_norm)
            elif self.clip_norm is not None:
                nn.utils.clip_grad_norm_(self._parameters, self.clip_norm)
            self.optimizer.step()
            if self.lr_scheduler is not None:
                self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not finite:
            self._non_finite(mb, loss, grad_norm)  # raises unless on_nonfinite == 'skip'
        return self._count(samples, loss, metric, grad_norm, lr, skipped=not finite)

    def _count(
        self, samples: int, loss: float, metric: float, grad_norm: float, lr: float, skipped: bool
    ) -> StepInfo:
        s = self.state
        s.step += 1
        s.epoch_steps += 1
        s.samples += samples
        s.epoch_samples += samples
        if skipped:
            s.skipped_steps.append(s.step)
        else:
            s.epoch_trained += samples
            s.epoch_loss += loss
            s.epoch_metric += metric
        return StepInfo(
            s.step, s.epoch + 1, s.epoch_steps, samples, loss, metric, grad_norm, lr, skipped
        )

    def _sums(self, count: int, loss_sum: Tensor, metric_sum: Any) -> tuple[int, float, float]:
        if self.processes.world_size == 1:  # nothing to sum over: no tensors to build
            if count <= 0:
                raise ValueError(
                    f"target_stream {self.target_stream!r}: the minibatch has no samples"
                )
            return count, float(loss_sum.detach()), float(metric_sum)
        values = torch.stack(
            [
                torch.tensor(float(count), dtype=torch.float64, device=self.device),
                loss_sum.detach().to(self.device, torch.float64),
                torch.as_tensor(metric_sum, dtype=torch.float64).to(self.device),
            ]
        )
        n, loss, metric = sum_over_processes(values, self.processes).tolist()
        if n <= 0:
            raise ValueError(f"target_stream {self.target_stream!r}: the minibatch has no samples")
        return round(n), loss, metric

    def _non_finite(self, mb: Minibatch, loss: float, grad_norm: float) -> None:
        s = self.state
        where = (
            f"step {s.step + 1} (epoch {s.epoch + 1}, minibatch {s.epoch_steps + 1} of the epoch)"
        )
        what = (
            f"the loss is {loss}"
            if not math.isfinite(loss)
            else f"the gradient norm is {grad_norm} (the loss, {loss}, is finite)"
        )
        if self.on_nonfinite == "skip":
            return
        last = self.checkpoint.latest() if self.checkpoint is not None else None
        raise NonFiniteError(
            f"{where}: {what}; {_nonfinite_streams(mb)}. Training stopped before this update"
            + (f"; the last checkpoint, {last}, is intact" if last is not None else "")
        )

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        source: MinibatchSource,
        *,
        epochs: int | None = None,
        max_samples: int | None = None,
        epoch_size: int | None = None,
        validation: MinibatchSource | None = None,
        resume: bool = False,
    ) -> FitSummary:
        """Train until ``epochs`` epochs or ``max_samples`` label samples (totals since training
        began, so a resumed run stops where the uninterrupted one would), or the source ends.

        Args:
            source: the training data.
            epochs: total epochs.
            max_samples: total label samples (all processes).
            epoch_size: label samples per epoch (minibatches are whole: an epoch ends with the
                minibatch that reaches it); ``None`` makes an epoch one sweep of the source.
            validation: evaluated at each epoch end (``val_loss``, ``val_metric``).
            resume: continue from the newest checkpoint of ``checkpoint``, if there is one.

        A partial epoch at the end (``max_samples`` reached, or the source exhausted) is
        closed like a full one: callbacks see it, and it is checkpointed.
        """
        for name, value in (("epochs", epochs), ("max_samples", max_samples)):
            _check_positive(name, value)
        _check_positive("epoch_size", epoch_size)
        if not isinstance(source, MinibatchSource):
            raise TypeError(f"source: expected a MinibatchSource, found {type(source).__name__}")
        limits = (epochs, max_samples, source.max_sweeps, source.max_samples)
        if all(limit is None for limit in limits):
            raise ValueError(
                "fit: expected epochs or max_samples (or a source with max_sweeps or "
                "max_samples); with none of them training would never end"
            )
        if self.checkpoint is not None and self.processes.is_main:
            self.checkpoint.remove_temporaries()  # left by a killed run's unfinished writes
        if resume:
            if self.checkpoint is None:
                raise ValueError("resume=True: expected a trainer with checkpoint=..., found none")
            latest = self.checkpoint.latest()
            if latest is not None:
                self.restore(latest)
        self._check_streams(source.stream_names, "the source")
        source = self._partitioned(source)
        if self._pending is not None:
            rng, position, restored = self._pending
            self._pending = None
            if position is not None:
                with _fitting(restored, "source", "the source given to fit"):
                    source.load_state_dict(position)
            _set_rng_state(rng)
        if validation is not None:
            self._check_evaluation_source(validation)
        self._active = [Validation(validation, "val")] if validation is not None else []
        self._active += self.callbacks
        self._hooks = {}
        self.fit_epochs = epochs
        self.epoch_target = epoch_size or self._sweep_samples(source)
        self.failed, self.stop_reason = False, None
        history: list[EpochInfo] = []
        self._emit("on_fit_start")
        clock = time.perf_counter() - self.state.epoch_seconds
        first, epoch_open, reason = True, False, ""
        try:
            while True:
                limit = self._limit(epochs, max_samples) or self.stop_reason
                if limit is not None:
                    reason = limit
                    break
                if not epoch_open:
                    self._emit("on_epoch_start", self.state.epoch + 1)
                    epoch_open = True
                mb = source.next_minibatch()
                if mb is None:
                    reason = "the source is exhausted"
                    break
                self._emit("on_step_end", self._step(mb, first))
                first = False
                if (
                    mb.end_of_sweep
                    if epoch_size is None
                    else self.state.epoch_samples >= epoch_size
                ):
                    history.append(self._end_epoch(source, time.perf_counter() - clock))
                    clock, epoch_open = time.perf_counter(), False
                elif self._step_checkpoint_due():
                    self._save(source, time.perf_counter() - clock)
            if self.state.epoch_steps > 0:
                history.append(self._end_epoch(source, time.perf_counter() - clock))
        except BaseException:
            self.failed = True
            raise
        finally:
            self._emit("on_fit_end")
        s = self.state
        return FitSummary(history, s.step, s.samples, tuple(s.skipped_steps), reason)

    def stop(self, reason: str) -> None:
        """Ask ``fit`` to stop after the current step or epoch (callbacks call this)."""
        self.stop_reason = reason

    def _limit(self, epochs: int | None, max_samples: int | None) -> str | None:
        if epochs is not None and self.state.epoch >= epochs:
            return "epochs"
        if max_samples is not None and self.state.samples >= max_samples:
            return "max_samples"
        return None

    def _end_epoch(self, source: MinibatchSource, seconds: float) -> EpochInfo:
        s = self.state
        first_step = s.step - s.epoch_steps
        trained = max(s.epoch_trained, 1)
        info = EpochInfo(
            epoch=s.epoch + 1,
            num_epochs=self.fit_epochs,
            steps=s.epoch_steps,
            samples=s.epoch_trained,
            loss_sum=s.epoch_loss,
            metric_sum=s.epoch_metric,
            seconds=seconds,
            skipped=tuple(k for k in s.skipped_steps if k > first_step),
            metrics={"loss": s.epoch_loss / trained, "metric": s.epoch_metric / trained},
        )
        self.state = TrainerState(
            step=s.step, epoch=s.epoch + 1, samples=s.samples, skipped_steps=s.skipped_steps
        )
        self._emit("on_epoch_end", info)
        if self.checkpoint is not None:
            self._save(source, 0.0)
        return info

    def _step_checkpoint_due(self) -> bool:
        every = self.checkpoint.every_steps if self.checkpoint is not None else None
        return every is not None and self.state.step % every == 0

    def _emit(self, hook: str, *args: Any) -> None:
        hooks = self._hooks.get(hook)
        if hooks is None:  # the callbacks of this process that override the hook, found once
            hooks = self._hooks[hook] = [
                getattr(cb, hook)
                for cb in self._active
                if (self.processes.is_main or not cb.rank_zero_only)
                and (
                    hook in getattr(cb, "__dict__", ())
                    or getattr(type(cb), hook) is not getattr(Callback, hook)
                )
            ]
        for call in hooks:
            call(self, *args)

    # ------------------------------------------------------------------ data
    def _streams(self, mb: Minibatch | Mapping[str, Any]) -> tuple[tuple[Any, ...], Any]:
        names = self._check_streams(_stream_names(mb), "the minibatch")
        values = [_to(mb[n], self.device) for n in names]
        return tuple(values[:-1]), values[-1]

    def _check_streams(self, present: list[str], where: str) -> tuple[str, ...]:
        names = (*self.input_streams, self.target_stream)
        missing = [n for n in names if n not in present]
        if missing:
            raise ValueError(
                f"input_streams/target_stream: {where} has no stream {missing}; its streams "
                f"are {present}"
            )
        return names

    def _input_error(self, inputs: tuple[Any, ...], target: Any, error: Exception) -> Exception:
        received = ", ".join(
            f"{name!r}: {_describe(x)}" for name, x in zip(self.input_streams, inputs, strict=True)
        )
        return ModelInputError(
            f"the first minibatch does not fit the model: it gives the model {received} and the "
            f"criterion the target {self.target_stream!r}: {_describe(target)}; "
            f"{_expected_input(self.model)}. {type(error).__name__}: {error}"
        )

    def _partitioned(self, source: MinibatchSource) -> MinibatchSource:
        rank, world = self.processes.rank, self.processes.world_size
        if (source.rank, source.world_size) == (rank, world):
            return source
        if source.world_size != 1 or world == 1:
            raise ValueError(
                f"source: partitioned as rank {source.rank} of {source.world_size}, but this "
                f"process is rank {rank} of {world}"
            )
        return _copy_source(source, partition=(rank, world))

    def _sweep_samples(self, source: MinibatchSource) -> int:
        """Label samples in one sweep of ``source`` (all processes)."""
        values = (example[self.target_stream] for example in source.examples)
        return sum(
            int(v.shape[0]) if isinstance(v, Tensor) else int(getattr(v, "num_samples", 1))
            for v in values
        )

    def _sweep_of(self, source: MinibatchSource) -> MinibatchSource:
        """This process's share of one sweep of ``source``, in order, from its start."""
        if source not in self._sweeps:
            sweep = _copy_source(
                source,
                randomize=False,
                max_sweeps=1,
                max_samples=None,
                partition=(self.processes.rank, self.processes.world_size),
            )
            self._sweeps[source] = (sweep, sweep.state_dict())
        sweep, start = self._sweeps[source]
        sweep.load_state_dict(start)
        return sweep

    def _check_evaluation_source(self, source: MinibatchSource) -> None:
        mb = self._sweep_of(source).next_minibatch()
        if mb is None:
            return
        inputs, target = self._streams(mb)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                self.criterion(self.model(*inputs), target)
        except Exception as error:
            raise self._input_error(inputs, target, error) from error
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------ use
    def evaluate(self, source: MinibatchSource | Iterable[Any]) -> dict[str, float]:
        """Average loss and metric per label sample over one sweep of ``source``.

        A MinibatchSource is read in order, one whole sweep, without moving its position
        (under several processes each reads its share and the sums are combined); any other
        iterable of minibatches is read to its end. Returns ``loss``, ``metric``,
        ``samples`` and ``minibatches``.
        """
        combine = isinstance(source, MinibatchSource)
        batches = self._sweep_of(source) if isinstance(source, MinibatchSource) else source
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for mb in batches:
                    if getattr(mb, "repeated", False):
                        continue
                    inputs, target = self._streams(mb)
                    loss, metric = self.criterion(self.model(*inputs), target)
                    sums[0] += count_samples(target)
                    sums[1] += loss.to(torch.float64)
                    sums[2] += torch.as_tensor(metric, dtype=torch.float64).to(self.device)
                    sums[3] += 1
        finally:
            self.model.train(was_training)
        if combine:
            sums = sum_over_processes(sums, self.processes)
        n, loss_sum, metric_sum, k = sums.tolist()
        if n == 0:
            raise ValueError("source: expected at least one minibatch to evaluate, found none")
        return {
            "loss": loss_sum / n,
            "metric": metric_sum / n,
            "samples": int(n),
            "minibatches": int(k),
        }

    def predict(self, *inputs: Any) -> Any:
        """``model(*inputs)`` in eval mode without gradients; a minibatch (or a dict of
        streams) as the only argument gives its ``input_streams``.

        A :class:`MinibatchSource` as the only argument is read once, in batches, and the
        result is one output per example, in the source's example order (a ``[B, ...]``
        output gives its rows, a SequenceBatch its sequences ``[T_i, ...]``, a tuple a tuple
        of those).
        """
        if len(inputs) == 1 and isinstance(inputs[0], MinibatchSource):
            return self._predict_source(inputs[0])
        if len(inputs) == 1 and isinstance(inputs[0], (Minibatch, Mapping)):
            inputs = tuple(inputs[0][name] for name in self.input_streams)
        moved = tuple(_to(x, self.device) for x in inputs)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(*moved)
        finally:
            self.model.train(was_training)

    def _predict_source(self, source: MinibatchSource) -> list[Any]:
        outputs: list[Any] = [None] * source.num_examples
        for mb in self._sweep_of(source):
            if mb.repeated:
                continue
            rows = split_examples(self.predict(mb), len(mb.indices))
            for index, row in zip(mb.indices, rows, strict=True):
                outputs[index] = row
        missing = [i for i, o in enumerate(outputs) if o is None]
        if missing:
            raise ValueError(
                f"source: expected every example in one sweep, found {len(missing)} missing "
                f"(first {missing[0]}); predict from a source with partition=(0, 1)"
            )
        return outputs

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, source: MinibatchSource | None = None) -> dict[str, Any]:
        """Everything a checkpoint holds (``source``'s position when given)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "trainer": asdict(self.state),
            "rng": _rng_state(),
            "source": None if source is None else source.state_dict(),
            "callbacks": {
                f"{i}.{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(self.callbacks)
            },
        }

    def _save(self, source: MinibatchSource, seconds: float) -> None:
        self.state.epoch_seconds = seconds
        if self.processes.is_main and self.checkpoint is not None:
            self.checkpoint.save(self.state_dict(source), self.state.step)

    def restore(self, path: str | Path) -> Path:
        """Load a checkpoint file (or the newest in a directory); the next ``fit`` continues it.

        Model, optimizer, scheduler, counters and callback states are loaded now; the random
        states and the source position when ``fit`` starts. Callback states are matched by
        position and class; a callback without a saved state keeps its own.

        Raises:
            CorruptFileError: (a ``ValueError``) naming the file and what is wrong: a damaged
                file (see :func:`~rnnkit.training.checkpoint.load_state`), a part missing, the
                model's keys or shapes differing (each key named), an optimizer, scheduler,
                callback or random state this trainer cannot take, or trainer counters with
                unknown or missing keys (a checkpoint of another rnnkit version: refused, since
                resuming without them would not be exact). What is checked before anything is
                loaded: the parts, the counters, the random states and the model's keys and
                shapes; an optimizer, scheduler or callback state that fails while loading
                leaves the trainer partly restored.
        """
        path = Path(path)
        if path.is_dir():
            latest = Checkpoint(path).latest()
            if latest is None:
                raise FileNotFoundError(f"{path}: no checkpoint-*.safetensors in this directory")
            path = latest
        state = load_state(path)
        missing = [key for key in _CHECKPOINT_PARTS if key not in state]
        if missing:
            raise CorruptFileError(
                f"not a Trainer checkpoint: missing the parts {missing} (found {sorted(state)})",
                path=path,
            )
        counters = _trainer_state(state["trainer"], path)
        _check_rng_state(state["rng"], path)
        _check_model_state(self.model, state["model"], path)
        saved = state["callbacks"]
        if not isinstance(saved, dict):
            raise CorruptFileError(
                f"the callback states: expected a dictionary, found {type(saved).__name__}",
                path=path,
            )
        if state["source"] is not None and not isinstance(state["source"], dict):
            raise CorruptFileError(
                "the source position: expected a dictionary or None, found "
                f"{type(state['source']).__name__}",
                path=path,
            )
        with _fitting(path, "model", "this trainer's model"):
            self.model.load_state_dict(state["model"])
        with _fitting(path, "optimizer", "this trainer's optimizer"):
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None:
            if state["lr_scheduler"] is None:
                raise CorruptFileError(
                    "the checkpoint has no lr_scheduler state to restore", path=path
                )
            with _fitting(path, "lr_scheduler", "this trainer's lr_scheduler"):
                self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.state = counters
        for i, cb in enumerate(self.callbacks):
            key = f"{i}.{type(cb).__name__}"
            if key in saved:
                with _fitting(path, f"callbacks/{key}", f"callback {i} ({type(cb).__name__})"):
                    cb.load_state_dict(saved[key])
        self._pending = (state["rng"], state["source"], path)
        return path


_CHECKPOINT_PARTS = ("model", "optimizer", "lr_scheduler", "trainer", "rng", "source", "callbacks")


@contextlib.contextmanager
def _fitting(path: Path, part: str, what: str) -> Iterator[None]:
    """Errors of loading the checkpoint's ``part`` into ``what`` name the file and the part."""
    try:
        yield
    except CorruptFileError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise CorruptFileError(
            f"the state {part!r} does not fit {what}: {type(error).__name__}: {error}", path=path
        ) from error


def _trainer_state(stored: Any, path: Path) -> TrainerState:
    """The counters of a checkpoint: exactly the fields of TrainerState, of their types."""
    if not isinstance(stored, dict):
        raise CorruptFileError(
            f"the trainer counters: expected a dictionary, found {type(stored).__name__}",
            path=path,
        )
    kinds = {f.name: str(f.type) for f in fields(TrainerState)}
    unknown, missing = sorted(set(stored) - set(kinds)), sorted(set(kinds) - set(stored))
    if unknown or missing:
        raise CorruptFileError(
            f"the trainer counters do not match this rnnkit's TrainerState: unknown keys "
            f"{unknown}, missing keys {missing} (a checkpoint of another rnnkit version?); "
            "refused, since resuming without them would not continue the run exactly",
            path=path,
        )
    for name, value in stored.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kinds[name] == "int":
            good = number and isinstance(value, int) and value >= 0
        elif kinds[name] == "float":
            good = number
        else:  # skipped_steps
            good = isinstance(value, list) and all(
                isinstance(k, int) and not isinstance(k, bool) for k in value
            )
        if not good:
            raise CorruptFileError(
                f"the trainer counter {name!r}: expected {kinds[name]}, found {value!r}",
                path=path,
            )
    return TrainerState(**stored)


def _check_rng_state(stored: Any, path: Path) -> None:
    """The random states load (into fresh generators, leaving the global ones alone)."""
    if not isinstance(stored, dict) or not {"torch", "numpy", "python"} <= set(stored):
        found = sorted(stored) if isinstance(stored, dict) else type(stored).__name__
        raise CorruptFileError(
            f"the random states: expected 'torch', 'numpy' and 'python', found {found}",
            path=path,
        )
    checks: list[tuple[str, Callable[[Any], Any]]] = [
        ("torch", lambda s: torch.Generator().set_state(s)),
        ("numpy", lambda s: np.random.RandomState().set_state(s)),
        ("python", lambda s: random.Random().setstate(s)),
    ]
    for name, check in checks:
        with _fitting(path, f"rng/{name}", f"a {name} random generator"):
            check(stored[name])
    cuda = stored.get("cuda", [])
    if not (isinstance(cuda, list) and all(isinstance(t, Tensor) for t in cuda)):
        raise CorruptFileError(
            f"the random state 'rng/cuda': expected a list of tensors, found {cuda!r}", path=path
        )


def _check_model_state(model: nn.Module, stored: Any, path: Path) -> None:
    """The checkpoint's weights have exactly the model's keys and shapes."""
    if not isinstance(stored, dict) or not all(isinstance(v, Tensor) for v in stored.values()):
        raise CorruptFileError(
            f"the model weights: expected a dictionary of tensors, found {type(stored).__name__}",
            path=path,
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [
        f"{k}: {list(stored[k].shape)} in the file, {list(v.shape)} in the model"
        for k, v in expected.items()
        if k in stored and stored[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise CorruptFileError(
            f"the model weights do not fit this trainer's model: missing keys {missing}, "
            f"unexpected keys {unexpected}, shapes differing {shapes}",
            path=path,
        )
