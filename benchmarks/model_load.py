"""Memory and time of loading SmolLM2 in compatibility mode, each way in a fresh process.

* ``il.load_model("smollm2")``: boots from the processed weights cached beside the
  converted model (written by the first load; see ``icl_lens.core.model_cache``);
* processing again: ``il.load_model(<converted directory>)``, which boots the raw weights
  and lets ``enable_compatibility_mode()`` fold and centre them (what every load did before).

Peak resident memory (``VmHWM``) of the process right after loading and after a first
forward pass (which reads every weight), against the process after ``import icl_lens``.

    python benchmarks/model_load.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from icl_lens.core import models

CODE = textwrap.dedent(
    """
    import sys, time, torch
    def peak():
        return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 2**20
    import icl_lens as il
    base = peak()
    t = time.perf_counter()
    m = il.load_model(sys.argv[1])
    took, loaded = time.perf_counter() - t, peak()
    with torch.no_grad():
        m(m.to_tokens("hot -> cold\\nbig -> small\\nup ->"))
    print(base, loaded, peak(), took)
    """
)


def run(name: str) -> tuple[float, float, float, float]:
    out = subprocess.run([sys.executable, "-c", CODE, name], capture_output=True, text=True, check=True)
    base, loaded, forward, took = (float(x) for x in out.stdout.split()[-4:])
    return base, loaded, forward, took


def main() -> None:
    run("smollm2")  # converts and writes the processed weights if this machine has not yet
    cached = run("smollm2")
    again = run(str(models.smollm2_dir()))
    load = os.getloadavg()[0]
    print(
        f"loading SmolLM2 (compatibility mode), peak resident memory of a fresh process: from the cached processed "
        f"weights {cached[1]:.2f} GiB after loading, {cached[2]:.2f} GiB after a first forward ({cached[3]:.1f} s) "
        f"vs processing the weights again {again[1]:.2f} GiB, {again[2]:.2f} GiB ({again[3]:.1f} s); "
        f"{cached[0]:.2f} GiB after import icl_lens | load {load:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
