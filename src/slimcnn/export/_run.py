"""``slimcnn export``: write a deployable artifact into a run folder and measure it (the artifact itself).

:func:`check_export` validates a request before any model is loaded; :func:`export_to_run` writes
the files of one format into the run's staging folder, re-loads what it wrote, measures it against
the original (score on the task, ORT latency side by side) and returns the :class:`RunResult` that
:func:`slimcnn.run.write_run` lays out.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from slimcnn.errors import ConfigError
from slimcnn.export._int8 import Int8Spec
from slimcnn.export._packed import PackedLayer, describe
from slimcnn.quantize import KMeansQuantSpec

log = logging.getLogger(__name__)

Format = Literal["onnx", "onnx-int8", "onnx-kmeans", "c"]
FORMATS: tuple[str, ...] = ("onnx", "onnx-int8", "onnx-kmeans", "c")
KMEANS_FORMATS = ("onnx-kmeans", "c")
PARITY_LIMIT = 1e-5


@dataclass(frozen=True)
class ExportSpec:
    """What ``slimcnn export`` writes."""

    format: Format
    kmeans: KMeansQuantSpec | None = None
    """k-means rules for a model that is not a ``.slim`` file (``--bits``/``--prune``)."""
    int8: Int8Spec = field(default_factory=Int8Spec)
    c_prefix: str = "slim_model"
    """C identifier prefix and file stem of the weights (``--format c``)."""
    huffman_ok: bool = True


def is_slim_source(model: str) -> bool:
    """``file:...slim``."""
    return model.startswith("file:") and model.lower().endswith(".slim")


def is_onnx_source(model: str) -> bool:
    """``file:...onnx``: an ONNX Runtime session, which commands that change or train a torch model cannot take."""
    return model.startswith("file:") and model.lower().endswith(".onnx")


def check_export(model: str, spec: ExportSpec, *, task: str | None, data: str | None) -> None:
    """Refuse, in one line naming the flag, what the model or format cannot take (before loading anything).

    Raises:
        ConfigError: unknown ``--format``; a k-means format without ``file:model.slim`` or ``--bits``;
            ``--bits`` for a ``.slim`` model or a non-k-means format; ``onnx-int8`` without
            ``--data``; an ONNX model as input.
    """
    if spec.format not in FORMATS:
        import difflib

        close = difflib.get_close_matches(spec.format, FORMATS, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{spec.format}'.{hint}")
    if is_onnx_source(model):
        raise ConfigError(f"{model} is already ONNX; export takes the torch model or the .slim file it came from")
    slim = is_slim_source(model)
    if spec.format in KMEANS_FORMATS and not slim and spec.kmeans is None:
        raise ConfigError(f"--format {spec.format} needs a k-means quantized model: pass file:model.slim "
                          "(from slimcnn quantize) or add --bits (e.g. --bits 4)")
    if spec.kmeans is not None and slim:
        raise ConfigError(f"{model} is already k-means quantized; drop --bits/--prune")
    if spec.kmeans is not None and spec.format not in KMEANS_FORMATS:
        raise ConfigError(f"--bits/--prune apply to --format onnx-kmeans and c, not {spec.format}")
    if spec.format == "onnx-int8" and data is None:
        raise ConfigError("--format onnx-int8 calibrates on the task's data: add --data "
                          "(e.g. --data cifar10.tar; with --task when the model does not say its task)")


def write_sidecar(path: Path, loaded: Any) -> None:
    from slimcnn._io import write_json
    from slimcnn.models.files import SIDECAR_FORMAT, SIDECAR_VERSION, sidecar_path

    write_json(sidecar_path(path), {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "source": loaded.source,
                                    "info": loaded.info})


def _max_diff(a: list[Any], b: list[Any]) -> float:
    return float(max(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))) for x, y in zip(a, b, strict=True)))


def _torch_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    from slimcnn.measure._inputs import tensors_in

    with torch.inference_mode():
        return [t.float().numpy() for t in tensors_in(model.eval()(x))]


def kmeans_layers(loaded: Any, model: str, spec: ExportSpec) -> tuple[torch.nn.Module, dict[str, PackedLayer], Any]:
    """The decoded model, its packed k-means layers and (for ``--bits``) the QuantizeResult."""
    from slimcnn.export._packed import pack_layers, slim_layers
    from slimcnn.quantize import quantize_model

    if is_slim_source(model):
        return loaded.model, slim_layers(model.removeprefix("file:")), None
    if spec.kmeans is None:
        raise ConfigError(f"--format {spec.format} needs file:model.slim or --bits")
    res = quantize_model(loaded.model, spec.kmeans)
    return res.model.eval(), pack_layers(res.layers), res


def export_to_run(run: Any, loaded: Any, model: str, spec: ExportSpec, example: torch.Tensor, *, task: Any = None,
                  task_name: str | None = None, limit: int | None = None, threads: int | None = None, runs: int = 50,
                  options: dict[str, Any] | None = None, seed: int | None = None) -> Any:
    """Write ``spec.format`` into ``run.path``, measure the written artifact, return the :class:`RunResult`.

    Args:
        run: the open :class:`~slimcnn.run.RunDir`.
        loaded: the model (``LoadedModel``) as given (the ORIGINAL every number is compared with).
        model: its source string.
        spec: what to write.
        example: ``Tensor[1, C, H, W]`` fixing the input size.
        task: a Task to score before/after (required for ``onnx-int8``: calibration).
        task_name: its name for the result.
        limit: score on the first N images.
        threads: ONNX Runtime threads for the latency comparison (None: physical cores).
        runs: interleaved timing rounds.
        options: the command's options (recorded).
        seed: recorded in the environment.
    """
    from slimcnn.export._c import write_c
    from slimcnn.export._onnx import decoded_weights, kmeans_onnx, torch_to_onnx, write_onnx
    from slimcnn.export._ort import OrtModule, compare_onnx_latency
    from slimcnn.export._packed import kernel_weights
    from slimcnn.measure import profile
    from slimcnn.prune import fingerprint
    from slimcnn.run import Measured, Plan, PlanStep, RunResult, environment
    from slimcnn.run._artifacts import compact_source
    from slimcnn.run._measure import summary_line
    from slimcnn.search._stored import stored_input_cost

    t_start = time.perf_counter()
    folder = Path(run.path)
    original = loaded.model.eval()
    # a super-resolution net runs on whole images of any size: its files take any height and width
    any_size = "sr" in (loaded.info.task, task_name)
    details: dict[str, Any] = {"format": spec.format}
    notes: list[str] = []
    plan = None
    after_model: torch.nn.Module | None = None
    after_onnx: bytes | None = None
    original_onnx: bytes | None = None  # the original's fp32 ONNX, exported once: quantised and timed against
    before_cost = dataclasses.replace(profile(original, example), layers=())
    after_cost = before_cost  # a file that holds the model as it is holds it dense
    if promises := compact_source(model):  # a compressed input is counted as its file stores it, as `analyze` does
        stored = stored_input_cost(original, example, promises)
        before_cost = dataclasses.replace(before_cost, params=stored.params, macs=stored.macs,
                                          weight_bytes=stored.weight_bytes)
        if zeros := [p.layer for p in promises if p.kind == "zeros"]:
            name = Path(model.removeprefix("file:")).name
            if spec.format in ("onnx", "onnx-int8"):
                notes.append(f"{name}'s removed kernels are zeros in model.onnx: ONNX Runtime runs them dense "
                             "(params, MACs and bytes after are what the file holds)")
            elif spec.format == "onnx-kmeans":  # a .slim's unshared weights stored as kept kernels
                notes.append(f"model.onnx leaves the removed kernels of {', '.join(zeros)} out, as {name} does, but "
                             "ONNX Runtime decodes them to zeros and runs them dense (params and MACs after are dense)")
    s_before: Any = None
    x_check = torch.cat([example] * 2) if example.dim() == 4 else example
    checked_on = "random example input"
    if spec.format in KMEANS_FORMATS:
        decoded, layers, res = kmeans_layers(loaded, model, spec)
        details["layers"] = describe(layers)
        kbytes = sum(p.payload_bytes for p in layers.values())
        qkeys = {f"{n}.weight" for n in layers}
        sd = decoded.state_dict()
        kernel_ws = kernel_weights(sd, qkeys)  # both formats store these as kept kernels + keep mask
        raw_params = sum(v.numel() for k, v in sd.items() if k not in qkeys | set(kernel_ws) and v.is_floating_point()
                         and not k.endswith(("running_mean", "running_var")))
        details["kmeans_payload_bytes"] = kbytes
        after_cost = dataclasses.replace(dataclasses.replace(profile(decoded, example), layers=()), weight_bytes=int(
            kbytes + sum(w.stored_bytes for w in kernel_ws.values()) + 4 * raw_params))
        if res is not None:
            plan = Plan((PlanStep("kmeans", tuple(layers), dataclasses.asdict(spec.kmeans)),), loaded.source,
                        fingerprint(loaded.model), tuple(example.shape))
        if spec.format == "c":  # a sparse engine skips the all-zero kernels the arrays hold, as `analyze` of a .slim counts
            from slimcnn.run._artifacts import still_convs
            from slimcnn.search.families import kernel_sparse_cost

            info = write_c(folder, layers, sd, prefix=spec.c_prefix)
            details["c"] = dataclasses.asdict(info)
            if convs := still_convs(decoded, [*layers, *(k.removesuffix(".weight") for k in kernel_ws)]):
                params, macs, _ = kernel_sparse_cost(decoded, example, convs)
                after_cost = dataclasses.replace(after_cost, params=params, macs=macs)
            after_model = decoded
            notes.append("the C arrays decode bit-exactly to the k-means model (tested), so the scores here are that model's, run by torch")
        else:
            data = kmeans_onnx(decoded, layers, example, dynamic_spatial=any_size)
            path = write_onnx(folder / "model.onnx", data)
            write_sidecar(path, loaded)
            after_onnx = data
            import onnx

            inits = {i.name for i in onnx.load_from_string(data).graph.initializer}
            sparse = [k for k in kernel_ws if k not in inits]  # decoded in-graph (else left a dense initializer)
            got = decoded_weights(data, sorted(qkeys | set(sparse)))
            exact = (all(np.array_equal(got[f"{n}.weight"], p.decode().numpy()) for n, p in layers.items())
                     and all(np.array_equal(got[k], sd[k].float().numpy()) for k in sparse))
            if dense := [w for k, w in kernel_ws.items() if k not in sparse]:  # counted as the file holds them
                after_cost = dataclasses.replace(after_cost, weight_bytes=after_cost.weight_bytes + sum(
                    4 * sd[w.key].numel() - w.stored_bytes for w in dense))
            reference = torch_to_onnx(decoded, example, keep_batchnorm=True, dynamic_spatial=any_size).SerializeToString()
            sess_k, sess_r = OrtModule(path, threads=1), None
            from slimcnn.measure._onnx import ort_session

            sess_r = ort_session(reference, threads=1)
            out_k = [np.asarray(o) for o in sess_k.session.run(None, {sess_k.input_name: x_check.numpy()})]
            out_r = sess_r.run(None, {sess_r.get_inputs()[0].name: x_check.numpy()})
            ref_t = _torch_outputs(decoded, x_check)
            details["parity"] = {"max_abs_vs_decoded_onnx": _max_diff(out_k, out_r),
                                 "max_abs_vs_decoded_torch": _max_diff(out_k, ref_t),
                                 "max_abs_output": float(max(np.max(np.abs(o)) for o in ref_t)),
                                 "decoders_bit_exact": exact, "limit": PARITY_LIMIT}
            details["parity"]["met"] = exact and details["parity"]["max_abs_vs_decoded_onnx"] <= PARITY_LIMIT
            details["fp32_onnx_bytes"] = len(reference)
            if is_slim_source(model):
                slim_bytes = Path(model.removeprefix("file:")).stat().st_size
                details["slim_bytes"] = slim_bytes
                details["onnx_vs_slim"] = len(data) / slim_bytes
            details["onnx_vs_fp32_onnx"] = len(data) / len(reference)
            if not details["parity"]["met"]:
                notes.append(f"ONNX Runtime parity NOT met: {details['parity']}")
    else:
        fp32 = original_onnx = torch_to_onnx(original, example, dynamic_spatial=any_size).SerializeToString()
        data = fp32
        if spec.format == "onnx-int8":
            if task is None:
                raise ConfigError("--format onnx-int8 needs --data (calibration images)")
            from slimcnn.export._int8 import (
                Int8Quantizer,
                calibration_batches,
                int8_step_params,
                int8_weight_bytes,
            )

            calib = calibration_batches(task, spec.int8.samples)
            # parity on real images: on random ones the activations leave the calibrated ranges and clip
            x_check, checked_on = calib[0][:8], f"{min(8, len(calib[0]))} calibration images"
            with Int8Quantizer(fp32, calib, spec.int8) as quantizer:
                float_layers: list[str] = []
                if spec.int8.float_fallback is None:
                    data = quantizer.quantize()
                else:
                    from slimcnn.export._fallback import float_fallback, sensitivity_table
                    from slimcnn.measure._latency import resolve_threads

                    s_before = task.evaluate(original, limit=limit)
                    fb = float_fallback(quantizer, fp32, task, baseline=s_before, limit=limit,
                                        threads=resolve_threads(threads))
                    data, float_layers = fb.data, fb.float_layers
                    details["float_fallback"] = fb.details
                    chosen = ", ".join(fb.float_layers) or "none"
                    notes.append(f"float fallback ({spec.int8.float_fallback}): kept in float {chosen}; "
                                 f"per-layer sensitivity on {fb.details['sweep_images']} images:\n"
                                 + sensitivity_table(fb.details))
                # plan.json: the int8 step with its recorded activation ranges replays these bytes without data
                params = int8_step_params(quantizer, float_layers)
                details["int8"] = dataclasses.asdict(quantizer.spec)  # reduce_range as decided for this CPU
                int8_layers = [f for f, names in quantizer.layers.items() if f not in float_layers
                               and not set(names) <= set(quantizer.base_exclude)]
            plan = Plan((PlanStep("int8", tuple(int8_layers), params),), loaded.source, fingerprint(loaded.model),
                        tuple(example.shape))
            details["fp32_onnx_bytes"] = len(fp32)
            # the int8 file's initializers: int8 weights, int32 biases, scales and zero points
            after_cost = dataclasses.replace(before_cost, weight_bytes=int8_weight_bytes(data))
        path = write_onnx(folder / "model.onnx", data)
        write_sidecar(path, loaded)
        after_onnx = data
        sess = OrtModule(path, threads=1)
        out = [np.asarray(o) for o in sess.session.run(None, {sess.input_name: x_check.numpy()})]
        ref_t = _torch_outputs(original, x_check)
        details["parity"] = {"max_abs_vs_torch": _max_diff(out, ref_t),
                             "max_abs_output": float(max(np.max(np.abs(o)) for o in ref_t)), "input": checked_on}
    details["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()
                        and not p.name.startswith(".") and p.name != "manifest.json"}
    if after_onnx is not None:
        from slimcnn.models import load_model

        after_model = load_model(f"file:{folder / 'model.onnx'}").model  # the artifact, re-loaded
        before_onnx = original_onnx or torch_to_onnx(original, example, dynamic_spatial=any_size).SerializeToString()
        lat = compare_onnx_latency({"before": before_onnx, "after": after_onnx},
                                   example, threads=threads, runs=runs)
        before_cost = dataclasses.replace(before_cost, latency=lat["before"])
        after_cost = dataclasses.replace(after_cost, latency=lat["after"])
        details["latency_ratio"] = lat["after"].median_ms / lat["before"].median_ms
        details["latency_note"] = "ONNX Runtime, fp32 export of the original vs the written file, interleaved in one run"
        if spec.format == "onnx-int8" and details["latency_ratio"] > 1.02:  # over the ~1 % timing noise
            notes.append(f"the int8 model runs SLOWER than the fp32 one on ONNX Runtime here ({details['latency_ratio']:.2f}x, "
                         "interleaved): on this model and CPU int8 saves weight bytes, not time; keep the fp32 model "
                         "where speed matters")
    s_after = None
    if task is not None:
        if s_before is None:
            s_before = task.evaluate(original, limit=limit)
        s_after = task.evaluate(after_model, limit=limit) if after_model is not None else None
    if "float_fallback" in details and s_before is not None and s_after is not None:
        fb_d = details["float_fallback"]
        fb_d["final_drop"] = s_before.drop_to(s_after)  # re-measured on the written file
        if "target_drop" in fb_d:
            fb_d["final_met"] = bool(fb_d["final_drop"] <= fb_d["target_drop"])
            if not fb_d["final_met"]:
                notes.append(f"float fallback target NOT met: drop {fb_d['final_drop']:.3f} > {fb_d['target_drop']:.3f}")
    before, after = Measured(s_before, before_cost), Measured(s_after, after_cost)
    details["summary"] = summary_line(before, after)
    return RunResult("export", loaded.source, task=task_name, before=before, after=after, plan=plan,
                     options=dict(options or {}), details=details, notes=tuple(notes),
                     seconds=round(time.perf_counter() - t_start, 2), environment=environment(seed))
