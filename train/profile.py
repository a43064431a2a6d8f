"""Where a train step's time goes: jconv's jitted step beside PyTorch's eager step of the
same network (:mod:`train.torch_ref`), op by op, in one process:

    python -m train.profile --config cifar_subset.yaml --steps 5

jconv's side is a ``jax.profiler`` trace of ``--steps`` steps: XLA:CPU records each thunk
(a fusion, a convolution, a copy) from its start to its ``end:`` event; when thunks overlap
on the two cores each one is charged its share of the overlap, so the charges add up to the
step's wall time. Every thunk is put in a category from the compiled HLO: a convolution (or
a fusion holding one) by pass and layer, a transpose or copy as a layout change, and any
other fusion by the Python source its instructions were traced from (Flax's BatchNorm, the
activation, jconv's pooling, the loss and head, Optax, the Lookahead update); conv layers are named from NHWC
shapes (the configs' layout; an NCHW run's names are not meaningful). PyTorch's side
is ``torch.profiler``: each forward op and each autograd node with its children, the
optimiser step and the Lookahead update. Both report the median over steps in ms per step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import ConfigError, command

CONV_FWD, CONV_BWD = "conv fwd", "conv bwd (data + weight)"
CATEGORIES = (CONV_FWD, CONV_BWD, "layout changes (transpose, copy)", "BatchNorm",
              "activation (GELU/ReLU)", "pooling", "loss + head", "optimiser", "Lookahead",
              "other")
LAYOUT, BN, ACT, POOL, LOSS, OPT, LOOKAHEAD, OTHER = CATEGORIES[2:]

# (source file suffix, function name or None for any) -> category, innermost frame first
SOURCE_RULES: tuple[tuple[str, str | None, str], ...] = (
    ("train/steps.py", "lookahead_update", LOOKAHEAD),
    ("nnx/nn/normalization.py", None, BN), ("train/norm.py", None, BN),
    ("jax/_src/nn/functions.py", None, ACT),
    ("train/model.py", "gelu", ACT), ("train/model.py", "<lambda>", ACT),
    ("jconv/_pool_impls.py", None, POOL), ("jconv/pool.py", None, POOL),
    ("jconv/_windows.py", None, POOL),
    ("optax/losses/", None, LOSS), ("nnx/nn/linear.py", None, LOSS),
    ("train/steps.py", "smoothed_cross_entropy", LOSS),
    ("optax/", None, OPT), ("train/optim.py", None, OPT),
)
PRIORITY = (CONV_FWD, POOL, BN, ACT, LOSS, LOOKAHEAD, OPT, OTHER)


def _frames(hlo: str) -> dict[int, list[tuple[str, str]]]:
    """stack_frame_id -> [(file, function), ...] innermost first, from the HLO's tables."""
    def table(name: str) -> dict[int, str]:
        m = re.search(rf"^{name}\n(.*?)(?:\n\n|\n[A-Z]\w+\n|\Z)", hlo, re.S | re.M)
        return dict((int(k), v) for k, v in
                    re.findall(r"^(\d+) (.*)$", m.group(1), re.M)) if m else {}

    files = {k: v.strip('"') for k, v in table("FileNames").items()}
    funcs = {k: v.strip('"') for k, v in table("FunctionNames").items()}
    locs = {k: (files.get(int(re.search(r"file_name_id=(\d+)", v).group(1)), ""),
                funcs.get(int(re.search(r"function_name_id=(\d+)", v).group(1)), ""))
            for k, v in table("FileLocations").items()}
    parent = {k: (int(re.search(r"file_location_id=(\d+)", v).group(1)),
                  int(re.search(r"parent_frame_id=(\d+)", v).group(1)))
              for k, v in table("StackFrames").items()}
    out = {}
    for fid in parent:
        chain, seen, f = [], set(), fid
        while f in parent and f not in seen:
            seen.add(f)
            chain.append(locs.get(parent[f][0], ("", "")))
            f = parent[f][1]
        out[fid] = chain
    return out


def _source_category(chain: list[tuple[str, str]]) -> str:
    for file, func in chain:
        for suffix, fn, cat in SOURCE_RULES:
            if suffix in file and (fn is None or fn == func):
                return cat
    return OTHER


