"""Helpers for the export tests: compile and run the generated C with the system compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "slimcnn_decode.h"
#include "slim_model.h"

/* Decode every k-means layer, then every kernel-sparse weight, and copy every float tensor to OUT, in the
 * order of the tables. */
int main(int argc, char **argv) {
    size_t i;
    FILE *f;
    float *buf = (float *)malloc(sizeof(float) * (SLIM_MODEL_MAX_NUMEL ? SLIM_MODEL_MAX_NUMEL : 1));
    if (argc != 2 || buf == NULL) return 2;
    f = fopen(argv[1], "wb");
    if (f == NULL) return 2;
    for (i = 0; i < slim_model_kmeans_count; ++i) {
        const slim_kmeans_t *w = slim_model_kmeans[i];
        int rc = slim_decode(w, buf);
        if (rc != SLIM_OK) { fprintf(stderr, "%s: %d\n", w->name, rc); return 1; }
        fwrite(buf, sizeof(float), w->numel, f);
    }
    for (i = 0; i < slim_model_kernels_count; ++i) {
        const slim_kernels_t *w = slim_model_kernels[i];
        int rc = slim_decode_kernels(w, buf);
        if (rc != SLIM_OK) { fprintf(stderr, "%s: %d\n", w->name, rc); return 1; }
        fwrite(buf, sizeof(float), w->numel, f);
    }
    for (i = 0; i < slim_model_tensors_count; ++i) {
        const slim_tensor_t *t = slim_model_tensors[i];
        fwrite(t->data, sizeof(float), t->numel, f);
    }
    fclose(f);
    free(buf);
    return 0;
}
"""


def c_compiler() -> str:
    """The system C compiler, or skip."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a system C compiler (cc/gcc)")
    return cc


def compile_and_decode(folder: Path, sizes: list[int]) -> list[np.ndarray]:
    """Compile the exported C (strict C99, warnings as errors) with the harness; return each array it writes."""
    cc = c_compiler()
    (folder / "harness.c").write_text(HARNESS)
    exe = folder / "harness"
    cmd = [cc, "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o", str(exe),
           str(folder / "harness.c"), str(folder / "slimcnn_decode.c"), str(folder / "slim_model.c")]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    dump = folder / "decoded.bin"
    subprocess.run([str(exe), str(dump)], check=True, capture_output=True, timeout=60)
    flat = np.fromfile(dump, dtype=np.float32)
    assert flat.size == sum(sizes)
    out, at = [], 0
    for n in sizes:
        out.append(flat[at:at + n])
        at += n
    return out
