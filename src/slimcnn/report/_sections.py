"""The report's sections, built from a run's data alone (result.json, plan, pareto.json, sensitivity.json).

Everything here is deterministic in the run's measurements: two runs that measured the same numbers
render byte-identical reports (the run's own wall time and load average, which vary, stay in
result.json; the load average is shown only next to a latency it conditions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slimcnn.report._data import COST_KEYS, COST_LABELS, RunData, cost_value, score_drop
from slimcnn.report._doc import Block, Items, Section, Table
from slimcnn.report.tables import fmt_bytes, fmt_count, fmt_metric, fmt_ratio, fmt_threads

_OPTION_OF = {"max_drop": ("max_drop",), "macs": ("macs",), "params": ("params",), "weight_bytes": ("weight_bytes",),
              "activation_bytes": ("activation_bytes",), "latency_ms": ("latency_target", "latency"),
              "latency": ("latency_target", "latency")}
"""Budget -> the options that may hold it as given (``prune`` keeps ``--latency`` as ``latency_target``: its
``latency`` option is whether to time at all)."""


def fmt_cost(key: str, v: float | None) -> str:
    """A cost in its unit: counts with separators (and short form), bytes in KiB/MiB, latency in ms."""
    if v is None:
        return "–"
    if key in ("latency_ms", "latency"):
        return f"{v:.4g} ms"
    if key in ("weight_bytes", "activation_bytes"):
        return f"{v:,.0f} B ({fmt_bytes(v)})" if v >= 1024 else f"{v:,.0f} B"
    return f"{v:,.0f} ({fmt_count(v)})" if v >= 1000 else f"{v:,.0f}"


def _ratio(v: float | None, base: float | None) -> float | None:
    return v / base if v is not None and base else None


def _score(side: dict[str, Any] | None) -> dict[str, Any] | None:
    s = (side or {}).get("score")
    return s if isinstance(s, dict) else None


def _cost(side: dict[str, Any] | None) -> dict[str, Any] | None:
    c = (side or {}).get("cost")
    return c if isinstance(c, dict) else None


def title(data: RunData) -> tuple[str, str]:
    """The report's title (command and model source) and subtitle (task, data, verdict)."""
    r = data.result
    head = f"slimcnn {r.get('command', '?')}: {r.get('source', '?')}"
    bits = []
    if r.get("task"):
        bits.append(f"task **{r['task']}**")
    s = _score(r.get("before")) or _score(r.get("after"))
    if s and s.get("dataset"):
        bits.append(f"scored on `{s['dataset']}` (n={s.get('n', '?')})")
    met = r.get("met")
    bits.append("no budget given" if met is None else ("**every target met**" if met else "**targets NOT met**"))
    if any(str(n).startswith("untrained") for n in r.get("notes") or []):
        # a random-weight original scores at chance: "drop 0" and "met" say nothing about the trained model
        bits.append("**the original has untrained (random) weights**: its scores and drop say nothing about the "
                    "trained model (pass `--weights`)")
    return head, " · ".join(bits)


def targets(data: RunData) -> Section | None:
    """Each budget: as given, the limit, what the written model reached, the margin and met or not."""
    r = data.result
    checks = [c for c in r.get("checks") or [] if isinstance(c, dict)]
    if not checks:
        return None
    base_cost, opts = _cost(r.get("before")), r.get("options") or {}
    metric = (_score(r.get("before")) or {}).get("metric", "metric")
    rows = []
    for c in checks:
        name, value, limit = str(c.get("name")), c.get("value"), c.get("limit")
        is_drop = name == "max_drop"
        base = None if is_drop else cost_value(base_cost, name)

        def show(v: float | None, name: str = name, base: float | None = base, is_drop: bool = is_drop) -> str:
            if v is None:
                return "–"
            if is_drop:
                return f"{v:.4g} {metric}"
            out = fmt_cost(name, v)
            return f"{out} = {fmt_ratio(v / base)}" if base else out

        margin = "–"
        if isinstance(value, (int, float)) and isinstance(limit, (int, float)):
            d = float(limit) - float(value)
            rel = f" ({abs(d) / abs(limit):.1%} of the limit)" if limit and not is_drop else ""  # "over by" says the sign
            unit = f" {metric}" if is_drop else ""
            margin = (f"{d:.4g}{unit} to spare{rel}" if d >= 0 else f"over by {-d:.4g}{unit}{rel}") if is_drop else \
                (f"{fmt_cost(name, d)} to spare{rel}" if d >= 0 else f"over by {fmt_cost(name, -d)}{rel}")
        given = next((opts[k] for k in _OPTION_OF.get(name, (name,))
                      if opts.get(k) is not None and not isinstance(opts[k], bool)), None)
        label = "max drop" if is_drop else COST_LABELS.get(name, name)
        rows.append((label, "–" if given is None else f"`{given}`", show(limit), show(value), margin,
                     "✓ met" if c.get("met") else "✗ NOT met"))
    n_bad = sum(not c.get("met") for c in checks)
    verdict = (f"**All {len(checks)} targets met** on the model written to this folder, measured against the original."
               if not n_bad else f"**{n_bad} of {len(checks)} targets NOT met**: the folder holds the closest model found.")
    drop = score_drop(_score(r.get("before")), _score(r.get("after")))
    if drop is not None and not any(c.get("name") == "max_drop" for c in checks):
        # `prune --macs` met with a 70-point drop: the reader must not take "met" for "still accurate"
        verdict += f" No quality target was given (`--max-drop`): the {metric} drop of {drop:.4g} is not judged."
    table = Table(("target", "as given", "limit", "achieved", "margin", "met"), tuple(rows))
    return Section("Targets vs achieved", (verdict, table))


