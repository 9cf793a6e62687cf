"""The tables people read in a bench's ``report.md``: accuracy parity (backends side by side, per class with deltas,
the gate verdict, the latency during the pass) and latency (per backend, precision and batch size), each followed by
the environment it was measured in. Pure formatting of the results dict (``results.json`` holds every number at
full precision; only these tables round)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ftadapt.evaluation.tables import Series, cell, difference, markdown_table, per_class_table


def _gate_cell(gate: Any) -> str:
    if isinstance(gate, dict):
        return "**pass**" if gate["passed"] else "**FAIL**"
    return str(gate).split(":")[0]


def _ran(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: r for n, r in results["backends"].items() if r["status"] == "ran"}


def accuracy_summary(results: dict[str, Any]) -> str:
    """The verdict line, the gate and one row per backend (what the command also prints)."""
    gate, ref = results["gate"], results["reference"]
    limits = f"|ΔmIoU| ≤ {gate['tolerance_miou_points']:g} mIoU points"
    if gate["min_identical_percent"] is not None:
        limits += f" and ≥ {gate['min_identical_percent']:g} % identical labels"
    default = f" (the default for {gate['default_for']})" if gate.get("default_for") else ""
    head = [f"**{results['verdict']['line']}**", "",
            f"Gate: {limits}{default}, against `{ref}`" + (" (the exported module in PyTorch FP32)."
                                                          if ref == "pytorch" else " — PyTorch did not run."), ""]
    rows = []
    for name, row in results["backends"].items():
        if row["status"] != "ran":
            rows.append([name, "-", "-", "-", "-", "-", f"not run: {row['reason']}"])
            continue
        agreement = row.get("agreement") or {}
        differing = "-" if name == ref else cell(agreement.get("differing_percent"), 4) + " %"
        delta = "reference" if name == ref else cell(row.get("delta_miou"), 3, signed=True)
        rows.append([name, row["protocol"].get("precision") or "fp32", row["preprocessing"], cell(row["miou"]),
                     delta, differing, _gate_cell(row.get("gate"))])
    columns = ["backend", "precision", "pre-processing", "mIoU", "ΔmIoU", "labels differing", "gate"]
    return "\n".join(head) + "\n" + markdown_table(columns, rows, right=3)


def backend_table(results: dict[str, Any]) -> str:
    """19 classes and mIoU: each backend's IoU and, for every non-reference backend, its difference."""
    ran, ref = _ran(results), results["reference"]
    series = {name: Series.of(name, row) for name, row in ran.items()}
    deltas = [difference(series[n], series[ref], f"Δ {n}") for n in series if n != ref]
    return per_class_table([*series.values(), *deltas], style="markdown")


def _latency_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        device = r.get("device_time")
        device_cell = cell(device["p50_ms"]) if isinstance(device, dict) else "-"
        out.append([r.get("label", r.get("backend", "?")), str(r.get("batch", 1)), cell(r["p50_ms"]),
                    cell(r["p90_ms"]), cell(r["p99_ms"]), cell(r.get("per_frame_p50_ms", r["p50_ms"])),
                    cell(r["fps"]), device_cell, cell(r.get("peak_allocated_mib"), 0),
                    cell(r.get("device_memory_growth_mib"), 0)])
    return out


# "peak MiB": PyTorch's allocator peak over the timed calls; "device +MiB": how much the GPU's used memory grew
# from before the backend was opened to after its last call (any allocator: ONNX Runtime's arena, TensorRT's engine).
LATENCY_HEAD = ["backend", "batch", "p50 ms", "p90 ms", "p99 ms", "p50 ms / frame", "frames/s", "device p50 ms",
                "peak MiB", "device +MiB"]


