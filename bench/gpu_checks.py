"""The checks of ``bench/gpu.sh`` that ``bench/run.py`` has no case for (issue 18, item 5).

* ``bf16``: mixed precision. Each layer runs forward and backward in float32 and under
  ``torch.autocast(dtype=torch.bfloat16)`` from the same weights and data; the outputs and the
  weight gradients are compared with a stated tolerance (bf16 keeps 8 bits of mantissa, a
  relative step of 2**-8 = 0.4 %; over T steps of a recurrence the error grows, so the bound is
  ``BF16_OUTPUT_ATOL`` on outputs, which lie in (-1, 1), and ``BF16_GRAD_RTOL`` on the
  relative norm of each gradient's difference).
* ``pinned``: ``MinibatchSource(pin_memory=True)`` against ``pin_memory=False``: seconds per
  minibatch delivered and moved to the device with ``non_blocking=True``, and the moved data
  compared bitwise.
* ``trees``: ``Recursive(ChildSumTreeLSTMCell)`` batched one height at a time against a
  recursion over each tree, one node at a time, on the device; forward and backward, gradients
  compared.

    python bench/gpu_checks.py checks --device cuda --out bench/results/gpu-checks.json
    python bench/gpu_checks.py report --checks C.json --bench B.json --tests T.txt --out S.md

``--dry-run`` shrinks every size so that the whole run takes seconds on a CPU.
``report`` renders the "## GPU checks" section of bench/README.md from the JSON files.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit import GRUCell, GRUDCell, LSTMCell, MinibatchSource, Recurrence, SequenceBatch
from rnnkit.data.listops import LISTOPS_VOCAB, generate_listops
from rnnkit.recurrence import onednn_runs_bf16
from rnnkit.recursive import ChildSumTreeLSTMCell, Recursive
from rnnkit.trees import Tree, TreeBatch

BF16_OUTPUT_ATOL = 0.05
BF16_GRAD_RTOL = 0.05
TREE_GRAD_ATOL = 1e-4
SECTION = "## GPU checks"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best of ``repeats`` runs of ``fn``, in seconds, after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _ragged(b: int, t: int, i: int, device: torch.device, seed: int) -> SequenceBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, t // 10), t + 1, (b,), generator=g).tolist()
    return SequenceBatch.from_list([torch.randn(n, i, generator=g) for n in lengths]).to(device)


# ---------------------------------------------------------------------------- bf16


def _bf16_layer(name: str, i: int, h: int) -> nn.Module:
    if name == "lstm (fused)":
        return Recurrence(LSTMCell(i, h))
    if name == "gru (fused)":
        return Recurrence(GRUCell(i, h))
    return Recurrence(LSTMCell(i, h, layer_norm=True))  # "layer-norm lstm (loop)"


def bf16_check(name: str, size: tuple[int, int, int, int], device: torch.device) -> dict[str, Any]:
    b, t, i, h = size
    torch.manual_seed(0)
    layer = _bf16_layer(name, i, h).to(device)
    x = _ragged(b, t, i, device, seed=1)

    def run(autocast: bool) -> tuple[Tensor, list[Tensor]]:
        layer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = layer(x).data
        out.float().square().sum().backward()
        return out.detach().float(), [
            p.grad.clone() for p in layer.parameters() if p.grad is not None
        ]

    want, want_grads = run(False)
    got, got_grads = run(True)
    out_err = float((got - want).abs().max())
    grad_err = max(
        float((g - w).norm() / w.norm().clamp_min(1e-12))
        for g, w in zip(got_grads, want_grads, strict=True)
    )
    return {
        "check": f"bf16/{name}",
        "shape": f"B={b} T<={t} I={i} H={h}",
        "output_max_abs_err": out_err,
        "grad_max_rel_err": grad_err,
        "tolerance": f"outputs <= {BF16_OUTPUT_ATOL} abs, gradients <= {BF16_GRAD_RTOL} rel",
        "float32_s": _seconds(lambda: run(False), device, 3),
        "bf16_s": _seconds(lambda: run(True), device, 3),
        "ok": out_err <= BF16_OUTPUT_ATOL and grad_err <= BF16_GRAD_RTOL,
        **(
            {"note": "this CPU's oneDNN has no bfloat16 RNN: the fused kernel ran in float32"}
            if device.type == "cpu" and "fused" in name and not onednn_runs_bf16()
            else {}
        ),
    }


def grud_bf16_check(size: tuple[int, int, int, int], device: torch.device) -> dict[str, Any]:
    """GRU-D on its own input (values, mask, gaps stacked in the last dimension)."""
    b, t, i, h = size
    torch.manual_seed(0)
    layer = Recurrence(GRUDCell(i, h)).to(device)
    g = torch.Generator().manual_seed(2)
    seqs = []
    for n in torch.randint(max(1, t // 10), t + 1, (b,), generator=g).tolist():
        values = torch.randn(n, i, generator=g)
        mask = (torch.rand(n, i, generator=g) < 0.7).float()
        gaps = torch.rand(n, i, generator=g) * 3
        seqs.append(torch.cat([values * mask, mask, gaps], dim=1))
    x = SequenceBatch.from_list(seqs).to(device)

    def run(autocast: bool) -> tuple[Tensor, list[Tensor]]:
        layer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = layer(x).data
        out.float().square().sum().backward()
        return out.detach().float(), [
            p.grad.clone() for p in layer.parameters() if p.grad is not None
        ]

    want, want_grads = run(False)
    got, got_grads = run(True)
    out_err = float((got - want).abs().max())
    grad_err = max(
        float((gg - w).norm() / w.norm().clamp_min(1e-12))
        for gg, w in zip(got_grads, want_grads, strict=True)
        if w.norm() > 0
    )
    return {
        "check": "bf16/gru-d (loop)",
        "shape": f"B={b} T<={t} D={i} H={h}",
        "output_max_abs_err": out_err,
        "grad_max_rel_err": grad_err,
        "tolerance": f"outputs <= {BF16_OUTPUT_ATOL} abs, gradients <= {BF16_GRAD_RTOL} rel",
        "float32_s": _seconds(lambda: run(False), device, 3),
        "bf16_s": _seconds(lambda: run(True), device, 3),
        "ok": out_err <= BF16_OUTPUT_ATOL and grad_err <= BF16_GRAD_RTOL,
    }


# ---------------------------------------------------------------------------- pinned


def pinned_check(examples: int, device: torch.device) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    data = [
        {"x": torch.randn(n, 128, generator=g), "y": torch.randn(1, 4, generator=g)}
        for n in torch.randint(50, 400, (examples,), generator=g).tolist()
    ]
    row: dict[str, Any] = {
        "check": "pinned/MinibatchSource",
        "shape": f"{examples} x [50..400, 128]",
    }
    pins = [False, True] if torch.accelerator.is_available() else [False]
    moved: dict[bool, list[Tensor]] = {}
    for pin in pins:
        out: list[Tensor] = []

        def sweep(pin: bool = pin, out: list[Tensor] = out) -> None:
            source = MinibatchSource(data, 4096, randomize=False, max_sweeps=1, pin_memory=pin)
            out.clear()
            for mb in source:
                out.append(mb.to(device, non_blocking=True)["x"].data)

        row[f"pin_{str(pin).lower()}_s_per_sweep"] = _seconds(sweep, device, 3)
        moved[pin] = [t.cpu() for t in out]
    if True in moved:
        row["equal"] = all(
            torch.equal(a, b) for a, b in zip(moved[True], moved[False], strict=True)
        )
        row["ok"] = row["equal"]
    else:
        row["note"] = "no accelerator: pin_memory=True not run"
        row["ok"] = True
    return row


# ---------------------------------------------------------------------------- trees


class _TreeModel(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(LISTOPS_VOCAB), size)
        self.cell = ChildSumTreeLSTMCell(size, size)
        self.recursive = Recursive(self.cell)
        self.output = nn.Linear(size, 10)

    def batched_loss(self, batch: TreeBatch, labels: Tensor) -> Tensor:
        h, _ = self.recursive.root_states(batch, batch.embed(self.embedding))
        return F.cross_entropy(self.output(h), labels, reduction="sum")

    def per_node_loss(self, trees: list[Tree], labels: Tensor) -> Tensor:
        device = labels.device
        zero_x = torch.zeros(1, self.cell.input_size, device=device)
        total = torch.zeros((), device=device)
        for tree, label in zip(trees, labels, strict=True):
            states: dict[int, tuple[Tensor, Tensor]] = {}
            for node in tree.postorder():
                x = zero_x
                if node.token is not None:
                    token = torch.tensor([LISTOPS_VOCAB[node.token]], device=device)
                    x = self.embedding(token)
                if not node.children:
                    states[id(node)] = self.cell.leaf(x)
                    continue
                kids = [states[id(c)] for c in node.children]
                h = torch.stack([k[0] for k in kids], dim=1)
                c = torch.stack([k[1] for k in kids], dim=1)
                mask = torch.ones(1, len(kids), dtype=torch.bool, device=device)
                states[id(node)] = self.cell(x, (h, c), mask)
            logits = self.output(states[id(tree)][0])
            total = total + F.cross_entropy(logits, label.view(1), reduction="sum")
        return total


def trees_check(n: int, size: int, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    examples = generate_listops(n, seed=0)
    trees = [Tree.from_listops(ex.sequence) for ex in examples]
    labels = torch.tensor([ex.label for ex in examples], device=device)
    model = _TreeModel(size).to(device)
    batch = TreeBatch.from_trees(trees, LISTOPS_VOCAB).to(device)

    def grads(loss: Callable[[], Tensor]) -> list[Tensor]:
        model.zero_grad()
        loss().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def batched() -> list[Tensor]:
        return grads(lambda: model.batched_loss(batch, labels))

    def per_node() -> list[Tensor]:
        return grads(lambda: model.per_node_loss(trees, labels))

    err = max(float((a - b).abs().max()) for a, b in zip(batched(), per_node(), strict=True))
    t_batched = _seconds(batched, device, 3)
    t_node = _seconds(per_node, device, 1)
    return {
        "check": "trees/child-sum Tree-LSTM",
        "shape": f"{n} ListOps trees, {batch.num_nodes} nodes, height {batch.height}, H={size}",
        "batched_s": t_batched,
        "per_node_s": t_node,
        "speedup": t_node / t_batched,
        "grad_max_abs_err": err,
        "tolerance": f"gradients <= {TREE_GRAD_ATOL} abs",
        "ok": err <= TREE_GRAD_ATOL,
    }


# ---------------------------------------------------------------------------- main


def run_checks(device: torch.device, dry_run: bool) -> list[dict[str, Any]]:
    size = (4, 12, 8, 16) if dry_run else (64, 100, 128, 256)
    grud_size = (4, 12, 5, 16) if dry_run else (64, 100, 32, 128)
    checks: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"bf16/{name}", lambda name=name: bf16_check(name, size, device))  # type: ignore[misc]
        for name in ("lstm (fused)", "gru (fused)", "layer-norm lstm (loop)")
    ]
    checks.append(("bf16/gru-d (loop)", lambda: grud_bf16_check(grud_size, device)))
    checks.append(("pinned/MinibatchSource", lambda: pinned_check(8 if dry_run else 512, device)))
    checks.append(
        ("trees", lambda: trees_check(8 if dry_run else 128, 8 if dry_run else 64, device))
    )
    rows = []
    for name, check in checks:
        try:
            row = check()
        except Exception as error:  # a failed check is recorded, and the others still run
            row = {"check": name, "ok": False, "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _figure(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {row['error'][:200]}"
    if "bf16_s" in row:
        return (
            f"float32 {row['float32_s'] * 1e3:.3g} ms, bf16 {row['bf16_s'] * 1e3:.3g} ms; "
            f"output err {row['output_max_abs_err']:.2g}, "
            f"grad rel err {row['grad_max_rel_err']:.2g}"
        )
    if "batched_s" in row:
        return (
            f"batched {row['batched_s'] * 1e3:.3g} ms, per node {row['per_node_s'] * 1e3:.3g} ms "
            f"({row['speedup']:.1f}x); grad err {row['grad_max_abs_err']:.2g}"
        )
    pins = [f"{k.split('_')[1]}: {v * 1e3:.3g} ms" for k, v in row.items() if k.endswith("_sweep")]
    return "pin_memory " + ", ".join(pins) + (f"; {row['note']}" if "note" in row else "")


def report(checks: Path, bench: Path | None, tests: Path | None, command: str) -> str:
    record = json.loads(checks.read_text())
    lines = [
        SECTION,
        "",
        f"`{command}` (at most 8 minutes; `bench/gpu.sh --dry-run` runs the same steps at tiny "
        "sizes on the CPU, in the test suite). Raw figures in `bench/results/`.",
        "",
        f"Machine: {record['machine']}; torch {record['torch']}.",
        "",
    ]
    if tests is not None and tests.exists():
        summary = [
            line
            for line in tests.read_text().splitlines()
            if re.search(r"passed|failed|skipped|error", line)
        ]
        lines += [f"CUDA tests: {summary[-1] if summary else 'no summary'}", ""]
    if bench is not None and bench.exists():
        results = json.loads(bench.read_text())["results"]
        lines += [
            "| bench/run.py case | subject | peer | subject ms | peer ms | ratio |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['name']} | {r['subject']} | {r['peer']} | {r['subject_s'] * 1e3:.3g} | "
            f"{r['peer_s'] * 1e3:.3g} | {r['ratio']:.3f} |"
            for r in results
        ]
        lines.append("")
    lines += ["| check | shape | figures | tolerance | ok |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['check']} | {r.get('shape', '')} | {_figure(r)} | {r.get('tolerance', '')} | "
        f"{'yes' if r['ok'] else '**no**'} |"
        for r in record["checks"]
    ]
    return "\n".join(lines) + "\n"


def write_section(readme: Path, text: str) -> None:
    """Replace (or append) the "## GPU checks" section, reading the file right before."""
    old = readme.read_text() if readme.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    readme.write_text(new.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    checks = sub.add_parser("checks", help="run the checks, write JSON")
    checks.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    checks.add_argument("--dry-run", action="store_true", help="tiny sizes")
    checks.add_argument("--out", type=Path, required=True)
    render = sub.add_parser("report", help="render the README section from the JSON files")
    render.add_argument("--checks", type=Path, required=True)
    render.add_argument("--bench", type=Path)
    render.add_argument("--tests", type=Path)
    render.add_argument("--command", default="bench/gpu.sh")
    render.add_argument("--out", type=Path, required=True, help="a .md file, or bench/README.md")
    args = parser.parse_args()
    if args.action == "checks":
        if args.device == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available")
        torch.manual_seed(0)
        device = torch.device(args.device)
        gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        rows = run_checks(device, args.dry_run)
        record = {"machine": gpu, "torch": torch.__version__, "device": args.device, "checks": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        raise SystemExit(0 if all(r["ok"] for r in rows) else 1)
    text = report(args.checks, args.bench, args.tests, args.command)
    if args.out.name == "README.md":
        write_section(args.out, text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