def classify_hlo(hlo: str) -> dict[str, tuple[str, str]]:
    """Compiled HLO text -> {entry instruction name: (category, layer)}; ``layer`` is
    ``"C_in->C_out @H"`` for convolutions, else ""."""
    frames = _frames(hlo)
    comps: dict[str, list[str]] = {}
    for m in re.finditer(r"^(?:ENTRY )?%([\w.\-]+) .*?\{\n(.*?)\n\}", hlo, re.S | re.M):
        comps[m.group(1)] = m.group(2).splitlines()
    entry = re.search(r"^ENTRY %([\w.\-]+)", hlo, re.M).group(1)
    inst = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([\d,]*)\]\S* ([a-z\-]+)\((.*)")
    shapes = {}
    for line in comps[entry]:
        m = inst.match(line)
        if m:
            shapes[m.group(1)] = [int(d) for d in m.group(3).split(",") if d]

    def category(lines: list[str]) -> tuple[str, str]:
        votes = collections.Counter()
        for line in lines:
            m = inst.match(line)
            if not m:
                continue
            opc = m.group(4)
            if opc == "convolution":
                return "conv", line
            if opc in ("parameter", "constant", "bitcast", "broadcast", "reshape"):
                continue
            sf = re.search(r"stack_frame_id=(\d+)", line)
            votes[_source_category(frames.get(int(sf.group(1)), [])) if sf else OTHER] += 1
        best = max(votes.values(), default=0)
        return next((c for c in PRIORITY if votes[c] == best and best), OTHER), ""

    out = {}
    for line in comps[entry]:
        m = inst.match(line) or _TUPLE_INST.match(line)
        if not m or m.group(4) in ("parameter", "constant", "tuple", "get-tuple-element",
                                   "bitcast"):
            continue
        name, opc = m.group(1), m.group(4)
        if opc == "custom-call" and "jconv_onednn_" in line:
            out[name] = _onednn_entry(line, shapes)
            continue
        called = re.search(r"calls=%([\w.\-]+)", line)
        if opc == "fusion" and called and called.group(1) in comps:
            cat, conv_line = category(comps[called.group(1)])
            if cat == "conv":
                out[name] = _conv_entry(conv_line, shapes, comps[called.group(1)])
                continue
            if name.startswith("transpose") or re.match(r"^(copy|transpose)", name):
                cat = LAYOUT
            out[name] = (cat, "")
        elif opc == "convolution":
            out[name] = _conv_entry(line, shapes, [])
        elif opc in ("copy", "transpose"):
            out[name] = (LAYOUT, "")
        else:
            out[name] = category([line])
    return out


# A custom call returning a tuple (oneDNN's weight gradient with its bias gradient).
_TUPLE_INST = re.compile(r"\s*(?:ROOT )?%([\w.\-]+) = \(()([^)]*)\)\S* ([a-z\-]+)\((.*)")


def _onednn_entry(line: str, shapes: dict[str, list[int]]) -> tuple[str, str]:
    """(pass category, layer) of one ``impl="onednn"`` FFI call (NHWC data): the forward
    reads x (N, H, W, C_in) and writes (N, H', W', C_out); backward-data reads dy and writes
    dx; backward-weights reads x and dy."""
    target = re.search(r'custom_call_target="jconv_onednn_(\w+)"', line).group(1)
    if target.startswith("bn_"):  # oneDNN's BatchNorm (model.onednn_batch_norm)
        return BN, ""
    args = re.search(r"custom-call\(([^)]*)\)", line).group(1)
    a, b = (shapes.get(o.strip().lstrip("%"), [0] * 4) for o in args.split(",")[:2])
    if target == "bwd_weights":  # a tuple (dw, db): the layer is read from x and dy
        return CONV_BWD, f"{a[3]}->{b[3]} @{a[1]}"
    out = [int(d) for d in re.search(r"= \w+\[([\d,]*)\]", line).group(1).split(",")]
    if target == "fwd":
        return CONV_FWD, f"{a[3]}->{out[3]} @{a[1]}"
    return CONV_BWD, f"{out[3]}->{a[3]} @{out[1]}"


def _conv_entry(line: str, shapes: dict[str, list[int]], body: list[str]) -> tuple[str, str]:
    """(pass category, layer) of one convolution instruction (NHWC data, b01f dims)."""
    m = re.match(r"\s*(?:ROOT )?%[\w.\-]+ = \w+\[([\d,]*)\]\S* convolution\(%([\w.\-]+), "
                 r"%([\w.\-]+)\).*?dim_labels=(\w+)_(\w+)->(\w+)", line)
    out = [int(d) for d in m.group(1).split(",")]
    local = {}
    for b in body:  # a fused conv's operands are the fusion's parameters
        p = re.match(r"\s*%([\w.\-]+) = \w+\[([\d,]*)\]", b)
        if p:
            local[p.group(1)] = [int(d) for d in p.group(2).split(",") if d]
    lhs = shapes.get(m.group(2)) or local.get(m.group(2), [])
    op_name = re.search(r'op_name="([^"]*)"', line)
    op_name = op_name.group(1) if op_name else ""
    if "transpose(" in op_name:
        # data gradient: dy (N, H, W, C_out) against the flipped kernel -> (N, H, W, C_in)
        return CONV_BWD, f"{out[3]}->{lhs[3]} @{out[1]}"
    if "jvp(" in op_name:
        return CONV_FWD, f"{lhs[3]}->{out[3]} @{lhs[1]}"
    # weight gradient (XLA rebuilt it and dropped the name): x^T (C_in, H, W, N) against
    # dy (H, W, N, C_out) -> (C_in, kH, kW, C_out)
    return CONV_BWD, f"{out[0]}->{out[3]} @{lhs[1]}"


def hlo_users(hlo: str) -> dict[str, set[str]]:
    """{entry instruction: the entry instructions that read it} of compiled HLO text."""
    entry = hlo[hlo.index("\nENTRY"):]
    users = collections.defaultdict(set)
    for line in entry.splitlines()[1:]:
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = [^(]*\((.*)", line)
        if m:
            for operand in re.findall(r"%([\w.\-]+)", m.group(2).split("), ")[0]):
                users[operand].add(m.group(1))
    return users


def thunk_times(trace_dir: str, users: dict[str, set[str]],
                async_ops: set[str]) -> tuple[dict[str, float], float]:
    """(median ms per step of each thunk, median ms per step of XLA's executor) in a
    ``jax.profiler`` trace (perfetto JSON) of several steps; each thunk is charged its share
    of the time it overlaps other thunks, so the charges add up to the time some thunk ran.
    The executor's time is its "wait for completion" event: what it spends beyond the
    charges is time no thunk ran (the thunks' scheduling, hand-offs between threads).

    A thunk's event covers its work, except for ``async_ops`` (XLA's convolution thunks,
    which run on the intra-op pool): their event covers the launch, so they are taken to
    run until the first of their ``users`` (from :func:`hlo_users`) starts."""
    path = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)[0]
    with gzip.open(path) as f:
        data = json.load(f)
    events = [e for e in (data["traceEvents"] if isinstance(data, dict) else data)
              if e.get("ph") == "X"]
    steps = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e["name"] == "ThunkExecutor::Execute (wait for completion)")
    starts = collections.defaultdict(list)
    thunks = [e for e in events if (e.get("args") or {}).get("hlo_op")]
    for e in thunks:
        starts[e["args"]["hlo_op"]].append(e["ts"])
    spans = []
    for e in thunks:
        op, t0, t1 = e["args"]["hlo_op"], e["ts"], e["ts"] + e["dur"]
        step = next((s for s in steps if s[0] <= t0 <= s[1]), None)
        if step is None:
            continue
        if op in async_ops:  # launched, not run: until a reader starts (or the step ends)
            t1 = min([t for u in users.get(op, ()) for t in starts[u] if t0 < t <= step[1]],
                     default=t1)
        spans.append((t0, t1, op))
    spans.sort()
    per_step = [collections.Counter() for _ in steps]
    points = sorted({t for s in spans for t in s[:2]})
    active, j = [], 0
    for a, b in zip(points, points[1:]):
        while j < len(spans) and spans[j][0] <= a:
            active.append(spans[j])
            j += 1
        active = [s for s in active if s[1] > a]
        for s in active:
            k = next((i for i, (t0, t1) in enumerate(steps) if t0 <= s[0] <= t1), None)
            if k is not None:
                per_step[k][s[2]] += (b - a) / len(active) / 1000
    ops = set().union(*per_step)
    return ({op: float(np.median([c[op] for c in per_step])) for op in ops},
            float(np.median([(t1 - t0) / 1000 for t0, t1 in steps])))


@dataclass(frozen=True)
class StepTime:
    """Where one side's step time goes, medians in ms per step: ``wall`` timed without the
    profiler (each step waited for), ``traced`` the same under the profiler, ``executor``
    XLA's executor from its first thunk to its last (jconv only), ``charged`` the sum of
    the per-op charges."""

    wall: float
    traced: float
    charged: float
    executor: float | None = None

    def unaccounted(self) -> dict[str, float]:
        """The step's wall time no op was charged with, split by where it lies: idle
        inside XLA's executor (no thunk running: scheduling, thread hand-offs), outside it
        (dispatch, argument checks, buffer donation and the wait for the result), and what
        the profiler itself added (traced - wall; negative is noise)."""
        if self.executor is None:
            return {"outside the ops": self.traced - self.charged,
                    "profiler overhead": self.traced - self.wall}
        return {"idle inside XLA's executor": self.executor - self.charged,
                "outside the executor": self.traced - self.executor,
                "profiler overhead": self.traced - self.wall}


def _timed_steps(run: Callable[[], Any], steps: int) -> list[float]:
    """ms of each of ``steps`` calls of ``run`` (which waits for its result)."""
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        run()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def profile_jconv(step: Callable, state: Any, x: Any, y: Any, steps: int) -> tuple[
        dict[tuple[str, str], float], StepTime]:
    """({(category, layer): ms per step}, :class:`StepTime`) of jconv's jitted step."""
    import jax

    hlo = step.lower(state, x, y).compile().as_text()
    box = [state]

    def one() -> None:
        box[0], m = step(box[0], x, y)
        jax.block_until_ready(m)

    for _ in range(2):
        one()
    wall = float(np.median(_timed_steps(one, steps)))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            traced = float(np.median(_timed_steps(one, steps)))
        convs = set(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = \S+ convolution\(", hlo, re.M))
        times, executor = thunk_times(d, hlo_users(hlo), convs)
    cats = classify_hlo(hlo)
    users = hlo_users(hlo)
    for op, (cat, _) in list(cats.items()):
        if cat == OTHER:  # XLA-made (no Python source, e.g. split reductions): its reader's
            cats[op] = next((cats[u] for u in sorted(users.get(op, ()))
                             if cats.get(u, (OTHER,))[0] != OTHER), cats[op])
    out = collections.Counter()
    for op, ms in times.items():
        out[cats.get(op, (OTHER, ""))] += ms
    return dict(out), StepTime(wall, traced, sum(times.values()), executor)


TORCH_NODES = {"Convolution": CONV_BWD, "NativeBatchNorm": BN, "Gelu": ACT, "Relu": ACT,
               "MaxPool2D": POOL, "AdaptiveAvgPool2D": POOL, "Mean": POOL, "Mm": LOSS,
               "Mul": LOSS, "LogSoftmax": LOSS, "NllLoss": LOSS, "Sum": LOSS, "Add": LOSS,
               "Permute": LAYOUT, "Clone": LAYOUT, "ToCopy": LAYOUT, "AccumulateGrad": OPT}
TORCH_OPS = {"aten::convolution": CONV_FWD, "aten::conv2d": CONV_FWD, "aten::batch_norm": BN,
             "aten::gelu": ACT, "aten::relu": ACT, "aten::max_pool2d": POOL,
             "aten::adaptive_avg_pool2d": POOL, "aten::linear": LOSS, "aten::mul": LOSS,
             "aten::cross_entropy_loss": LOSS, "aten::flatten": LOSS, "aten::zeros_like": OPT,
             "aten::contiguous": LAYOUT, "aten::clone": LAYOUT}


def profile_torch(step: Callable, x: Any, y: Any, steps: int) -> tuple[
        dict[tuple[str, str], float], StepTime]:
    """({(category, layer): ms per step}, :class:`StepTime`) of the PyTorch step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        step(x, y)
    wall = float(np.median(_timed_steps(lambda: step(x, y), steps)))
    traced = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(steps):
            t0 = time.perf_counter()
            with torch.profiler.record_function(f"step{i}"):
                step(x, y)
            traced.append((time.perf_counter() - t0) * 1000)
    per_step: list[collections.Counter] = [collections.Counter() for _ in range(steps)]
    events = prof.events()
    for e in events:
        root = e
        while root.cpu_parent is not None and not re.fullmatch(r"step\d+",
                                                                root.cpu_parent.name):
            root = root.cpu_parent
        if root.cpu_parent is None or e is not root:
            continue
        k = int(root.cpu_parent.name[4:])
        name = e.name
        if name.startswith("Optimizer."):
            cat, layer = OPT, ""
        elif name == "lookahead":
            cat, layer = LOOKAHEAD, ""
        elif name.startswith("autograd::engine::evaluate_function: "):
            node = name.split(": ", 1)[1]
            cat = next((c for p, c in TORCH_NODES.items() if node.startswith(p)), OTHER)
            layer = ""
            if cat == CONV_BWD:
                conv = next((c for c in _descendants(e) if c.name == "aten::convolution_backward"),
                            None)
                if conv is not None and conv.input_shapes:
                    dy, xs = conv.input_shapes[0], conv.input_shapes[1]
                    layer = f"{xs[1]}->{dy[1]} @{xs[2]}"
        else:
            cat, layer = TORCH_OPS.get(name, OTHER), ""
            if cat == CONV_FWD and e.input_shapes:
                xs, ws = e.input_shapes[0], e.input_shapes[1]
                layer = f"{xs[1]}->{ws[0]} @{xs[2]}"
        per_step[k][(cat, layer)] += e.cpu_time_total / 1000
    keys = set().union(*per_step)
    # Lookahead runs every 5th step: its mean, not its median (0), is its cost per step.
    ops = {key: float((np.mean if key[0] == LOOKAHEAD else np.median)(
        [c[key] for c in per_step])) for key in keys}
    return ops, StepTime(wall, float(np.median(traced)), sum(ops.values()))


def _descendants(e: Any) -> list[Any]:
    out, todo = [], list(e.cpu_children)
    while todo:
        c = todo.pop()
        out.append(c)
        todo += c.cpu_children
    return out


def table(ours: dict[tuple[str, str], float], torch: dict[tuple[str, str], float] | None,
          times: tuple[StepTime, StepTime | None]) -> str:
    """The side-by-side markdown table of jconv's side (``ours``) and PyTorch's: one row
    per (category, conv layer), the totals, then the whole step: its wall time without the
    profiler, what the ops were charged and the rest, named by where it lies
    (:meth:`StepTime.unaccounted`)."""
    keys = sorted(set(ours) | set(torch or {}),
                  key=lambda k: (CATEGORIES.index(k[0]), _layer_order(k[1])))
    rows = ["| op | jconv ms | PyTorch ms | jconv / PyTorch |", "|---|---|---|---|"]

    def row(name: str, a: float, b: float | None) -> str:
        ratio = f"{a / b:.2f}" if b else "–"
        return f"| {name} | {a:.1f} | {'–' if b is None else f'{b:.1f}'} | {ratio} |"

    for k in keys:
        a, b = ours.get(k, 0.0), None if torch is None else torch.get(k, 0.0)
        rows.append(row(f"{k[0]} {k[1]}".strip(), a, b))
    for name, pick in (("all convs", lambda k: k[0] in (CONV_FWD, CONV_BWD)),
                       ("everything else", lambda k: k[0] not in (CONV_FWD, CONV_BWD))):
        rows.append(row(f"**{name}**", sum(v for k, v in ours.items() if pick(k)),
                        None if torch is None else sum(v for k, v in torch.items() if pick(k))))
    jt, tt = times
    rows.append(row("**charged to ops**", jt.charged, None if tt is None else tt.charged))
    rows.append(row("**step wall, no profiler**", jt.wall, None if tt is None else tt.wall))
    rows.append(row("**step wall, profiled**", jt.traced, None if tt is None else tt.traced))
    share = 100 * (jt.traced - jt.charged) / jt.traced
    rows.append(row(f"**unaccounted** (profiled wall - charged: {share:.1f}% of jconv's step)",
                    jt.traced - jt.charged, None if tt is None else tt.traced - tt.charged))
    theirs = {} if tt is None else tt.unaccounted()
    for name, ms in jt.unaccounted().items():
        rows.append(row(f"  {name}", ms, theirs.get(name)))
    return "\n".join(rows)


def _layer_order(layer: str) -> tuple:
    m = re.match(r"(\d+)->(\d+) @(\d+)", layer)
    return (-int(m.group(3)), int(m.group(1)), int(m.group(2))) if m else (0, 0, 0)


@command
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=5, help="profiled steps (medians over them)")
    p.add_argument("--no-torch", action="store_true", help="jconv's side only")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    from .harness import bench_batches, load_inputs
    from .experiment import Experiment
    from .torch_ref import make_torch_step

    cfg, run_data = load_inputs(args.config, args.overrides)
    exp = Experiment.from_config(cfg, data=run_data)

    step, state = exp.train_step(), exp.state
    x, y = bench_batches(exp, 1)[0]
    jc, jtime = profile_jconv(step, state, x, y, args.steps)
    tstep = None if args.no_torch else make_torch_step(cfg)
    if tstep is None and not args.no_torch:
        print("PyTorch is not installed: jconv's side only (pip install torch)")
    tc, ttime = (None, None) if tstep is None else profile_torch(
        tstep, *tstep.inputs(np.asarray(x), np.asarray(y)), args.steps)
    print(f"{cfg.model.arch} {list(cfg.model.widths)}, batch {cfg.train.batch_size}, "
          f"{cfg.model.data_format}, conv_impl={cfg.model.conv_impl}, "
          f"conv_backend={cfg.model.conv_backend}; median of {args.steps} steps, ms per step")
    print(table(jc, tc, (jtime, ttime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
