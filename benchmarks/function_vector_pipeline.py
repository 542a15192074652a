"""Time and memory of the whole function-vector pipeline on SmolLM2, against a plain reference.

The pipeline, with default sizes (Todd et al.: 10 shots, 100 mean prompts, 25 shuffled
prompts for the AIE of all 270 heads, top 10 heads), for one task:

1. ``il.function_vector``: clean prompts filtered to correct answers, mean ``hook_z``,
   the AIE of every head (the patching engine's fast exact path), the vector;
2. ``il.evaluate_implant``: layer sweep on dev and test, the five conditions on test, KL,
   the specificity matrix and the natural-text check.

The reference is the original implementation's way of computing the AIE: one full
forward per head per prompt. It is timed on a subset of (head, prompt) pairs and
extrapolated to all 270 x 25 (said so in the output); its values are compared with the
engine's on that subset.

    python benchmarks/function_vector_pipeline.py [--task antonym] [--ref-heads 3 --ref-prompts 4] [--roofline] [--no-bf16]

The pipeline then runs again on the model loaded in bfloat16 (matmuls at twice the float32
rate on this CPU), with how far its findings are from float32's, and the float32 vector is
swept over every layer of the bfloat16 model on the fast and the plain path: the engine's
own rounding apart from the bfloat16 model's. ``--no-bf16`` skips both.

``--roofline`` runs the pipeline a second time under ``torch.profiler`` to count its matrix
multiplications' FLOPs, and prints how long those alone take at the matmul rate measured in
this process: the floor that no implementation computing the same products in float32 can
beat on this machine.

Timings depend on the machine's load; the output states the number of threads and the
load average when it started.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import warnings

import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.patching import head_sweep
from icl_lens.vectors.common import split_task


def peak_rss_gb() -> float:
    """Peak resident memory since the start, or since the last :func:`reset_peak` (GiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: kB; never reset


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux), so the pipeline's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    """CPU time of this process (all threads): on a shared machine, wall time overstates the work."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def reference_aie(model, batch, mean_z, heads):
    """One full forward per (head, prompt): the plain way. Returns [len(heads), batch] prob changes."""
    out = torch.zeros(len(heads), len(batch))
    with torch.no_grad():
        for i in range(len(batch)):
            one = batch.select([i])
            clean = hooks.forward(model, one.tokens, one.attention_mask)[0, -1].float().softmax(-1)
            base = float(clean[one.answer_ids[0]])
            for j, (l, h) in enumerate(heads):

                def patch(act, hook, l=l, h=h):
                    act = act.clone()
                    act[:, -1, h] = mean_z[l, h].to(act)
                    return act

                logits = hooks.forward(model, one.tokens, one.attention_mask, [(hooks.z(l), patch)])
                out[j, i] = float(logits[0, -1].float().softmax(-1)[one.answer_ids[0]]) - base
    return out


def roofline(model, task: str, wall: float) -> None:
    """The pipeline's matmul FLOPs (profiled second run) against this process's matmul rate."""
    from _shared import matmul_rate
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fv = il.function_vector(model, task)
        il.evaluate_implant(model, task, fv)
    flops = sum(e.flops for e in prof.key_averages() if e.flops)
    rate = matmul_rate(25 * 90, 576, 1536)
    floor = flops / (rate * 1e9)
    print(
        f"roofline: the pipeline's matrix multiplications are {flops / 1e12:.2f} TFLOP (torch.profiler); at "
        f"this process's matmul rate ({rate:.0f} GFLOP/s, [2250 x 576] @ [576 x 1536]) they alone take "
        f"{floor:.1f} s, so the {wall:.1f} s run is at {floor / wall:.0%} of the matmul rate end to end; a "
        f"35 s pipeline needs {floor / 35:.0%}"
    )


def run_pipeline(model, task: str):
    """``function_vector`` then ``evaluate_implant``: the results and the two stages' wall times."""
    t0 = time.perf_counter()
    fv = il.function_vector(model, task)
    t1 = time.perf_counter()
    ev = il.evaluate_implant(model, task, fv)
    return fv, ev, t1 - t0, time.perf_counter() - t1


