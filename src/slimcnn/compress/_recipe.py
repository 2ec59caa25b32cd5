"""Recipes: which search stages a compression runs, in what order, and which targets each one owns."""

from __future__ import annotations

from dataclasses import dataclass

from slimcnn.errors import ConfigError
from slimcnn.search.budget import flag

# What each stage can move: a target is owned by the LAST stage of the recipe that can move it, so an
# earlier stage is not asked to reach a target a later, better-suited stage reaches anyway
# (pruning before k-means need not fit the byte budget on its own).
MOVES: dict[str, frozenset[str]] = {
    "prune": frozenset({"macs", "params", "latency_ms", "weight_bytes", "activation_bytes"}),
    "kernel": frozenset({"macs", "params", "weight_bytes"}),
    "lowrank": frozenset({"macs", "params", "latency_ms", "weight_bytes"}),
    "kmeans": frozenset({"weight_bytes"}),
    # int8 moves both without a knob: an earlier stage that can move them owns them, with the latency target
    # divided by int8's measured factor and weight bytes counted as the int8 file (slimcnn.compress._int8)
    "int8": frozenset({"weight_bytes", "latency_ms"}),
}
INT8_RUNTIMES = (None, "onnxruntime")
INT8_BYTES = 0.25
"""int8 weight bytes over fp32 (before a float fallback keeps layers in fp32)."""
STRATEGIES = ("greedy", "cpo", "iterative", "latency")


@dataclass(frozen=True)
class StageSpec:
    """One stage: a search family, its strategy and (for channel pruning) the criterion."""

    method: str
    strategy: str = "greedy"
    criterion: str | None = None

    @property
    def name(self) -> str:
        """``prune``, ``prune-cpo``, ``prune-iterative:chip``, ``kmeans``..."""
        base = self.method if self.strategy == "greedy" else f"{self.method}-{self.strategy}"
        return f"{base}:{self.criterion}" if self.criterion else base


def parse_recipe(text: str) -> tuple[StageSpec, ...] | None:
    """``auto`` -> None; ``prune,kmeans`` / ``cpo:sparsity,kmeans`` / ``prune:chip,lowrank`` -> stages.

    A stage is ``METHOD[:CRITERION]`` with METHOD one of prune, cpo, iterative, latency (channel pruning
    with that strategy; latency = widths from the latency table, the stage must own a latency target), kernel, lowrank, kmeans, int8 (ONNX Runtime static int8; last, not with kmeans).
    """
    t = text.strip().lower()
    if t == "auto":
        return None
    stages = []
    for part in (p.strip() for p in t.split(",")):
        if not part:
            raise ConfigError(f"--recipe has an empty stage in '{text}'; e.g. prune,kmeans")
        head, _, criterion = part.partition(":")
        if head in ("cpo", "iterative", "latency"):
            stages.append(StageSpec("prune", head, criterion or None))
        elif head == "prune":
            stages.append(StageSpec("prune", "greedy", criterion or None))
        elif head in ("kernel", "lowrank", "kmeans", "int8"):
            if criterion and head != "kernel":
                raise ConfigError(f"--recipe stage '{part}': only prune/cpo/iterative/latency/kernel take a :criterion")
            stages.append(StageSpec(head, "greedy", criterion or None))
        else:
            raise ConfigError(f"--recipe stage '{head}' is unknown; use prune, cpo, iterative, latency, kernel, "
                              "lowrank, kmeans or int8, comma-separated (e.g. prune,kmeans), or auto")
    methods = [s.method for s in stages]
    if "kmeans" in methods and "int8" in methods:
        raise ConfigError("--recipe: kmeans and int8 both quantise the weights; use one of them (the last stage)")
    for last in ("kmeans", "int8"):
        if methods.count(last) > 1 or last in methods[:-1]:
            raise ConfigError(f"--recipe: {last} quantises the weights and must be the last stage, once")
    return tuple(stages)


def auto_recipe(targets: set[str], runtime: str | None = None,
                ratios: dict[str, float] | None = None, *, int8: bool = True) -> tuple[StageSpec, ...]:
    """Compute, latency and activation targets: channel pruning first. Then, for a latency target on ONNX
    Runtime (which runs int8 kernels), int8 last (it cuts latency and weight bytes; k-means ONNX runs at
    fp32 speed); for a weight-byte target without one, weight sharing (k-means) last.

    ``ratios`` (target -> limit / original, when known) settles a latency target WITH a byte target: int8
    stores a quarter of fp32 and a structural stage leaves weights roughly in proportion to the time it
    leaves, so a byte ratio under a quarter of the latency ratio would have pruning cut far below the
    latency target just for bytes; k-means (4 bits and fewer) is last instead and pruning owns the latency.
    ``int8=False``: int8 measured no faster than fp32 on this model (compress checks), so it is not a stage.
    """
    ratios = ratios or {}
    stages = []
    if targets & {"macs", "params", "latency_ms", "activation_bytes"}:
        stages.append(StageSpec("prune"))
    bytes_too_tight_for_int8 = ratios.get("weight_bytes", 1.0) < INT8_BYTES * ratios.get("latency_ms", 1.0)
    if int8 and "latency_ms" in targets and runtime in INT8_RUNTIMES and not bytes_too_tight_for_int8:
        stages.append(StageSpec("int8"))
    elif "weight_bytes" in targets:
        stages.append(StageSpec("kmeans"))
    if not stages:
        raise ConfigError("compress needs a hardware target: one of --macs, --params, --weight-bytes, --latency, "
                          "--activation-bytes")
    return tuple(stages)


def assign_targets(stages: tuple[StageSpec, ...], targets: set[str]) -> list[set[str]]:
    """For each stage, the targets it owns (each target goes to the last stage that can move it)."""
    owned: list[set[str]] = [set() for _ in stages]
    for t in targets:
        movers = [i for i, s in enumerate(stages) if t in MOVES[s.method]]
        searched = [i for i in movers if stages[i].method != "int8"]
        movers = searched or movers
        if not movers:
            names = ",".join(s.name for s in stages)
            raise ConfigError(f"{flag(t)} cannot be reached by --recipe {names}: no stage changes it "
                              "(add prune or lowrank, or use --recipe auto)")
        owned[movers[-1]].add(t)
    return owned