def before_after(data: RunData) -> Section | None:
    """Metric and every cost of the original and the written model, with the ratio after / original."""
    r = data.result
    b, a = r.get("before") or {}, r.get("after") or {}
    bs, as_, bc, ac = _score(b), _score(a), _cost(b), _cost(a)
    if not (bs or as_ or bc or ac):
        return None
    rows: list[tuple[Any, ...]] = []
    if bs or as_:
        s = bs or as_ or {}
        drop = score_drop(bs, as_)
        where = f" ({s['dataset']}, n={s.get('n', '?')})" if s.get("dataset") else ""
        rows.append((f"**{s.get('metric', 'metric')}**{where}", _val(bs), _val(as_),
                     "–" if drop is None else f"drop {drop:.4g}"))
        for m in sorted(set((bs or {}).get("metrics") or {}) | set((as_ or {}).get("metrics") or {})):
            if m != s.get("metric"):
                vb, va = (((x or {}).get("metrics") or {}).get(m) for x in (bs, as_))
                rows.append((m, fmt_metric(vb), fmt_metric(va), "–"))
    test = (r.get("details") or {}).get("test")
    if isinstance(test, dict) and isinstance(test.get("before"), dict):
        tb, ta = test.get("before"), test.get("after")
        drop = score_drop(tb, ta)
        rows.append((f"{tb.get('metric', 'metric')} on test data ({tb.get('dataset', '')}, n={tb.get('n', '?')})",
                     _val(tb), _val(ta), "–" if drop is None else f"drop {drop:.4g}"))
    for key in COST_KEYS:
        vb, va = cost_value(bc, key), cost_value(ac, key)
        if vb is None and va is None:
            continue
        if key == "latency_ms":
            rows.append(("latency (median)", _latency(bc), _latency(ac), fmt_ratio(_ratio(va, vb))))
        else:
            rows.append((COST_LABELS[key], fmt_cost(key, vb), fmt_cost(key, va), fmt_ratio(_ratio(va, vb))))
    blocks: list[Block] = [Table(("", "original", "after", "after / original"), tuple(rows))]
    lat = (ac or bc or {}).get("latency")
    if isinstance(lat, dict):
        shape = "x".join(str(i) for i in lat.get("input_shape") or [])
        load = (r.get("environment") or {}).get("load_avg")
        blocks.append(f"Latency: {lat.get('runtime')} with {fmt_threads(lat.get('threads'))} on {lat.get('device')}, batch "
                      f"{lat.get('batch')}, input {shape}; median of {lat.get('n')} timed runs after "
                      f"{lat.get('warmup', 0)} warm-up runs, the two models interleaved in one process"
                      + (f"; load average {load}" if load else "") + ".")
    shape = (bc or ac or {}).get("input_shape")
    if shape:
        blocks.append(f"Costs for one forward pass of input `{'x'.join(str(i) for i in shape)}`; activation bytes is "
                      "the peak of live activations.")
    return Section("Before and after", tuple(blocks))


def _val(s: dict[str, Any] | None) -> str:
    return fmt_metric(s.get("value") if s else None)


def _latency(c: dict[str, Any] | None) -> str:
    lat = (c or {}).get("latency")
    if not isinstance(lat, dict) or lat.get("median_ms") is None:
        return "–"
    return f"{lat['median_ms']:.4g} ms (p10 {lat.get('p10_ms', 0):.3g}, p90 {lat.get('p90_ms', 0):.3g})"


