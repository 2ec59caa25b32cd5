"""Bad inputs on every command: one ``error:`` line on stderr naming what is wrong, exit code 2, no
traceback, and ``--out`` untouched (absent, or byte-identical where it existed).

Each row fails during validation, before any heavy work. Rows run in-process through
``slimcnn.cli.main`` so the table stays fast; placeholders in ``{braces}`` name the module's
fixtures (``{out}`` is the test's own ``tmp_path/"out"``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from slimcnn.cli import main

M = "slimcnn:tiny_cnn"
CLS = ["slimcnn:lenet5", "--task", "classification", "--data", "digits"]
OUT = ["--out", "{out}"]

PRUNE = ["prune", M, "--ratio", "0.3", "--no-latency", *OUT]
SEARCH = ["search", *CLS, "--max-drop", "1", *OUT]
TRAIN = ["train", *CLS, "--steps", "5", *OUT]
EVAL = ["evaluate", *CLS]
QUANT = ["quantize", M, "--bits", "8", "--no-onnx", *OUT]
DECOMP = ["decompose", M, "--runtime", "torch", *OUT]
COMPRESS = ["compress", *CLS, "--max-drop", "1", "--macs", "0.5x", *OUT]


def row(rid: str, argv: list[str], expect: str, code: int = 2, marks: Any = ()) -> Any:
    return pytest.param(argv, expect, code, id=rid, marks=marks)


def with_(base: list[str], *extra: str, drop: tuple[str, ...] = ()) -> list[str]:
    """``base`` plus ``extra`` options, without the options (and their values) named in ``drop``."""
    out: list[str] = []
    skip = False
    for i, a in enumerate(base):
        if skip:
            skip = False
            continue
        if a in drop:
            skip = i + 1 < len(base) and not base[i + 1].startswith("--")
            continue
        out.append(a)
    return [*out, *extra]


def budget_rows(cmd: str, base: list[str]) -> list[Any]:
    """The one budget grammar: bare numbers, wrong units, ratios outside (0, 1], negatives."""
    rows = []
    for flag, bad, why in (
        ("--macs", "0.5", "ambiguous"), ("--macs", "0x", "ratio"), ("--macs", "1.5x", "ratio"),
        ("--macs", "-1", "--macs"), ("--macs", "150%", "ratio"), ("--macs", "4MB", "not a unit"),
        ("--macs", "12ms", "not a unit"), ("--macs", "lots", "--macs"), ("--macs", "-5M", "above 0"),
        ("--macs", "0M", "above 0"),
    ):
        rows.append(row(f"{cmd}-macs-{bad}", with_(base, flag, bad), why if why.startswith("--") else flag))
    return rows


ROWS = [
    # ------------------------------------------------------------------ top level
    row("bare-unknown-command", ["frobnicate"], "frobnicate"),
    row("misspelled-command", ["prnue", M, "--ratio", "0.3", *OUT], "prnue"),
    row("unknown-top-option", ["--frob"], "--frob"),
    row("missing-model-argument", ["analyze"], "MODEL"),
    row("unknown-option-analyze", ["analyze", M, "--bogus"], "--bogus"),
    row("missing-out", ["prune", M, "--ratio", "0.3"], "--out"),
    row("missing-plan-argument", ["apply"], "PLAN"),
    row("apply-missing-model-argument", ["apply", "{run}/plan.json"], "MODEL"),
    row("extra-argument", ["analyze", M, "extra"], "extra"),
    row("option-missing-value", ["prune", M, *OUT, "--ratio"], "--ratio"),
    row("float-not-a-number", with_(PRUNE, "--ratio", "abc", drop=("--ratio",)), "--ratio"),
    row("int-not-a-number", with_(TRAIN, "--steps", "ten", drop=("--steps",)), "--steps"),
    row("demo-unknown-option", ["demo", "--bogus"], "--bogus"),
    row("demo-extra-argument", ["demo", "now"], "now"),
    row("evaluate-missing-model", ["evaluate"], "MODEL"),
    row("quantize-missing-model", ["quantize"], "MODEL"),
    row("search-missing-out", with_(SEARCH, drop=("--out",)), "--out"),
    row("train-missing-steps", with_(TRAIN, drop=("--steps",)), "--steps"),
    row("decompose-missing-out", ["decompose", M], "--out"),
    row("prune-misspelled-option", with_(PRUNE, "--ratios", "0.3"), "--ratios"),
    # the field's word for an option names the command's own option (click alone suggested --scale for --sram)
    row("quantize-sram-means-weight-bytes", with_(QUANT, "--sram", "4MB"), "--sram; the weight memory budget"),
    row("prune-flops-means-macs", with_(PRUNE, "--flops=0.5x", drop=("--ratio",)), "No such option: --flops; the compute budget is --macs"),
    row("compress-epochs-means-finetune-steps", with_(COMPRESS, "--epochs", "3"), "--finetune-steps"),
    row("analyze-sram-has-no-budget", ["analyze", M, "--sram", "4MB"], "No such option: --sram (Possible"),
    row("prune-weight-bytes-means-params", with_(PRUNE, "--weight-bytes", "4MB", drop=("--ratio",)),
        "No such option: --weight-bytes; prune has no weight-bytes budget (search, quantize and compress take"),
    row("train-epochs-means-steps", with_(TRAIN, "--epochs", "3"), "training length is --steps"),
    # ------------------------------------------------------------------ analyze
    row("analyze-unknown-zoo-name", ["analyze", "slimcnn:resnet21", "--no-latency"], "resnet21"),
    row("analyze-unknown-prefix", ["analyze", "foo:bar", "--no-latency"], "foo"),
    row("analyze-unknown-torchvision", ["analyze", "torchvision:notamodel", "--no-latency"], "notamodel"),
    row("analyze-unknown-python-module", ["analyze", "python:nosuchpkg.mod:factory", "--no-latency"], "nosuchpkg"),
    row("analyze-missing-file", ["analyze", "file:{tmp}/missing.pt", "--no-latency"], "missing.pt"),
    row("analyze-file-not-a-model", ["analyze", "file:{tmp}/notes.txt", "--no-latency"], "notes.txt"),
    row("analyze-weights-missing", ["analyze", M, "--weights", "{tmp}/nowts.pt", "--no-latency"], "nowts.pt"),
    row("analyze-weights-not-weights", ["analyze", M, "--weights", "{tmp}/notes.txt", "--no-latency"], "notes.txt"),
    row("analyze-arch-without-file", ["analyze", M, "--arch", "slimcnn:lenet5", "--no-latency"], "--arch"),
    row("analyze-input-text", ["analyze", M, "--input", "big", "--no-latency"], "--input"),
    row("analyze-input-zero-dim", ["analyze", M, "--input", "1x3x0x32", "--no-latency"], "--input"),
    row("analyze-input-negative", ["analyze", M, "--input", "1x3x-2x32", "--no-latency"], "--input"),
    row("analyze-input-huge", ["analyze", M, "--input", "1x1x100000x100000", "--no-latency"], "--input"),
    row("analyze-input-wrong-rank", ["analyze", M, "--input", "3x32", "--no-latency"], "--input"),
    row("analyze-input-wrong-channels", ["analyze", M, "--input", "1x7x32x32", "--no-latency"], "--input"),
    row("analyze-input-no-batch", ["analyze", M, "--input", "3x32x32", "--no-latency"], "e.g. --input 1x3x32x32"),
    row("analyze-runtime", ["analyze", M, "--runtime", "tflite"], "--runtime"),
    row("analyze-threads-0", ["analyze", M, "--threads", "0"], "--threads"),
    row("analyze-runs-0", ["analyze", M, "--runs", "0"], "--runs"),
    row("analyze-bits-0", ["analyze", M, "--bits", "0", "--no-latency"], "--bits"),
    row("analyze-bits-65", ["analyze", M, "--bits", "65", "--no-latency"], "--bits"),
    row("analyze-scale-0", ["analyze", "slimcnn:tiny_sr", "--scale", "0", "--no-latency"], "--scale"),
    # ------------------------------------------------------------------ prune
    row("prune-unknown-model", ["prune", "slimcnn:nonet", *PRUNE[2:]], "nonet"),
    row("prune-missing-file-model", ["prune", "file:{tmp}/missing.pt", *PRUNE[2:]], "missing.pt"),
    row("prune-weights-missing", with_(PRUNE, "--weights", "{tmp}/nowts.pt"), "nowts.pt"),
    row("prune-ratio-0", with_(PRUNE, "--ratio", "0", drop=("--ratio",)), "--ratio"),
    row("prune-ratio-1", with_(PRUNE, "--ratio", "1", drop=("--ratio",)), "--ratio"),
    row("prune-ratio-1.5", with_(PRUNE, "--ratio", "1.5", drop=("--ratio",)), "--ratio"),
    row("prune-ratio-negative", with_(PRUNE, "--ratio", "-0.3", drop=("--ratio",)), "--ratio"),
    row("prune-no-ratio-no-macs", with_(PRUNE, drop=("--ratio",)), "--ratio"),
    row("prune-ratio-and-macs", with_(PRUNE, "--macs", "0.5x"), "--macs"),
    *budget_rows("prune", with_(PRUNE, drop=("--ratio",))),
    row("prune-macs-above-model", with_(PRUNE, "--macs", "300G", drop=("--ratio",)), "--macs"),
    row("prune-criterion", with_(PRUNE, "--criterion", "magic"), "magic"),
    row("prune-criterion-needs-data", with_(PRUNE, "--criterion", "taylor"), "--data"),
    row("prune-granularity", with_(PRUNE, "--granularity", "layer"), "--granularity"),
    row("prune-groups-1", with_(PRUNE, "--granularity", "grouped", "--groups", "1", drop=("--ratio",)), "--groups"),
    row("prune-groups-0", with_(PRUNE, "--granularity", "grouped", "--groups", "0", drop=("--ratio",)), "--groups"),
    row("prune-kernel-criterion", with_(PRUNE, "--granularity", "kernel", "--criterion", "chip"), "chip"),
    row("prune-kernel-no-ratio", with_(PRUNE, "--granularity", "kernel", drop=("--ratio",)), "--ratio"),
    row("prune-kernel-macs", with_(PRUNE, "--granularity", "grouped", "--macs", "0.5x", drop=("--ratio",)),
        "--macs"),
    row("prune-kernel-compensate", with_(PRUNE, "--granularity", "kernel", "--compensate", "mean"), "--compensate"),
    row("prune-compensate-no-data", with_(PRUNE, "--compensate", "mean"), "--compensate"),
    row("prune-scope", with_(PRUNE, "--scope", "world"), "--scope"),
    row("prune-reduce", with_(PRUNE, "--reduce", "median"), "--reduce"),
    row("prune-round-to-0", with_(PRUNE, "--round-to", "0"), "--round-to"),
    row("prune-round-to-text", with_(PRUNE, "--round-to", "eight"), "--round-to"),
    row("prune-calib-0", with_(PRUNE, "--calib", "0"), "--calib"),
    row("prune-limit-0", with_(PRUNE, "--limit", "0"), "--limit"),
    row("prune-task-without-data", with_(PRUNE, "--task", "classification"), "--data"),
    row("prune-task-without-data", with_(PRUNE, "--task", "classification"), "--data"),
    # --data alone is the model's own task; a python: factory does not say one
    row("prune-data-model-without-task", ["prune", "python:torchvision.models:resnet18", "--ratio", "0.3", "--no-latency",
                                          "--data", "digits", *OUT], "--task"),
    row("prune-unknown-task", with_(PRUNE, "--task", "segmentation", "--data", "digits"), "segmentation"),
    row("prune-data-missing", with_(PRUNE, "--task", "classification", "--data", "{tmp}/nodata"), "nodata"),
    row("prune-input-text", with_(PRUNE, "--input", "huge"), "--input"),
    row("prune-input-zero", with_(PRUNE, "--input", "0x3x32x32"), "--input"),
    row("prune-input-huge", with_(PRUNE, "--input", "1x1x100000x100000"), "--input"),
    row("prune-seed-text", with_(PRUNE, "--seed", "x"), "--seed"),
    row("prune-input-wrong-rank", with_(PRUNE, "--input", "3x32"), "--input"),
    row("prune-input-wrong-channels", with_(PRUNE, "--input", "1x7x32x32"), "--input"),
    row("prune-file-model-is-folder", ["prune", "file:{foreign}", *PRUNE[2:]], "not a file"),
    row("prune-weights-is-folder", with_(PRUNE, "--weights", "{foreign}"), "not a file"),
    row("prune-scale-0", ["prune", "slimcnn:tiny_sr", "--scale", "0", *PRUNE[2:]], "--scale"),
    row("prune-arch-without-file", with_(PRUNE, "--arch", "slimcnn:lenet5"), "--arch"),
    row("prune-macs-bare-large", with_(PRUNE, "--macs", "300", drop=("--ratio",)), "--macs"),
    row("prune-json-ratio-2", with_(PRUNE, "--json", "--ratio", "2", drop=("--ratio",)), "--ratio"),
    row("prune-out-empty", with_(PRUNE, "--out", "", drop=("--out",)), "--out"),
    row("prune-out-equals-empty", [*with_(PRUNE, drop=("--out",)), "--out="], "--out"),
    row("prune-data-empty", with_(PRUNE, "--task", "classification", "--data", ""), "--data"),
    row("evaluate-data-empty", with_(EVAL, "--data", "", drop=("--data",)), "--data"),
    row("train-weights-empty", with_(TRAIN, "--weights", " "), "--weights"),
    row("prune-force-and-resume", with_(PRUNE, "--force", "--resume"), "--force"),
    row("prune-out-is-file", with_(PRUNE, "--out", "{tmp}/afile.txt", drop=("--out",)), "--out"),
    row("prune-out-inside-data", with_(PRUNE, "--task", "classification", "--data", "{data}", "--out",
                                       "{data}/sub", drop=("--out",)), "--out"),
    row("prune-out-is-data", with_(PRUNE, "--task", "classification", "--data", "{data}", "--out", "{data}",
                                   drop=("--out",)), "--out"),
    row("prune-out-holds-file-model", ["prune", "file:{model_dir}/model.pt", "--ratio", "0.3", "--no-latency",
                                       "--out", "{model_dir}"], "--out"),
    row("prune-out-holds-weights", with_(PRUNE, "--weights", "{model_dir}/model.pt", "--out", "{model_dir}",
                                         drop=("--out",)), "--out"),
    row("prune-out-foreign", with_(PRUNE, "--out", "{foreign}", drop=("--out",)), "did not write"),
    row("prune-out-other-options", with_(PRUNE, "--ratio", "0.5", "--out", "{run}", drop=("--ratio", "--out")),
        "--force"),
    row("prune-out-other-command", ["train", *CLS, "--steps", "5", "--out", "{run}"], "--resume"),
    # ------------------------------------------------------------------ search
    row("search-no-target", with_(SEARCH, drop=("--max-drop",)), "--max-drop"),
    row("search-model-without-task", ["search", "python:torchvision.models:resnet18", "--data", "digits",
                                      "--max-drop", "1", "--macs", "0.5x", *OUT], "--task"),
    row("search-missing-data", with_(SEARCH, drop=("--data",)), "--data"),
    row("search-unknown-task", with_(SEARCH, "--task", "segmentation", drop=("--task",)), "--task"),
    row("search-data-missing", with_(SEARCH, "--data", "{tmp}/nodata", drop=("--data",)), "nodata"),
    row("search-val-data-missing", with_(SEARCH, "--val-data", "{tmp}/novaldata"), "novaldata"),
    row("search-train-data-missing", with_(SEARCH, "--train-data", "{tmp}/notrain"), "notrain"),
    row("search-unknown-model", ["search", "slimcnn:nonet", *SEARCH[2:]], "nonet"),
    row("search-weights-missing", with_(SEARCH, "--weights", "{tmp}/nowts.pt"), "nowts.pt"),
    *budget_rows("search", SEARCH),
    row("search-params-bare", with_(SEARCH, "--params", "1000"), "--params"),
    row("search-params-bytes-unit", with_(SEARCH, "--params", "4MB"), "--params"),
    row("search-params-2x", with_(SEARCH, "--params", "2x"), "--params"),
    row("search-params-0x", with_(SEARCH, "--params", "0x"), "--params"),
    row("search-weight-bytes-bare", with_(SEARCH, "--weight-bytes", "4"), "--weight-bytes"),
    row("search-weight-bytes-count-unit", with_(SEARCH, "--weight-bytes", "4M"), "--weight-bytes"),
    row("search-weight-bytes-time-unit", with_(SEARCH, "--weight-bytes", "12ms"), "--weight-bytes"),
    row("search-weight-bytes-1.5x", with_(SEARCH, "--weight-bytes", "1.5x"), "--weight-bytes"),
    row("search-weight-bytes-negative", with_(SEARCH, "--weight-bytes", "-4MB"), "--weight-bytes"),
    row("search-latency-bare", with_(SEARCH, "--latency", "12"), "--latency"),
    row("search-latency-bytes-unit", with_(SEARCH, "--latency", "12MB"), "--latency"),
    row("search-latency-0x", with_(SEARCH, "--latency", "0x"), "--latency"),
    row("search-latency-negative", with_(SEARCH, "--latency", "-1ms"), "--latency"),
    row("search-latency-150pct", with_(SEARCH, "--latency", "150%"), "--latency"),
    row("search-max-drop-negative", with_(SEARCH, "--max-drop", "-1", drop=("--max-drop",)), "--max-drop"),
    row("search-max-drop-150pct", with_(SEARCH, "--max-drop", "150%", drop=("--max-drop",)), "--max-drop"),
    row("search-max-drop-100pct", with_(SEARCH, "--max-drop", "100%", drop=("--max-drop",)), "--max-drop"),
    row("search-max-drop-text", with_(SEARCH, "--max-drop", "some", drop=("--max-drop",)), "--max-drop"),
    row("search-max-drop-unit", with_(SEARCH, "--max-drop", "1MB", drop=("--max-drop",)), "--max-drop"),
    row("search-method", with_(SEARCH, "--method", "distill"), "distill"),
    row("search-strategy", with_(SEARCH, "--strategy", "random"), "random"),
    row("search-strategy-method-mismatch", with_(SEARCH, "--method", "lowrank", "--strategy", "cpo"), "--strategy"),
    row("search-criterion", with_(SEARCH, "--criterion", "magic"), "magic"),
    row("search-runtime", with_(SEARCH, "--runtime", "tflite"), "--runtime"),
    row("search-device-unknown", with_(SEARCH, "--device", "tpu"), "--device"),
    row("search-device-bad-index", with_(SEARCH, "--device", "cuda:99"), "--device"),
    row("search-objective", with_(SEARCH, "--objective", "speed"), "--objective"),
    row("search-finetune-steps-negative", with_(SEARCH, "--finetune-steps", "-1"), "--finetune-steps"),
    row("search-limit-0", with_(SEARCH, "--limit", "0"), "--limit"),
    row("search-workers-0", with_(SEARCH, "--workers", "0"), "--workers"),
    row("search-iterations-0", with_(SEARCH, "--iterations", "0"), "--iterations"),
    row("search-threads-0", with_(SEARCH, "--threads", "0"), "--threads"),
    row("search-lr-negative", with_(SEARCH, "--lr", "-1"), "--lr"),
    row("search-lr-0", with_(SEARCH, "--lr", "0"), "--lr"),
    row("search-alpha-negative", with_(SEARCH, "--alpha", "-1"), "--alpha"),
    row("search-amounts-text", with_(SEARCH, "--amounts", "a,b"), "--amounts"),
    row("search-amounts-negative", with_(SEARCH, "--amounts", "0.25,-0.5"), "--amounts"),
    row("search-round-to-0", with_(SEARCH, "--round-to", "0"), "--round-to"),
    row("search-accumulate-not-cpo", with_(SEARCH, "--accumulate"), "--accumulate"),
    row("search-compensate-lowrank", with_(SEARCH, "--method", "lowrank", "--compensate", "mean"), "--compensate"),
    row("search-amounts-kmeans-fraction", with_(SEARCH, "--method", "kmeans", "--amounts", "0.5"), "--amounts"),
    row("search-amounts-kmeans-17-bits", with_(SEARCH, "--method", "kmeans", "--amounts", "8,17"), "--amounts"),
    row("search-amounts-prune-1", with_(SEARCH, "--amounts", "0.5,1"), "--amounts"),
    row("search-criterion-kernel", with_(SEARCH, "--method", "kernel", "--criterion", "chip"), "--criterion"),
    row("search-criterion-lowrank", with_(SEARCH, "--method", "lowrank", "--criterion", "l1"), "--criterion"),
    row("search-metric-classification", with_(SEARCH, "--metric", "map50"), "--metric"),
    row("search-scale-0", with_(SEARCH, "--scale", "0"), "--scale"),
    row("search-input-wrong-channels", with_(SEARCH, "--input", "1x3x32x32"), "--input"),
    row("search-json-latency-bare", with_(SEARCH, "--json", "--latency", "5"), "--latency"),
    row("search-out-empty", with_(SEARCH, "--out", "", drop=("--out",)), "--out"),
    row("search-input-text", with_(SEARCH, "--input", "wide"), "--input"),
    row("search-input-huge", with_(SEARCH, "--input", "1x1x100000x100000"), "--input"),
    row("search-num-classes-0", with_(SEARCH, "--num-classes", "0"), "--num-classes"),
    row("search-force-and-resume", with_(SEARCH, "--force", "--resume"), "--force"),
    row("search-out-is-file", with_(SEARCH, "--out", "{tmp}/afile.txt", drop=("--out",)), "--out"),
    row("search-out-inside-data", ["search", "slimcnn:resnet20", "--task", "classification", "--data", "{data}",
                                   "--max-drop", "1", "--out", "{data}/runs/a"], "--out"),
    row("search-out-foreign", with_(SEARCH, "--out", "{foreign}", drop=("--out",)), "did not write"),
    row("search-out-other-command", with_(SEARCH, "--out", "{run}", drop=("--out",)), "--force"),
    # ------------------------------------------------------------------ an ONNX file where a torch model is changed
    # (compress claimed "met" at 0 MACs -> 0 MACs on one, prune stopped on an IndexError, train on an empty optimizer)
    *(row(f"{cmd}-onnx-model", [cmd, *([("{run}/plan.json")] if cmd == "apply" else []), "file:{run}/model.onnx",
                                *extra, *OUT], "is an ONNX file")
      for cmd, extra in (("compress", ["--data", "digits", "--max-drop", "1", "--macs", "0.5x"]),
                         ("prune", ["--ratio", "0.3"]), ("search", ["--data", "digits", "--max-drop", "1"]),
                         ("train", ["--data", "digits", "--steps", "5"]), ("quantize", ["--bits", "4"]), ("decompose", []),
                         ("apply", []))),
    row("weights-onnx-file", ["analyze", M, "--weights", "{run}/model.onnx", "--no-latency"], "is an ONNX file"),
    row("weights-torchscript", ["analyze", M, "--weights", "{tmp}/scripted.pt", "--no-latency"], "TorchScript archive"),
    # a TorchScript archive: no layer hooks, no pickling (tracebacks in analyze, prune, train, export)
    *(row(f"{cmd}-torchscript-model", [cmd, "file:{tmp}/scripted.pt", *extra], "is a TorchScript archive")
      for cmd, extra in (("analyze", ["--no-latency"]), ("prune", ["--ratio", "0.3", *OUT]),
                         ("export", ["--format", "onnx", *OUT]))),
    # ------------------------------------------------------------------ apply
    row("apply-result-json", ["apply", "{run}/result.json", M, *OUT], "result.json"),
    row("apply-not-json", ["apply", "{tmp}/notes.txt", M, *OUT], "not JSON"),
    row("apply-json-not-plan", ["apply", "{tmp}/list.json", M, *OUT], "plan"),
    row("apply-missing-plan", ["apply", "{tmp}/noplan.json", M, *OUT], "noplan.json"),
    row("apply-folder-without-plan", ["apply", "{foreign}", M, *OUT], "plan"),
    row("apply-plan-other-model", ["apply", "{run}/plan.json", "slimcnn:lenet5", *OUT], "plan was made on"),
    row("apply-unknown-model", ["apply", "{run}/plan.json", "slimcnn:nonet", *OUT], "nonet"),
    row("apply-input-text", ["apply", "{run}/plan.json", M, "--input", "tall", *OUT], "--input"),
    row("apply-input-zero", ["apply", "{run}/plan.json", M, "--input", "1x3x32x0", *OUT], "--input"),
    row("apply-task-without-data", ["apply", "{run}/plan.json", M, "--task", "classification", *OUT], "--data"),
    row("apply-unknown-task", ["apply", "{run}/plan.json", M, "--task", "segmentation", "--data", "digits", *OUT],
        "--task"),
    row("apply-input-wrong-channels", ["apply", "{run}/plan.json", M, "--input", "1x7x32x32", *OUT], "--input"),
    row("apply-weights-missing", ["apply", "{run}/plan.json", M, "--weights", "{tmp}/nowts.pt", *OUT], "nowts.pt"),
    row("apply-force-and-resume", ["apply", "{run}/plan.json", M, "--force", "--resume", *OUT], "--force"),
    row("apply-out-is-file", ["apply", "{run}/plan.json", M, "--out", "{tmp}/afile.txt"], "--out"),
    row("apply-out-foreign", ["apply", "{run}/plan.json", M, "--out", "{foreign}"], "did not write"),
    row("apply-out-other-command", ["apply", "{run}/plan.json", M, "--no-latency", "--out", "{run}"], "--force"),
    # ------------------------------------------------------------------ train
    row("train-steps-0", with_(TRAIN, "--steps", "0", drop=("--steps",)), "--steps"),
    row("train-steps-negative", with_(TRAIN, "--steps", "-5", drop=("--steps",)), "--steps"),
    row("train-lr-negative", with_(TRAIN, "--lr", "-1"), "--lr"),
    row("train-lr-0", with_(TRAIN, "--lr", "0"), "--lr"),
    row("train-batch-size-0", with_(TRAIN, "--batch-size", "0"), "--batch-size"),
    row("train-limit-0", with_(TRAIN, "--limit", "0"), "--limit"),
    row("train-warmup-negative", with_(TRAIN, "--warmup-steps", "-1"), "--warmup-steps"),
    row("train-checkpoint-every-negative", with_(TRAIN, "--checkpoint-every", "-1"), "--checkpoint-every"),
    row("train-optimizer", with_(TRAIN, "--optimizer", "rmsprop"), "--optimizer"),
    row("train-schedule", with_(TRAIN, "--schedule", "linear"), "--schedule"),
    row("train-device", with_(TRAIN, "--device", "tpu"), "--device"),
    row("train-device-cuda-index", with_(TRAIN, "--device", "cuda:99"), "--device"),
    row("train-unknown-task", with_(TRAIN, "--task", "segmentation", drop=("--task",)), "--task"),
    row("train-missing-data", with_(TRAIN, drop=("--data",)), "--data"),
    row("train-data-missing", with_(TRAIN, "--data", "{tmp}/nodata", drop=("--data",)), "nodata"),
    row("train-train-data-missing", with_(TRAIN, "--train-data", "{tmp}/notrain"), "notrain"),
    row("train-val-data-missing", with_(TRAIN, "--val-data", "{tmp}/novaldata"), "novaldata"),
    row("train-unknown-model", ["train", "slimcnn:nonet", *TRAIN[2:]], "nonet"),
    row("train-weights-missing", with_(TRAIN, "--weights", "{tmp}/nowts.pt"), "nowts.pt"),
    row("train-classifier-as-sr", with_(TRAIN, "--task", "sr", "--data", "photos", drop=("--task", "--data")),
        "--task"),
    row("train-force-and-resume", with_(TRAIN, "--force", "--resume"), "--force"),
    row("train-scale-0", ["train", "slimcnn:tiny_sr", "--data", "photos", "--steps", "5", "--scale", "0", *OUT],
        "--scale"),
    row("train-json-steps-0", with_(TRAIN, "--json", "--steps", "0", drop=("--steps",)), "--steps"),
    row("train-out-empty", with_(TRAIN, "--out", "", drop=("--out",)), "--out"),
    row("train-out-is-file", with_(TRAIN, "--out", "{tmp}/afile.txt", drop=("--out",)), "--out"),
    row("train-out-foreign", with_(TRAIN, "--out", "{foreign}", drop=("--out",)), "did not write"),
    row("train-out-inside-data", ["train", "slimcnn:resnet20", "--task", "classification", "--data", "{data}",
                                  "--steps", "5", "--out", "{data}/cat/x"], "--out"),
    row("train-out-holds-file-model", ["train", "file:{model_dir}/model.pt", "--task", "classification",
                                       "--data", "digits", "--steps", "5", "--out", "{model_dir}"], "--out"),
    # ------------------------------------------------------------------ evaluate
    row("evaluate-classifier-as-sr", ["evaluate", "slimcnn:lenet5", "--task", "sr", "--data", "photos"], "--task"),
    row("evaluate-sr-on-class-folders", ["evaluate", "slimcnn:fsrcnn", "--data", "{data}"], "subfolders cat, dog hold images"),
    row("evaluate-class-mismatch", ["evaluate", "slimcnn:resnet20", "--data", "{data}"], "class"),
    row("evaluate-unknown-task", with_(EVAL, "--task", "segmentation", drop=("--task",)), "--task"),
    row("evaluate-not-an-image", ["evaluate", "slimcnn:lenet5", "--data", "{tmp}/broken"],
        "cat/fake.png (not an image file PIL can read): remove it"),
    row("evaluate-truncated-image", ["evaluate", "slimcnn:lenet5", "--data", "{tmp}/truncated"], "dog/cut.png"),
    row("evaluate-missing-data", with_(EVAL, drop=("--data",)), "--data"),
    row("evaluate-data-missing", with_(EVAL, "--data", "{tmp}/nodata", drop=("--data",)), "nodata"),
    row("evaluate-unknown-builtin-data", with_(EVAL, "--data", "mnist", drop=("--data",)), "mnist"),
    row("evaluate-limit-0", with_(EVAL, "--limit", "0"), "--limit"),
    row("evaluate-batch-size-0", with_(EVAL, "--batch-size", "0"), "--batch-size"),
    row("evaluate-device", with_(EVAL, "--device", "tpu"), "--device"),
    row("evaluate-unknown-model", ["evaluate", "slimcnn:nonet", *EVAL[2:]], "nonet"),
    row("evaluate-weights-missing", with_(EVAL, "--weights", "{tmp}/nowts.pt"), "nowts.pt"),
    row("evaluate-sr-on-digits", ["evaluate", "slimcnn:tiny_sr", "--data", "digits"], "digits"),
    row("evaluate-scale-0", ["evaluate", "slimcnn:tiny_sr", "--scale", "0", "--data", "photos"], "--scale"),
    row("evaluate-detection-on-digits", with_(EVAL, "--task", "detection", drop=("--task",)), "digits"),
    row("evaluate-json-limit-0", with_(EVAL, "--json", "--limit", "0"), "--limit"),
    # ------------------------------------------------------------------ quantize
    row("quantize-no-bits", with_(QUANT, drop=("--bits",)), "--bits"),
    row("quantize-bits-0", with_(QUANT, "--bits", "0", drop=("--bits",)), "0"),
    row("quantize-bits-17", with_(QUANT, "--bits", "17", drop=("--bits",)), "17"),
    row("quantize-bits-text", with_(QUANT, "--bits", "eight", drop=("--bits",)), "eight"),
    row("quantize-prune-text", with_(QUANT, "--prune", "conv*=lots"), "lots"),
    row("quantize-method", with_(QUANT, "--method", "magic"), "magic"),
    row("quantize-codebook", with_(QUANT, "--codebook", "fp8"), "fp8"),
    row("quantize-weight-bytes-no-data", with_(QUANT, "--weight-bytes", "4KB", drop=("--bits",)), "--data"),
    row("quantize-task-without-data", with_(QUANT, "--task", "classification"), "--data"),
    row("quantize-finetune-no-data", with_(QUANT, "--finetune-steps", "5"), "--data"),
    row("quantize-global-prune-0", with_(QUANT, "--global-prune", "0"), "--global-prune"),
    row("quantize-global-prune-half", with_(QUANT, "--global-prune", "0.5"), "--global-prune"),
    row("quantize-limit-0", with_(QUANT, "--limit", "0"), "--limit"),
    row("quantize-max-drop-negative", with_(QUANT, "--task", "classification", "--data", "digits", "--max-drop", "-1"),
        "--max-drop"),
    row("quantize-finetune-negative", with_(QUANT, "--finetune-steps", "-1"), "--finetune-steps"),
    row("quantize-bits-no-value", with_(QUANT, "--bits", "conv1=", drop=("--bits",)), "conv1"),
    row("quantize-weight-bytes-text", with_(QUANT, "--task", "classification", "--data", "digits", "--weight-bytes",
                                            "lots", drop=("--bits",)), "--weight-bytes"),
    row("quantize-weight-bytes-bare", with_(QUANT, "--task", "classification", "--data", "digits", "--weight-bytes",
                                            "0.5", drop=("--bits",)), "--weight-bytes"),
    row("quantize-force-and-resume", with_(QUANT, "--force", "--resume"), "--force"),
    row("quantize-out-inside-data", with_(QUANT, "--task", "classification", "--data", "{data}", "--out", "{data}/q",
                                          drop=("--out",)), "--out"),
    row("quantize-unknown-model", ["quantize", "slimcnn:nonet", *QUANT[2:]], "nonet"),
    row("quantize-weights-missing", with_(QUANT, "--weights", "{tmp}/nowts.pt"), "nowts.pt"),
    row("quantize-out-is-file", with_(QUANT, "--out", "{tmp}/afile.txt", drop=("--out",)), "--out"),
    row("quantize-out-foreign", with_(QUANT, "--out", "{foreign}", drop=("--out",)), "--out"),
    row("quantize-out-holds-file-model", ["quantize", "file:{model_dir}/model.pt", "--bits", "8", "--out",
                                          "{model_dir}"], "--out"),
    # ------------------------------------------------------------------ decompose
    row("decompose-freeze", with_(DECOMP, "--freeze", "all"), "--freeze"),
    row("decompose-ratio-0", with_(DECOMP, "--ratio", "0"), "--ratio"),
    row("decompose-ratio-negative", with_(DECOMP, "--ratio", "-2"), "--ratio"),
    row("decompose-rank-0", with_(DECOMP, "--rank", "0"), "--rank"),
    row("decompose-energy-0", with_(DECOMP, "--energy", "0"), "--energy"),
    row("decompose-energy-1.5", with_(DECOMP, "--energy", "1.5"), "--energy"),
    row("decompose-rank-multiple-0", with_(DECOMP, "--rank-multiple", "0"), "--rank-multiple"),
    row("decompose-runtime", with_(DECOMP, "--runtime", "tflite", drop=("--runtime",)), "--runtime"),
    row("decompose-threads-0", with_(DECOMP, "--threads", "0"), "--threads"),
    row("decompose-scan-runs-0", with_(DECOMP, "--scan-runs", "0"), "--scan-runs"),
    row("decompose-confirm-runs-0", with_(DECOMP, "--confirm-runs", "0"), "--confirm-runs"),
    row("decompose-e2e-runs-0", with_(DECOMP, "--e2e-runs", "0"), "--e2e-runs"),
    row("decompose-min-speedup-0", with_(DECOMP, "--min-speedup", "0"), "--min-speedup"),
    row("decompose-input-wrong-channels", with_(DECOMP, "--input", "1x7x32x32"), "--input"),
    row("decompose-force-and-resume", with_(DECOMP, "--force", "--resume"), "--force"),
    row("decompose-out-holds-file-model", ["decompose", "file:{model_dir}/model.pt", "--runtime", "torch", "--out",
                                           "{model_dir}"], "--out"),
    row("decompose-out-inside-data", with_(DECOMP, "--task", "classification", "--data", "{data}", "--out",
                                           "{data}/d", drop=("--out",)), "--out"),
    row("decompose-finetune-no-data", with_(DECOMP, "--finetune-steps", "5"), "--data"),
    row("decompose-task-without-data", with_(DECOMP, "--task", "classification"), "--data"),
    row("decompose-val-data-missing", with_(DECOMP, "--task", "classification", "--data", "digits",
                                            "--val-data", "{tmp}/novaldata"), "novaldata"),
    row("decompose-lr-negative", with_(DECOMP, "--lr", "-1"), "--lr"),
    row("decompose-limit-0", with_(DECOMP, "--limit", "0"), "--limit"),
    row("decompose-input-text", with_(DECOMP, "--input", "square"), "--input"),
    row("decompose-unknown-model", ["decompose", "slimcnn:nonet", *DECOMP[2:]], "nonet"),
    row("decompose-out-is-file", with_(DECOMP, "--out", "{tmp}/afile.txt", drop=("--out",)), "--out"),
    row("decompose-out-foreign", with_(DECOMP, "--out", "{foreign}", drop=("--out",)), "--out"),
    # ------------------------------------------------------------------ compress
    row("compress-no-hardware-target", with_(COMPRESS, drop=("--macs",)), "hardware target"),
    row("compress-no-max-drop", with_(COMPRESS, drop=("--max-drop",)), "--max-drop"),
    row("compress-train-data-missing", with_(COMPRESS, "--train-data", "{tmp}/notrain"), "notrain"),
    row("compress-bare-macs", with_(COMPRESS, "--macs", "0.5", drop=("--macs",)), "ambiguous"),
    row("compress-bad-bytes-unit", with_(COMPRESS, "--weight-bytes", "4ms"), "--weight-bytes"),
    row("compress-activation-ratio", with_(COMPRESS, "--activation-bytes", "2x"), "--activation-bytes"),
    row("compress-drop-negative", with_(COMPRESS, "--max-drop", "-1", drop=("--max-drop",)), "--max-drop"),
    row("compress-unknown-stage", with_(COMPRESS, "--recipe", "prune,magic"), "magic"),
    row("compress-kmeans-not-last", with_(COMPRESS, "--recipe", "kmeans,prune"), "last stage"),
    row("compress-int8-not-last", with_(COMPRESS, "--recipe", "int8,prune"), "last stage"),
    row("compress-int8-torch-runtime", with_(COMPRESS, "--recipe", "prune,int8", "--runtime", "torch"), "ONNX Runtime"),
    row("quantize-int8-kmeans-flag", ["quantize", *CLS, "--scheme", "int8", "--bits", "8", *OUT], "k-means option"),
    row("compress-target-no-stage-moves", with_(COMPRESS, "--recipe", "kmeans"), "--macs cannot be reached"),
    row("compress-recovery", with_(COMPRESS, "--recovery", "teacher"), "--recovery"),
    row("compress-finetune-negative", with_(COMPRESS, "--finetune-steps", "-1"), "--finetune-steps"),
    row("compress-runtime", with_(COMPRESS, "--runtime", "tvm"), "--runtime"),
    row("compress-unknown-task", with_(COMPRESS, "--task", "segmentation", drop=("--task",)), "--task"),
    row("compress-input-huge", with_(COMPRESS, "--input", "1x1x100000x100000"), "--input"),
    row("compress-out-foreign", with_(COMPRESS, "--out", "{foreign}", drop=("--out",)), "did not write"),
    row("compress-force-and-resume", with_(COMPRESS, "--force", "--resume"), "one of them"),
    # ------------------------------------------------------------------ report
    row("report-no-result", ["report", "{foreign}"], "result.json"),
    # ------------------------------------------------------------------ demo
    row("demo-out-is-file", ["demo", "--quick", "--out", "{tmp}/afile.txt"], "--out"),
    row("demo-out-foreign", ["demo", "--quick", "--out", "{foreign}"], "did not write"),
    row("demo-out-empty", ["demo", "--quick", "--out", ""], "--out"),
    # ------------------------------------------------------------------ streaming data, precision (issue 15)
    row("train-missing-shard", with_(TRAIN, "--data", "{tmp}/shard-{{000000..000003}}.tar", drop=("--data",)),
        "does not exist"),
    row("evaluate-missing-shard", with_(EVAL, "--data", "{tmp}/shard-{{0..1}}.tar", drop=("--data",)), "shard"),
    row("train-amp", with_(TRAIN, "--amp", "fp8"), "--amp"),
]


def _snapshot(p: Path) -> dict[str, bytes] | bytes | None:
    if p.is_file():
        return p.read_bytes()
    if p.is_dir():
        return {q.relative_to(p).as_posix(): (q.read_bytes() if q.is_file() else b"<dir>") for q in sorted(p.rglob("*"))}
    return None


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Inputs shared by every row: files, a tiny ImageFolder, a file: model and a real prune run."""
    import numpy as np
    from PIL import Image

    from slimcnn.models import load_model, save_model

    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "notes.txt").write_text("not a model, not JSON\n")
    (tmp / "list.json").write_text("[1, 2, 3]\n")
    (tmp / "afile.txt").write_text("an existing file\n")
    foreign = tmp / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("\\documentclass{article}\n")
    data = tmp / "catdog"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(data / cls / f"{i}.png")
    for name, bad, content in (("broken", "cat/fake.png", b"GIF89a"), ("truncated", "dog/cut.png", None)):
        shutil.copytree(data, tmp / name)  # a class folder with one file that is no readable image
        whole = (data / "dog" / "0.png").read_bytes()
        (tmp / name / bad).write_bytes(content if content is not None else whole[: len(whole) // 2])
    model_dir = tmp / "models"
    model_dir.mkdir()
    save_model(load_model(M, seed=0), model_dir / "model.pt")
    import torch

    torch.jit.script(load_model(M, seed=0).model.eval()).save(str(tmp / "scripted.pt"))
    run = tmp / "run"
    assert main(["prune", M, "--ratio", "0.3", "--no-latency", "--out", str(run)]) == 0, "the reference prune run"
    assert (run / "plan.json").is_file() and (run / "manifest.json").is_file()
    return {"tmp": str(tmp), "foreign": str(foreign), "data": str(data), "model_dir": str(model_dir), "run": str(run)}


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("note:", "warning:"))]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "expect", "code"), ROWS)
def test_bad_input(argv: list[str], expect: str, code: int, env: dict[str, str], tmp_path: Path,
                   capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative or empty --out lands in tmp_path, which must stay empty
    paths = env | {"out": str(tmp_path / "out")}
    args = [a.format(**paths) for a in argv]
    out = Path(args[args.index("--out") + 1]) if "--out" in args and args[args.index("--out") + 1] else None
    guarded = [Path(paths[k]) for k in ("foreign", "data", "model_dir", "run")] + ([out] if out else [])
    before = {p: _snapshot(p) for p in guarded}
    capfd.readouterr()
    try:
        rc = main(args)
    except BaseException as e:  # noqa: BLE001 - any escape is a traceback for the user
        pytest.fail(f"Traceback: {type(e).__name__}: {e}")
    got = capfd.readouterr()
    assert "Traceback" not in got.err + got.out
    assert got.out == "", f"stdout is for results (--json): {got.out!r}"
    errors = _lines(got.err)
    assert rc == code, f"exit {rc}, stderr: {got.err!r}"
    assert len(errors) == 1 and errors[0].startswith("error:"), f"want one 'error:' line, stderr: {got.err!r}"
    assert expect in errors[0], f"{expect!r} not named in {errors[0]!r}"
    for p, snap in before.items():
        assert _snapshot(p) == snap, f"{p} changed"
    assert not any(tmp_path.iterdir()), f"left behind: {list(tmp_path.iterdir())}"
    assert not list(Path(paths["tmp"]).glob(".*slimcnn-*")), "a staging folder was left behind"


def test_version_is_exit_0(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    got = capfd.readouterr()
    assert got.out.startswith("slimcnn ") and not got.err
    assert main(["-V", "prune", "slimcnn:tiny_cnn"]) == 0  # before a command too, which then does not run
    assert capfd.readouterr().out == got.out


def test_top_level_help_lists_version_and_model_sources(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = " ".join(capfd.readouterr().out.split())
    assert "--version" in out and "MODEL is a source string" in out and "slimcnn:NAME" in out


def test_enough_rows() -> None:
    assert len(ROWS) >= 130


def test_warnings_are_one_line_like_notes_and_errors() -> None:
    """A library's logged warning and a Python ``warnings.warn`` both read ``warning: message`` (no logger name,
    file, line number or source line); ``--debug`` keeps the logger name. A fresh interpreter: logging is
    configured once per process."""
    import subprocess
    import sys

    script = (
        "import logging, sys, warnings\n"
        "import slimcnn.measure as m\n"
        "real = m.analyze\n"
        "def analyze(*a, **k):\n"
        "    logging.getLogger('slimcnn.somewhere').warning('the table is stale')\n"
        "    warnings.warn('odd input', UserWarning)\n"
        "    return real(*a, **k)\n"
        "m.analyze = analyze\n"
        "from slimcnn.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [sys.executable, "-c", script, "analyze", "slimcnn:tiny_cnn", "--no-latency", "--json"]
    plain = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stderr.splitlines()
    assert "warning: the table is stale" in lines and "warning: odd input" in lines
    assert "UserWarning" not in plain.stderr and "warnings.warn" not in plain.stderr
    debug = subprocess.run([*args, "--debug"], capture_output=True, text=True, timeout=300)
    assert "WARNING slimcnn.somewhere: the table is stale" in debug.stderr