def accuracy_markdown(results: dict[str, Any], figures: Sequence[str] = ()) -> str:
    """The whole accuracy report."""
    model, data = results["model"], results["data"]
    w, h = model["working_size"]
    parts = [f"# Accuracy parity: {model['path']} on cityscapes {data['split']} ({data['frames']} frames)\n",
             accuracy_summary(results), "## Per-class IoU (%)\n", backend_table(results)]
    gap = results.get("protocol_gap")
    if gap:
        parts.append(f"## Training protocol beside the deployed pre-processing\n\nThe graph resizes frames to {w}×{h} "
                     f"bilinearly (half-pixel); the training protocol uses PIL bicubic. Same FP32 ensemble: protocol "
                     f"mIoU {cell(gap['protocol_miou'])}, deployed {cell(gap['deployed_miou'])} (protocol − deployed "
                     f"{cell(gap['protocol_minus_deployed'], 3, signed=True)} points; "
                     f"{cell(gap['differing_percent'], 3)} % of the labels differ). The gate compares the deployed "
                     "pre-processing only.\n")
    timed = [{"label": n, **r["latency_during_pass"]} for n, r in _ran(results).items() if r.get("latency_during_pass")]
    if timed:
        parts.append("## Latency during the accuracy pass\n\nPer frame, first frame left out; other threads decode "
                     "frames meanwhile, so use `ftadapt bench latency` for controlled figures.\n\n"
                     + markdown_table(LATENCY_HEAD, _latency_rows(timed)))
    members = [[m["name"], cell(m["weight"], 4), m["head_rule"], str(m.get("method")), m["sha256"][:16] + "…"]
               for m in model["members"]]
    parts.append(f"## Model\n\n`{model['path']}` (sha256 {model['sha256'][:16]}…): {model['precision']}, working size "
                 f"{w}×{h}, fusion {model['ensemble']['fusion']}, flip {'on' if model['ensemble']['flip'] else 'off'}."
                 "\n\n" + markdown_table(["member", "weight", "heads", "method", "sha256"], members, right=5))
    parts += [_figures(figures), environment_markdown(results["environment"], results["backends"])]
    return "\n".join(p for p in parts if p)


def latency_markdown(results: dict[str, Any], figures: Sequence[str] = ()) -> str:
    """The whole latency report: one table per file and precision, the rows that did not run, the environment."""
    timing = results["timing"]
    parts = ["# Latency\n", f"{timing[0].upper()}{timing[1:]}. Device p50: CUDA events around the inference alone "
             "(TensorRT, PyTorch on CUDA); peak MiB: PyTorch's allocator peak; device +MiB: how much the GPU's used "
             "memory grew while the backend ran.\n"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in results["results"]:
        groups.setdefault(f"{row['model']} — {row['precision']}{', flip' if row['flip'] else ''}", []).append(row)
    for title, rows in groups.items():
        first = rows[0]
        w, h = first["working_size"]
        fw, fh = first["frame_size"]
        timed = [{**r, "label": _latency_label(r)} for r in rows if "p50_ms" in r]
        parts.append(f"## {title}\n\n{fw}×{fh} frames, working size {w}×{h}, {first['members']} member(s).\n")
        if timed:
            parts.append(markdown_table(LATENCY_HEAD, _latency_rows(timed)))
        parts += [f"- {r['backend']} ({r['variant']}"
                  + (f", batch {r['batch']}" if "batch" in r else "") + f"): {r['status']}"
                  for r in rows if "status" in r]
        parts.append("")
    parts += [_figures(figures), environment_markdown(results["environment"], {})]
    return "\n".join(parts)


def _latency_label(row: dict[str, Any]) -> str:
    """Backend, variant, where it really ran (first provider or torch device) and, for flip fusion, the ratio of its
    p50 to the plain graph's."""
    where = (row.get("providers") or [row.get("device", "?")])[0]
    ratio = f", ×{row['p50_ratio_to_plain']:.2f} plain p50" if "p50_ratio_to_plain" in row else ""
    return f"{row['backend']} ({row['variant']}, {where}{ratio})"


def _figures(figures: Sequence[str]) -> str:
    return "\n".join(f"![{name}]({name})\n" for name in figures)


def environment_markdown(env: dict[str, Any], backends: dict[str, Any]) -> str:
    """The machine, the libraries and, per backend, the providers it really ran on."""
    smi = env.get("nvidia_smi")
    gpu = ", ".join(f"{g.get('name')} (driver {g.get('driver_version')})" for g in smi) if isinstance(smi, list) \
        else env.get("gpu", "none")
    lines = ["## Environment\n", f"- CPU: {env.get('cpu_model')}, {env.get('usable_cores')} usable of "
             f"{env.get('cpu_count')} cores; load average {env.get('load_average_1_5_15min')}",
             f"- GPU: {gpu}; CUDA {env.get('cuda', '-')}, cuDNN {env.get('cudnn', '-')}",
             f"- PyTorch {env.get('torch')}, ONNX Runtime {env.get('onnxruntime')} (offers "
             f"{', '.join(env.get('onnxruntime_available_providers', [])) or '-'}), TensorRT "
             f"{str(env.get('tensorrt')).split(';')[0]}",
             f"- ftadapt {env.get('ftadapt')}, Python {env.get('python')}, {env.get('platform')}"]
    for name, row in backends.items():
        providers = row.get("protocol", {}).get("providers") if row["status"] == "ran" else None
        if providers:
            lines.append(f"- {name} ran on: {', '.join(providers)}")
    return "\n".join(lines) + "\n"


__all__ = ["accuracy_markdown", "accuracy_summary", "latency_markdown", "backend_table", "environment_markdown"]
