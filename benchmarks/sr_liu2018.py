"""Liu et al. (ISCAS 2018 / TCAS-I 2019) on SR nets: uniform removal (UR), CPO and kernel granularity.

Run: ``.venv/bin/python benchmarks/sr_liu2018.py --model fsrcnn|vdsr [--retrain-steps N] [--limit K]
[--test-limit K] [--rows ur,cpo,kernel] [--device cpu|cuda] [--out benchmarks/results]``.
Appends/replaces the model's section in ``<out>/sr_liu2018.{json,md}``.

* Data: validation = Set5 (drives CPO), test = Set14, retraining on random patches of T91 (+BSD200 with
  ``--bsd200``), all from ``../shared/data/sr`` (``--data``). PSNR on Y, MATLAB bicubic, shave = scale.
* UR: one reducing factor ``r`` for every prunable filter group, filters ranked by Liu's ``sparsity``
  (:func:`slimcnn.prune.prune_model_`; the 1-filter output layer is protected), then retraining.
  ``--criterion NAME`` / ``--compensate`` (mean compensation) give extra rows labelled ``[NAME+comp]``
  next to the paper-faithful ones (UR and CPO).
* CPO: :func:`slimcnn.search.search` with ``strategy="cpo"`` under ``--max-drop D_exp`` (dB).
* kernel: free-pattern 2-D kernel removal (sparsity per kernel, masked retraining, kernel-sparse
  MACs) at the MACs of each UR row, and the grouped pattern (G = 2, real MACs).
* Params are counted two ways: ``params`` = our model's tensors; ``paper params`` = conv weights + one
  bias per conv filter (the TCAS Table II convention; our VDSR has no biases).
* Latency: one :func:`slimcnn.measure.compare_latency` call per model (ONNX Runtime, interleaved).
* GPU: ``--device cuda --runs 0 --save-models DIR/models.pt --out DIR`` retrains and evaluates on the
  GPU and skips latency; ``--import DIR`` (repeatable) on the CPU machine then times the saved models
  there against the baseline in one interleaved call and merges the rows into ``--out``.

The paper retrains 5 epochs after each pruning step (data set unstated); on CPU we retrain
``--retrain-steps`` steps of ``batch × patch²``, recorded in every row. ``--retrain-steps 0`` = no retraining.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from torch import nn

from slimcnn.measure import compare_latency, cpu_model, profile
from slimcnn.models import load_model
from slimcnn.prune import prune_model_
from slimcnn.prune.kernel import apply_kernel_masks_, default_kernel_layers, group_kernels_, kernel_masks
from slimcnn.search import Budget, SearchSpec, search
from slimcnn.search.families import KernelFamily
from slimcnn.tasks import make_task

RESULTS = Path(__file__).resolve().parent / "results"
MODELS: dict[str, dict[str, Any]] = {
    "vdsr": dict(source="slimcnn:vdsr", scale=2, batch=16, patch=41, lr=1e-4),
    # the fsrcnn recipe's Adam 1e-3 costs 4.8 dB on Set5 after 10 steps of the unpruned model; 1e-4 costs 0.02
    "fsrcnn": dict(source="slimcnn:fsrcnn", scale=3, batch=16, patch=16, lr=1e-4),
}
UR_RATIOS = (0.0625, 0.125, 0.25)
CPO_DROPS = (0.10, 0.18, 0.26, 0.32)
PAPER = {  # TCAS-I 2019 Table II, VDSR x2 (PAPERS.md §1.5): (val drop, params %, FLOP %, Set14 drop, cycles)
    "UR r=0.0625": (0.10, 87.91, 87.91, 0.11, 5.9e6), "UR r=0.125": (0.13, 76.60, 76.60, 0.19, 5.5e6),
    "UR r=0.25": (0.26, 56.31, 56.41, 0.29, 3.8e6), "CPO D_exp=0.10": (0.08, 72.31, 72.31, 0.12, 5.2e6),
    "CPO D_exp=0.18": (0.18, 54.25, 54.25, 0.20, 4.0e6), "CPO D_exp=0.26": (0.26, 51.52, 51.25, 0.28, 3.8e6),
    "CPO D_exp=0.32": (0.32, 45.85, 45.85, 0.34, 3.4e6),
}


def paper_params(model: nn.Module) -> int:
    """Conv/deconv weights plus one bias per filter (TCAS Table II's count), whatever the model stores."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            n += m.weight.numel() + (m.out_channels if m.bias is None else m.bias.numel())
    return n


def masked_finetune(task: Any, model: nn.Module, masks: dict[str, torch.Tensor], steps: int, **kw: Any) -> None:
    """Retrain with removed kernels held at zero (gradients masked, masks re-applied after)."""
    hooks = []
    for fqn, mask in masks.items():
        w = model.get_submodule(fqn).weight
        m4 = mask.to(w.dtype)[:, :, None, None]
        hooks.append(w.register_hook(lambda g, m4=m4: g * m4.to(g.device)))
    try:
        if steps > 0:
            task.finetune(model, steps, progress=False, **kw)
    finally:
        for h in hooks:
            h.remove()
        apply_kernel_masks_(model, masks)


def _train_dir(data: Path, bsd200: bool) -> str:
    """T91, or a temporary folder of links to T91 + BSD200 (VDSR's 291-image set)."""
    if not bsd200:
        return str(data / "T91")
    d = Path(tempfile.mkdtemp(prefix="sr291_"))
    for sub in ("T91", "BSD200"):
        for f in sorted((data / sub).iterdir()):
            (d / f"{sub}_{f.name}").symlink_to(f.resolve())
    return str(d)


class Bench:
    """One model's run: tasks, baseline and row measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        cfg = MODELS[args.model]
        self.args, self.cfg = args, cfg
        self.loaded = load_model(cfg["source"], scale=cfg["scale"])
        self.base = self.loaded.model.eval()
        data = Path(args.data)
        self.val = make_task("sr", str(data / "Set5"), info=self.loaded.info, scale=cfg["scale"],
                             train_data=_train_dir(data, args.bsd200))
        self.test = make_task("sr", str(data / "Set14"), info=self.loaded.info, scale=cfg["scale"])
        self.x = self.val.example_input()
        self.ft = {"batch_size": cfg["batch"], "patch": cfg["patch"], "lr": args.lr or cfg["lr"], "device": args.device}
        self.base_cost = profile(self.base, self.x)
        self.base_paper = paper_params(self.base)
        self.base_val = self.val.evaluate(self.base, limit=args.limit, device=args.device)
        self.base_test = self.test.evaluate(self.base, limit=args.test_limit, device=args.device)
        self.models: dict[str, nn.Module] = {"baseline": self.base}
        self.rows: list[dict[str, Any]] = []
        self.base_latency: float | None = None  # set by latency() (not with --runs 0)

    def budget_str(self, steps: int, times: int = 1) -> str:
        b, p = self.cfg["batch"], self.cfg["patch"]
        return f"{times}×{steps}×{b}×{p}²" if times > 1 else f"{steps}×{b}×{p}²"

    def record(self, name: str, model: nn.Module, *, retrain: str, kernel_sparse: tuple[int, int] | None = None,
               extra: dict[str, Any] | None = None, seconds: float = 0.0) -> dict[str, Any]:
        c = profile(model, self.x)
        params, macs = kernel_sparse or (c.params, c.macs)
        val = self.val.evaluate(model, limit=self.args.limit, device=self.args.device)
        test = self.test.evaluate(model, limit=self.args.test_limit, device=self.args.device)
        row = {
            "row": name, "val_psnr": val.value, "val_drop": self.base_val.value - val.value,
            "test_psnr": test.value, "test_drop": self.base_test.value - test.value,
            "params_pct": 100.0 * params / self.base_cost.params,
            "paper_params_pct": 100.0 * (paper_params(model) if kernel_sparse is None  # kernel rows: minus removed
                                         else self.base_paper - (c.params - kernel_sparse[0])) / self.base_paper,
            "macs_pct": 100.0 * macs / self.base_cost.macs, "dense_macs_pct": 100.0 * c.macs / self.base_cost.macs,
            "retrain": retrain, "seconds": round(seconds, 1),
            "images": f"{self.args.limit or 'all'}/{self.args.test_limit or 'all'}", **(extra or {}),
        }
        print(json.dumps(row), flush=True)
        self.rows.append(row)
        self.models[name] = model
        return row

    @property
    def variant(self) -> str:
        """Row-name suffix for a non-paper criterion, mean compensation or accumulated CPO retraining."""
        a = self.args
        tags = [f"{a.criterion}{'+comp' if a.compensate else ''}"] if a.criterion != "sparsity" or a.compensate else []
        tags += ["accumulated"] if a.accumulate else []
        return f" [{', '.join(tags)}]" if tags else ""

    def ur(self) -> None:
        for r in UR_RATIOS:
            t0 = time.perf_counter()
            m = copy.deepcopy(self.base)
            prune_model_(m, self.x, criterion=self.args.criterion, prune_ratio=r, task=self.val,
                         compensate=self.args.compensate)
            if self.args.retrain_steps > 0:
                self.val.finetune(m, self.args.retrain_steps, progress=False, **self.ft)
            self.record(f"UR r={r:g}{self.variant}", m.eval(), retrain=self.budget_str(self.args.retrain_steps),
                        seconds=time.perf_counter() - t0)

    def cpo(self) -> None:
        for d in self.args.cpo_drops:
            t0 = time.perf_counter()
            ft = {k: v for k, v in self.ft.items() if k != "device"}
            spec = SearchSpec(method="prune", strategy="cpo", criterion=self.args.criterion,
                              compensate=self.args.compensate, device=self.args.device, accumulate=self.args.accumulate,
                              finetune_steps=self.args.cpo_steps, finetune=ft, limit=self.args.cpo_limit)
            res = search(self.base, self.val, Budget.from_options(max_drop=f"{d:g}"), spec, example_input=self.x,
                         progress=False)
            n_eval = int(res.strategy_log.get("evaluations", 0))
            self.record(f"CPO D_exp={d:.2f}{self.variant}", res.model.eval(),
                        retrain=self.budget_str(self.args.cpo_steps, n_eval + 1) if self.args.cpo_steps else "none",
                        extra={"cpo_evaluations": n_eval, "cpo_met": res.met,
                               "ratios": {k: round(v, 4) for k, v in res.assignment.items()}},
                        seconds=time.perf_counter() - t0)

    def kernel(self) -> None:
        layers = default_kernel_layers(self.base)
        fam = KernelFamily(self.x, criterion="sparsity")
        cost = fam.cost(self.x)
        per_layer = {lc.name: lc.macs for lc in self.base_cost.layers}
        knob_macs = sum(per_layer[n] for n in layers)
        for ur in [r for r in self.rows if r["row"].startswith("UR") and "[" not in r["row"]]:
            t0 = time.perf_counter()
            # kernel-sparse MACs = base - p * knob_macs; match the UR row's MACs where the knobs allow it
            p = (1.0 - ur["macs_pct"] / 100.0) * self.base_cost.macs / knob_macs
            if p >= 0.99:
                print(f"skip kernel free at {ur['row']}: needs p={p:.3f}", flush=True)
                continue
            m = copy.deepcopy(self.base)
            masks = kernel_masks(m, p, "sparsity", layers=layers)
            apply_kernel_masks_(m, masks)
            masked_finetune(self.val, m, masks, self.args.retrain_steps, **self.ft)
            params, macs, wbytes = cost(m, {n: p for n in layers})
            self.record(f"kernel free @ {ur['row']}", m.eval(), retrain=self.budget_str(self.args.retrain_steps),
                        kernel_sparse=(params, macs), seconds=time.perf_counter() - t0,
                        extra={"kernel_ratio": round(p, 4), "slimk_weight_bytes": wbytes,
                               "dense_weight_bytes": self.base_cost.weight_bytes})
        t0 = time.perf_counter()
        m = copy.deepcopy(self.base)
        ok = {n: 2 for n in layers if self.base.get_submodule(n).in_channels % 2 == 0
              and self.base.get_submodule(n).out_channels % 2 == 0}
        group_kernels_(m, ok, "sparsity", example_input=self.x)
        if self.args.retrain_steps > 0:
            self.val.finetune(m, self.args.retrain_steps, progress=False, **self.ft)
        self.record("kernel grouped G=2", m.eval(), retrain=self.budget_str(self.args.retrain_steps),
                    seconds=time.perf_counter() - t0)

    def latency(self) -> None:
        self.base_latency = time_rows(self.models, self.rows, self.x, self.args)


def time_rows(models: dict[str, nn.Module], rows: list[dict[str, Any]], x: torch.Tensor,
              args: argparse.Namespace) -> float:
    """One interleaved ``compare_latency`` run of ``models`` (``"baseline"`` among them); writes each row's
    ``latency_ms`` and ``latency_ratio`` and returns the baseline's median ms."""
    stats = compare_latency(models, x, runtime="onnxruntime", threads=args.threads, warmup=3, runs=args.runs)
    base = stats["baseline"].median_ms
    for r in rows:
        r["latency_ms"] = stats[r["row"]].median_ms
        r["latency_ratio"] = stats[r["row"]].median_ms / base
    return base


def machine(args: argparse.Namespace) -> dict[str, Any]:
    return {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "threads": args.threads, "device": args.device,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")} | (
        {"gpu": torch.cuda.get_device_name(torch.device(args.device))} if args.device.startswith("cuda") else {})


def _f(v: Any, nd: int = 2) -> str:
    return f"{v:.{nd}f}" if isinstance(v, float) else ("–" if v is None else str(v))


def markdown(results: dict[str, Any]) -> str:
    out = ["# Liu et al. (TCAS-I 2019 Table II) on slimcnn: UR, CPO, kernel granularity", "",
           "Generated by `benchmarks/sr_liu2018.py`. Drops in dB (baseline minus pruned). "
           "`params %` = our tensors; `paper params %` = conv weights + one bias per filter (the paper's count). "
           "Kernel-free rows: params/MACs are **kernel-sparse** (only kept kernels counted; the dense runtime "
           "does not get faster — see `dense MACs %` and the latency ratio).", ""]
    for name, res in results.items():
        s = res["settings"]
        out += [f"## {name} ×{s['scale']}", "",
                "**Retraining shortened from the paper's 5 epochs (after every pruning step) to the number of "
                "steps in the `retraining` column** (steps × batch × patch², the SR task's Adam fine-tuning "
                f"recipe with Adam lr {s.get('lr', '–')}; CPO rows: evaluations × steps, retraining after every CPO step: "
                "each trial prunes the original model, or with `[accumulated]` the retrained model of the state it "
                "extends, as the paper does). "
                f"Retraining data: {s['train']}. Set5 = validation (drives CPO), Set14 = test.", ""]
        for run in res.get("runs", [res]):
            rs, mc, bl = run["settings"], run["machine"], run["baseline"]
            flags = "".join([f" --criterion {rs['criterion']}" if rs.get("criterion", "sparsity") != "sparsity" else "",
                             " --compensate" if rs.get("compensate") else "", " --accumulate" if rs.get("accumulate") else ""])
            out.append(f"- run `--rows {rs['rows']}{flags}`: UR/kernel retraining {rs['retrain_steps']} steps, CPO "
                       f"{rs['cpo_steps']} steps per step on {rs['cpo_limit'] or 'all'} Set5 image(s); reported "
                       f"drops on {rs['limit'] or 'all'} Set5 / {rs['test_limit'] or 'all'} Set14 images; baseline "
                       f"Set5 {bl['val_psnr']:.2f} dB, Set14 {bl['test_psnr']:.2f} dB, {bl['params']:,} params "
                       f"({bl['paper_params']:,} paper-convention), {bl['macs']:.3e} MACs at {tuple(rs['input'])}, "
                       f"ORT {_f(bl.get('latency_ms'))} ms; {mc['cpu']}, {mc['threads']} threads, torch "
                       f"{mc['torch']}, ORT {mc['onnxruntime']}, {mc['date']}, wall {run['seconds']:.0f} s"
                       + (f"; retraining and evaluation on {mc.get('gpu', mc['device'])}" if mc.get("device", "cpu") != "cpu" else "")
                       + (f"; latency timed on {lm['cpu']}, {lm['threads']} threads, ORT {lm['onnxruntime']}, "
                          f"{lm['date']}" if (lm := run.get("latency_machine")) else "") + ".")
        out.append("")
        out += [
                "Rows may come from several invocations (`runs` in the JSON); `images` = Set5/Set14 images used.", "",
                "| row | images | val drop | test drop | params % | paper params % | MACs % | dense MACs % | latency ratio "
                "| retraining (steps×batch×patch²) | paper: val / params % / FLOP % / Set14 |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        order = {"UR": 0, "CPO": 1, "kernel": 2}
        for r in sorted(res["rows"], key=lambda r: (order.get(r["row"].split()[0], 3), r["row"])):
            # "[...]" / "(...)": the paper's setting with another criterion, retraining or run
            p = PAPER.get(re.split(r" [\[(]", r["row"])[0]) if name == "vdsr" else None
            ptxt = f"{p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f} / {p[3]:.2f}" if p else "–"
            out.append(f"| {r['row']} | {r.get('images', '–')} | {_f(r['val_drop'], 3)} | {_f(r['test_drop'], 3)} | {_f(r['params_pct'])} | "
                       f"{_f(r['paper_params_pct'])} | {_f(r['macs_pct'])} | {_f(r['dense_macs_pct'])} | "
                       f"{_f(r.get('latency_ratio'), 3)} | {r['retrain']} | {ptxt} |")
        for note in res.get("not_run", []):
            out.append(f"\n- not run: {note}")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="fsrcnn")
    ap.add_argument("--retrain-steps", type=int, default=200, help="UR/kernel retraining steps (paper: 5 epochs)")
    ap.add_argument("--cpo-steps", type=int, default=None, help="retraining steps per CPO step (default: retrain-steps)")
    ap.add_argument("--limit", type=int, default=None, help="Set5 images for the reported validation drop")
    ap.add_argument("--cpo-limit", type=int, default=None, help="Set5 images while CPO searches (default: --limit)")
    ap.add_argument("--test-limit", type=int, default=None, help="Set14 images")
    ap.add_argument("--rows", default="ur,cpo,kernel")
    ap.add_argument("--cpo-drops", default=",".join(f"{d:.2f}" for d in CPO_DROPS))
    ap.add_argument("--bsd200", action="store_true", help="retrain on T91 + BSD200 (VDSR's 291 set)")
    ap.add_argument("--device", default="cpu", help="retraining device (cpu or cuda)")
    ap.add_argument("--lr", type=float, default=None, help="retraining Adam lr (default 1e-4)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20, help="timed latency runs per model")
    ap.add_argument("--data", default="../shared/data/sr")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--criterion", default="sparsity", help="UR/CPO filter criterion (paper: sparsity)")
    ap.add_argument("--compensate", action="store_true", help="mean compensation of removed filters (not in the paper)")
    ap.add_argument("--accumulate", action="store_true",
                    help="CPO trials prune the retrained model of the state they extend (the paper's procedure)")
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON")
    ap.add_argument("--save-models", metavar="FILE", help="also torch.save the measured rows' models (for --import)")
    ap.add_argument("--import", dest="imports", action="append", default=[], metavar="DIR",
                    help="merge a run made elsewhere (its --out DIR, run with --save-models DIR/models.pt) and "
                         "time its models here against the baseline; repeatable")
    args = ap.parse_args()
    if args.render:
        allres = json.loads((Path(args.out) / "sr_liu2018.json").read_text())
        (Path(args.out) / "sr_liu2018.md").write_text(markdown(allres) + "\n")
        return
    torch.set_num_threads(args.threads)
    if args.imports:
        import_runs(args)
        return
    args.cpo_steps = args.retrain_steps if args.cpo_steps is None else args.cpo_steps
    args.cpo_limit = args.limit if args.cpo_limit is None else args.cpo_limit
    args.cpo_drops = [float(d) for d in args.cpo_drops.split(",") if d]
    rows = set(args.rows.split(","))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    b = Bench(args)
    not_run = [f"{k}: not requested in this run (--rows {args.rows})" for k in ("ur", "cpo", "kernel") if k not in rows]
    if "ur" in rows:
        b.ur()
    if "kernel" in rows:
        if "ur" in rows and not b.variant:
            b.kernel()
        else:
            not_run.append("kernel: needs the UR rows (matched MACs)")
    if "cpo" in rows:
        b.cpo()
    if args.runs > 0:
        b.latency()
    if args.save_models:
        Path(args.save_models).parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: m.cpu() for k, m in b.models.items() if k != "baseline"}, args.save_models)
    cfg = MODELS[args.model]
    res = {
        "settings": {"scale": cfg["scale"], "retrain_steps": args.retrain_steps, "cpo_steps": args.cpo_steps,
                     "batch": cfg["batch"], "patch": cfg["patch"], "lr": args.lr or cfg["lr"],
                     "limit": args.limit, "cpo_limit": args.cpo_limit,
                     "test_limit": args.test_limit, "rows": args.rows, "cpo_drops": args.cpo_drops,
                     "criterion": args.criterion, "compensate": args.compensate, "accumulate": args.accumulate,
                     "train": "T91 + BSD200" if args.bsd200 else "T91", "input": list(b.x.shape),
                     "paper_retraining": "5 epochs after each pruning step (data set not stated)"},
        "baseline": {"val_psnr": b.base_val.value, "test_psnr": b.base_test.value, "params": b.base_cost.params,
                     "paper_params": b.base_paper, "macs": b.base_cost.macs,
                     "latency_ms": b.base_latency},
        "rows": b.rows, "not_run": not_run, "machine": machine(args), "seconds": time.perf_counter() - t0,
    }
    merge(Path(args.out), args.model, [res])