def compare_bfloat16(model32, task: str, fv32, ev32, wall32: float) -> None:
    """The same pipeline on the model loaded in bfloat16 (the fast engine applies there too,
    with the dtype's own tolerance), and how far its findings are from float32's; then the
    float32 vector swept over every layer of the bfloat16 model on the fast and the plain
    path, which separates the engine's rounding from the bfloat16 model's own."""
    from scipy import stats

    from icl_lens.patching.steering import layer_sweep

    model = il.load_model("smollm2", dtype="bfloat16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        t0 = time.perf_counter()
        fv, ev, t_fv, t_eval = run_pipeline(model, task)
        wall = time.perf_counter() - t0
    fell_back = sum("disagrees" in str(w.message) for w in caught)
    rho = stats.spearmanr(fv32.aie.flatten().numpy(), fv.aie.flatten().numpy()).statistic
    shared = len(set(fv32.heads) & set(fv.heads))
    layer_gap = (ev32.layer_test_accuracy - ev.layer_test_accuracy).abs().max()
    gaps = (ev32.accuracy - ev.accuracy).abs()
    worst = ev.conditions[int(gaps.argmax())]
    flipped = int((ev32.correct != ev.correct).sum())
    print(
        f"bfloat16 pipeline ({task}): function_vector {t_fv:.1f} s + evaluate_implant {t_eval:.1f} s = {wall:.1f} s "
        f"wall ({wall32 / wall:.2f}x float32's {wall32:.1f} s; target <= 35 s), {fv.sweep_method} engine"
        f"{f', {fell_back} fallback warning(s)' if fell_back else ', no fallback'}; against float32: AIE "
        f"Spearman {rho:.3f}, top-{len(fv.heads)} heads {shared} shared, per-layer test accuracy within "
        f"{float(layer_gap):.0%}, condition accuracies within {float(gaps.max()):.0%} ({worst}; {flipped} of {ev.correct.numel()} "
        f"(condition, query) outcomes differ), dev-chosen layer "
        f"{ev.layer} (float32: {ev32.layer})"
    )
    test = split_task(il.load_task(task), fv32.config.split, fv32.config.split_seed)[2]
    zero = il.build_prompts(model, test, 0, 50, 0, fv32.origin.template, kind="zero_shot")
    n_layers = hooks.spec(model).n_layers
    kw = dict(vectors=fv32.vector[None].expand(n_layers, -1), operation="add", layers=range(n_layers), batch_size=25)
    fast = layer_sweep(model, zero, method="fast", **kw)
    plain = layer_sweep(model, zero, method="plain", **kw)
    exact = layer_sweep(model32, zero, **kw)
    print(
        f"bfloat16 engine vs bfloat16 plain path, the float32 vector at each of {n_layers} layers on {len(zero)} "
        f"test queries: {int((fast != plain).sum())} of {fast.numel()} top-1 outcomes differ (the bfloat16 "
        f"model against float32: {int((plain != exact).sum())})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="antonym")
    parser.add_argument("--ref-heads", type=int, default=3, help="heads in the timed reference subset")
    parser.add_argument("--ref-prompts", type=int, default=4, help="prompts in the timed reference subset")
    parser.add_argument("--roofline", action="store_true", help="count the pipeline's matmul FLOPs (a second run)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 run and its comparison")
    args = parser.parse_args()
    il.set_progress(False)
    load = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average {load[0]:.1f} at start")

    t = time.perf_counter()
    model = il.load_model("smollm2")
    print(
        f"model load: {time.perf_counter() - t:.1f} s (not counted), peak RSS while loading {peak_rss_gb():.2f} GiB "
        "(booted from the cached processed weights)"
    )
    reset = reset_peak()

    t0, c0 = time.perf_counter(), cpu_seconds()
    fv, ev, t_fv, t_eval = run_pipeline(model, args.task)
    total = time.perf_counter() - t0
    cpu = cpu_seconds() - c0
    load_end = os.getloadavg()[0]
    print(
        f"pipeline ({args.task}): function_vector {t_fv:.1f} s (mean over {fv.n_mean_used} of {fv.n_candidates} "
        f"prompts, AIE of 270 heads x {fv.config.n_aie_prompts} prompts, {fv.sweep_method} engine) + "
        f"evaluate_implant {t_eval:.1f} s = {total:.1f} s wall total (target <= 35 s on a quiet 2-core "
        f"machine); CPU time {cpu:.1f} s over {torch.get_num_threads()} threads (load average {load_end:.1f} "
        f"at the end); peak RSS {'during the pipeline' if reset else 'including the model load'} "
        f"{peak_rss_gb():.2f} GiB (target <= 1.5 GiB)"
    )
    print(f"  {ev.summary()}")
    if not args.no_bf16:
        compare_bfloat16(model, args.task, fv, ev, total)
    if args.roofline:
        roofline(model, args.task, total)

    # The AIE sweep alone, to compare like with like against the reference.
    train = split_task(il.load_task(args.task), fv.config.split, fv.config.split_seed)[0]
    shuffled = il.build_prompts(model, train, 10, fv.config.n_aie_prompts, fv.config.seed + 1, "todd", kind="shuffled")
    t = time.perf_counter()
    sweep = head_sweep(model, shuffled, fv.mean_z, metric="prob", batch_size=fv.config.batch_size)
    t_sweep = time.perf_counter() - t
    heads = fv.ranking()[: args.ref_heads]
    subset = shuffled.select(list(range(args.ref_prompts)))
    t = time.perf_counter()
    ref = reference_aie(model, subset, fv.mean_z, heads)
    t_ref = time.perf_counter() - t
    n_forwards = args.ref_prompts * (args.ref_heads + 1)
    per_forward = t_ref / n_forwards
    full_ref = per_forward * len(shuffled) * (270 + 1)
    ours = torch.stack([sweep.patched[l, h, : args.ref_prompts] - sweep.baseline[: args.ref_prompts] for l, h in heads])
    print(
        f"AIE sweep: engine {t_sweep:.1f} s for 270 heads x {len(shuffled)} prompts; plain reference "
        f"{per_forward:.3f} s per forward, measured on {args.ref_heads} heads x {args.ref_prompts} prompts "
        f"({n_forwards} forwards, {t_ref:.1f} s) and EXTRAPOLATED to 271 x {len(shuffled)} forwards: "
        f"{full_ref:.0f} s; ratio {full_ref / t_sweep:.1f}x; max |engine - reference| on the subset "
        f"{float((ours - ref).abs().max()):.2e}"
    )


if __name__ == "__main__":
    main()
