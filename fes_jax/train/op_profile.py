"""Where a compiled step's time goes: a profiler trace summarised per XLA operation.

``profile(run, compiled_text, out_dir, steps)`` runs ``run`` (one step, returning arrays)
``steps`` times under ``jax.profiler``, keeps the trace (``out_dir/plugins/profile/...``, for
TensorBoard's profile plugin or Perfetto) and summarises it: every trace event named like an
instruction of the compiled program (``compiled.as_text()``) is one execution of that XLA op
(on CPU the thunks run on XLA's worker threads; on GPU / TPU the device's op line), so the
summary gives per op and per step: milliseconds, its HLO kind (the fusion's kind, e.g.
``__ynn_fusion`` for a matmul handed to YNNPACK, or ``kLoop`` for fused elementwise work, or
the opcode), whether it belongs to the backward pass (``transpose(jvp(...))`` in its source
metadata), and what it came from. Op times of concurrent ops add up (two threads: at most
twice the wall time). The step's wall time is measured around the traced steps.

Reading a CPU summary: a plain ``dot`` (Eigen) can run asynchronously; in SpotFormer's
backward pass the kernel-gradient dots showed events of ~1 ms while their work ran on the
other worker thread during the next YNNPACK fusion (the input gradient), which therefore
looked half as fast as the same matmul alone. Compare ops with a jitted matmul of the same
shapes before calling one slow.
"""

from __future__ import annotations

import collections
import glob
import json
import pathlib
import re
import time
from typing import Any, Callable

import jax

_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^=]*?\)|\S+) ([\w\-]+)\((.*?)$", re.M)


def hlo_ops(compiled_text: str) -> dict[str, dict[str, str]]:
  """Instruction name -> {'kind', 'source'} for every instruction of the compiled program."""
  ops = {}
  for m in _INSTRUCTION.finditer(compiled_text):
    name, opcode, rest = m.groups()
    kind = opcode
    if opcode == "fusion":
      custom = re.search(r'"kind":"(__\w+)"', rest)
      loop = re.search(r"kind=(k\w+)", rest)
      kind = custom.group(1) if custom else (loop.group(1) if loop else "fusion")
    source = re.search(r'op_name="([^"]*)"', rest)
    ops[name] = {"kind": kind, "source": source.group(1) if source else ""}
  return ops


def summarize(xplane_path: str | pathlib.Path, ops: dict[str, dict[str, str]], steps: int,
              wall_s: float, top: int = 25) -> dict[str, Any]:
  """Per-op and per-kind milliseconds per step from one trace file."""
  data = jax.profiler.ProfileData.from_file(str(xplane_path))
  ns = collections.Counter()
  calls = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in ops:
          ns[event.name] += event.duration_ns
          calls[event.name] += 1
  per_step = {name: t / 1e6 / steps for name, t in ns.items()}
  by_kind = collections.Counter()
  backward = 0.0
  for name, ms in per_step.items():
    by_kind[ops[name]["kind"]] += ms
    if "transpose(jvp" in ops[name]["source"]:
      backward += ms
  total = sum(per_step.values())
  return {
      "steps": steps, "wall_ms_per_step": 1e3 * wall_s / steps,
      "op_ms_per_step": total, "backward_ms_per_step": backward,
      "ops_traced": len(per_step),
      "by_kind": [{"kind": k, "ms_per_step": v} for k, v in by_kind.most_common()],
      "top_ops": [{"name": n, "ms_per_step": v, "calls_per_step": calls[n] / steps,
                   **ops[n]} for n, v in sorted(per_step.items(), key=lambda kv: -kv[1])[:top]],
  }


def profile(run: Callable[[], Any], compiled_text: str, out_dir: str | pathlib.Path,
            steps: int = 2, top: int = 25) -> dict[str, Any]:
  """Traces ``steps`` calls of ``run`` into ``out_dir``; writes ``op_profile.json`` / ``.md``."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  jax.block_until_ready(run())  # nothing left in flight from before
  jax.profiler.start_trace(str(out_dir))
  start = time.perf_counter()
  try:
    for _ in range(steps):
      jax.block_until_ready(run())
    wall = time.perf_counter() - start
  finally:
    jax.profiler.stop_trace()
  traces = sorted(glob.glob(str(out_dir / "plugins/profile/*/*.xplane.pb")),
                  key=lambda p: pathlib.Path(p).stat().st_mtime)
  if not traces:
    raise RuntimeError(f"jax.profiler wrote no .xplane.pb under {out_dir}")
  summary = summarize(traces[-1], hlo_ops(compiled_text), steps, wall, top)
  summary["trace"] = traces[-1]
  (out_dir / "op_profile.json").write_text(json.dumps(summary, indent=2) + "\n")
  (out_dir / "op_profile.md").write_text(markdown(summary))
  return summary


def markdown(summary: dict[str, Any]) -> str:
  """The summary as two markdown tables (kinds, then the slowest ops)."""
  lines = [f"Wall time {summary['wall_ms_per_step']:.1f} ms per step; traced ops "
           f"{summary['op_ms_per_step']:.1f} ms per step (concurrent ops add up), of which "
           f"backward pass {summary['backward_ms_per_step']:.1f} ms.", "",
           "| kind | ms / step |", "|---|---|"]
  lines += [f"| {k['kind']} | {k['ms_per_step']:.1f} |" for k in summary["by_kind"]]
  lines += ["", "| op | kind | ms / step | calls / step | from |", "|---|---|---|---|---|"]
  lines += [f"| {o['name']} | {o['kind']} | {o['ms_per_step']:.1f} | {o['calls_per_step']:g} "
            f"| `{o['source'][-70:]}` |" for o in summary["top_ops"]]
  return "\n".join(lines) + "\n"