def merge(out: Path, model: str, results: list[dict[str, Any]]) -> None:
    """Add runs to ``out/sr_liu2018.json``: rows replace same-named ones, runs are appended."""
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "sr_liu2018.json"
    allres = json.loads(jpath.read_text()) if jpath.is_file() else {}
    merged = allres.get(model, {})
    for res in results:
        names = {r["row"] for r in res["rows"]}
        rows = [r for r in merged.get("rows", []) if r["row"] not in names] + res["rows"]
        done = {r["row"] for r in rows} | {r["row"].split()[0].lower() for r in rows}
        not_run = [n for n in merged.get("not_run", []) + res["not_run"] if n.split(":")[0] not in done]
        runs = merged.get("runs", []) + res.get("runs", [{k: res[k] for k in ("settings", "machine", "baseline",
                                                                                 "seconds")}])
        merged = {**res, "rows": rows, "not_run": not_run, "runs": runs}
    allres[model] = merged
    jpath.write_text(json.dumps(allres, indent=1) + "\n")
    (out / "sr_liu2018.md").write_text(markdown(allres) + "\n")
    print(f"wrote {jpath} and sr_liu2018.md")


def import_runs(args: argparse.Namespace) -> None:
    """Merge runs made on another machine (a GPU box) and time their saved models here, interleaved."""
    cfg = MODELS[args.model]
    loaded = load_model(cfg["source"], scale=cfg["scale"])
    x = make_task("sr", str(Path(args.data) / "Set5"), info=loaded.info, scale=cfg["scale"]).example_input()
    models: dict[str, nn.Module] = {"baseline": loaded.model.eval()}
    results = []
    for d in map(Path, args.imports):
        res = json.loads((d / "sr_liu2018.json").read_text())[args.model]
        saved = torch.load(d / "models.pt", weights_only=False)
        missing = {r["row"] for r in res["rows"]} - set(saved)
        if missing:
            raise SystemExit(f"{d}/models.pt lacks the models of rows {sorted(missing)}")
        models |= saved
        results.append(res)
    base = time_rows(models, [r for res in results for r in res["rows"]], x, args)
    timed_here = machine(args)
    for res in results:
        for run in res["runs"]:
            run["baseline"]["latency_ms"] = base
            run["latency_machine"] = timed_here
    merge(Path(args.out), args.model, results)


if __name__ == "__main__":
    main()
