"""Resume inside a search: every finished trial (a measured point, a CPO step, an iterative round) is saved.

A trial is a fine-tune plus an evaluation, minutes each on real models, so a killed search must not
redo them. The log is one file in the run's staging folder (``search-trials.pt``, registered with
:meth:`slimcnn.run.RunDir.state_file`): the run manifest already guarantees that a re-run with it
has the same model, data and options, and the log also records the baseline it was measured
against, so a log from another model or validation subset is ignored. Trials are keyed by what
determines them (the assignment, CPO's parent state, the round), never by their order, and each may
carry a payload (the fine-tuned model a later trial or the result builds on). Only rank 0 reads and writes
it; inside a process group the other ranks receive what rank 0 read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from slimcnn._io import save_torch
from slimcnn.errors import ModelLoadError
from slimcnn.progress import progress_log
from slimcnn.train import is_main
from slimcnn.train._distributed import from_main

log = logging.getLogger(__name__)

FORMAT = "slimcnn-search-trials/1"


def trial_key(kind: str, what: Any) -> str:
    """A trial's identity in the log: its kind and what determines it (canonical JSON)."""
    return f"{kind}:{json.dumps(what, sort_keys=True)}"


class TrialLog:
    """Finished trials of one search, read from and rewritten to ``path`` after every trial.

    Args:
        path: the log file; None keeps trials in memory only (a library call without a run folder).
        baseline: what every trial was measured against (e.g. the baseline metric and MACs); a log
            written against another baseline is ignored with a warning.
    """

    def __init__(self, path: str | Path | None, baseline: dict[str, float]) -> None:
        self.path = Path(path) if path is not None else None
        self.baseline = baseline
        self.records: dict[str, Any] = {}
        self.payloads: dict[str, Any] = {}
        self.resumed = 0
        """Trials answered from the log in this run."""
        self._reached: set[str] = set()
        """Trials this run has reached (answered or measured); later ones keep their payloads."""
        # rank 0 reads, every rank resumes from what it read (the others may not see the file, or see it later)
        found = from_main(lambda: self._load(self.path) if self.path is not None and self.path.is_file() else None)
        if found is not None:
            self.records, self.payloads = found

    def _load(self, path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(records, payloads)`` of the log at ``path``; None (with a warning) when it cannot be used."""
        from slimcnn.models._weights import torch_load

        try:
            data = torch_load(path, weights_only=False)  # our own staging file: it holds modules
        except ModelLoadError as e:
            log.warning("ignoring the search's trial log (%s); measuring every trial anew", e)
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            log.warning("ignoring %s: not a slimcnn search trial log", path)
        elif data.get("baseline") != self.baseline:
            log.warning("ignoring %s: its trials were measured against another baseline", path)
        else:
            # progress, not a warning: compress reuses a stage's own log when its search re-runs another way
            progress_log.info("reusing %d measured trials of %s", len(data["records"]), path.name)
            return dict(data["records"]), dict(data["payloads"])
        return None

    def get(self, key: str) -> tuple[Any, Any] | None:
        """``(record, payload)`` of a finished trial, or None when it has to be measured."""
        self._reached.add(key)
        if key not in self.records:
            return None
        self.resumed += 1
        return self.records[key], self.payloads.get(key)

    def put(self, key: str, record: Any, payload: Any = None) -> None:
        """Record a finished trial (and its payload) and save the log."""
        self._reached.add(key)
        self.records[key] = record
        if payload is not None:
            self.payloads[key] = payload
        self._save()

    def keep_payloads(self, keys: set[str]) -> None:
        """Drop payloads no later trial can use (bounds the file to the models still needed).

        Only trials this run has reached are dropped: while a re-run replays the log, the payloads of
        the trials it has not replayed yet are still ahead of it.
        """
        dropped = [k for k in self.payloads if k not in keys and k in self._reached]
        for k in dropped:
            del self.payloads[k]
        if dropped:
            self._save()

    def _save(self) -> None:
        if self.path is not None and is_main():
            save_torch(self.path, {"format": FORMAT, "baseline": self.baseline, "records": self.records,
                                   "payloads": self.payloads})