def stages(data: RunData) -> Section | None:
    """One row per stage of a multi-stage run: its model's metric, drop and costs against the ORIGINAL."""
    r = data.result
    st = (r.get("details") or {}).get("stages")
    if not isinstance(st, list) or not st:
        return None
    bs, bc = _score(r.get("before")), _cost(r.get("before"))
    keys = [k for k in COST_KEYS if any(cost_value(_stage_side(s)[1], k) is not None for s in st)]
    recovery = any(isinstance(s, dict) and isinstance(s.get("recovered"), dict) for s in st)
    rows = []
    for i, s in enumerate(st, 1):
        if not isinstance(s, dict):
            continue
        score, cost = _stage_side(s)
        drop = s.get("drop") if isinstance(s.get("drop"), (int, float)) else score_drop(bs, score)
        steps = s.get("steps")
        n_steps = len(steps) if isinstance(steps, list) else steps
        met = s.get("met")
        rows.append((i, f"**{s.get('name', '?')}**", _targets_text(s.get("targets")), _val(score),
                     None if drop is None else float(drop),
                     *(_cost_cell(k, cost_value(cost, k), cost_value(bc, k)) for k in keys),
                     "–" if met is None else ("✓" if met else "✗"), n_steps,
                     *((_recovery_text(s.get("recovered")),) if recovery else ())))
    headers = ("#", "stage", "targets", (bs or {}).get("metric", "metric"), "drop vs original",
               *(f"{COST_LABELS[k]} / original" for k in keys), "met", "plan steps",
               *(("recovery (metric before it)",) if recovery else ()))
    return Section("Stage by stage", ("Each stage starts from the previous stage's model; every drop and ratio is "
                                      "measured against the ORIGINAL model.", Table(headers, tuple(rows))))


def _recovery_text(r: Any) -> str:
    if not isinstance(r, dict):
        return "–"
    before, reverted = r.get("score_before"), r.get("reverted_from")
    if not isinstance(before, (int, float)):
        return "–"
    undone = f"; reached {reverted:.4g}, undone" if isinstance(reverted, (int, float)) else ""
    return f"{r.get('steps')} steps {r.get('recovery', '')} (from {before:.4g}{undone})"


def _stage_side(s: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    after = s.get("after") if isinstance(s.get("after"), dict) else s
    return _score(after), _cost(after)


def _targets_text(t: Any) -> str:
    if isinstance(t, dict):
        return ", ".join(f"{COST_LABELS.get(k, k.replace('_', ' '))} {v}" for k, v in t.items()) or "–"
    if isinstance(t, (list, tuple)):
        return ", ".join(str(x) for x in t) or "–"
    return "–" if t is None else str(t)


def _cost_cell(key: str, v: float | None, base: float | None) -> str:
    if v is None:
        return "–"
    r = _ratio(v, base)
    short = f"{v:.3g} ms" if key == "latency_ms" else (fmt_bytes(v) if "bytes" in key else fmt_count(v))
    return f"{fmt_ratio(r)} ({short})" if r is not None else short


def environment(data: RunData) -> Section | None:
    """Versions, CPU, threads and seed (load average only beside a measured latency)."""
    env = data.result.get("environment") or {}
    if not env:
        return None
    keys: list[tuple[str, Callable[[Any], str]]] = [
        ("slimcnn", str), ("torch", str), ("onnxruntime", str), ("python", str), ("platform", str), ("cpu", str),
        ("cpu_count", str), ("torch_threads", str), ("seed", str),
        ("argv", lambda v: "`slimcnn " + " ".join(str(a) for a in v) + "`" if v else "–")]
    rows = [(k, f(env[k])) for k, f in keys if k in env and env[k] is not None]
    rows += [(k, str(v)) for k, v in env.items() if k not in dict(keys) and k != "load_avg"
             and isinstance(v, (str, int, float))]
    return Section("Environment", (Table(("", ""), tuple(rows)),))


def files(data: RunData) -> Section | None:
    """The run's files (sizes here; sha256 of each in result.json)."""
    if not data.files:
        return None
    rows = tuple((f"`{p}`", fmt_bytes(n)) for p, n in data.files)
    return Section("Files", ("Every file of this folder; result.json lists each with its sha256.",
                             Table(("file", "size"), rows)))


def notes(data: RunData) -> Section | None:
    """The run's notes (untrained model, rounding advice...)."""
    ns = [str(n) for n in data.result.get("notes") or []]
    return Section("Notes", (Items(tuple(ns)),)) if ns else None
