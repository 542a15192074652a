"""A study as SLURM job arrays, for clusters without Ray.

``study.export_slurm()`` (or ``icl-lens study slurm spec.toml``) writes, in
``<output>/slurm/``:

* ``units-<model>.tsv``: one line per array index, a bundle of units of one model and
  one task (the units a task needs run in order, on one model load): ``index``, model,
  task, unit keys;
* ``job-<model>.sbatch``: the job array, with the model's resources (``--cpus-per-task``,
  ``--gres=gpu:N``), whose command runs the bundle of ``$SLURM_ARRAY_TASK_ID``:
  ``python -m icl_lens study run-bundle SPEC --bundles units-<model>.tsv --index $SLURM_ARRAY_TASK_ID``;
* ``finish.sbatch``: after every array, ``icl-lens study run`` (the stage-2 units, and any
  unit whose array task failed) then ``icl-lens study merge``;
* ``submit.sh``: submits the arrays and the finishing job with ``--dependency=afterany``.

Array tasks write to the study's output folder, which must be on a shared file system.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from icl_lens.studies.spec import StudySpecError
from icl_lens.studies.units import Unit

if TYPE_CHECKING:
    from icl_lens.studies.study import Study


@dataclasses.dataclass(frozen=True)
class SlurmExport:
    """What :func:`export_slurm` wrote: the folder, the array scripts and their bundle lists."""

    directory: Path
    scripts: tuple[Path, ...]
    bundle_files: tuple[Path, ...]
    finish: Path
    submit: Path
    n_tasks: int


def bundles_of(units: list[Unit]) -> list[list[Unit]]:
    """Units grouped by (model, task), in the order the study lists them (needed units first)."""
    groups: dict[tuple[str, str | None], list[Unit]] = {}
    for u in units:
        groups.setdefault((u.model, u.task), []).append(u)
    return list(groups.values())


def export_slurm(study: Study, directory: str | Path | None = None) -> SlurmExport:
    """Write the job arrays of ``study`` (see the module docstring) and return what was written."""
    spec = study.spec
    if spec.path is None:
        raise StudySpecError("a SLURM export needs a spec saved as a file (Study.from_file): array tasks read it")
    if any(m.loader is not None for m in spec.models):
        raise StudySpecError("models given as Python loaders cannot run in SLURM jobs; name them by source")
    out = Path(directory) if directory is not None else study.output / "slurm"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    spec_path = Path(spec.path).resolve()
    python = spec.slurm.python
    scripts, lists, n_tasks = [], [], 0
    for m in spec.models:
        bundles = bundles_of(study.units(m.name))
        if not bundles:
            continue
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in m.name)
        listing = out / f"units-{safe}.tsv"
        listing.write_text(
            "".join(
                f"{i}\t{b[0].model}\t{b[0].task or '-'}\t{','.join(u.key for u in b)}\n" for i, b in enumerate(bundles)
            )
        )
        res = m.resources if m.resources is not None else spec.resources
        lines = _header(study, f"{spec.name}-{safe}", out, res.num_cpus, res.num_gpus)
        array = f"0-{len(bundles) - 1}" + (f"%{spec.slurm.max_parallel}" if spec.slurm.max_parallel else "")
        lines.insert(2, f"#SBATCH --array={array}")
        lines += [
            " ".join(
                [
                    shlex.quote(python),
                    "-m icl_lens study run-bundle",
                    shlex.quote(str(spec_path)),
                    "--bundles",
                    shlex.quote(str(listing.resolve())),
                    '--index "${SLURM_ARRAY_TASK_ID}"',
                ]
            ),
            "",
        ]
        script = out / f"job-{safe}.sbatch"
        script.write_text("\n".join(lines))
        scripts.append(script)
        lists.append(listing)
        n_tasks += len(bundles)
    finish = out / "finish.sbatch"
    finish_lines = _header(study, f"{spec.name}-finish", out, spec.resources.num_cpus, spec.resources.num_gpus)
    finish_lines += [
        f"{shlex.quote(python)} -m icl_lens study run {shlex.quote(str(spec_path))}",
        f"{shlex.quote(python)} -m icl_lens study merge {shlex.quote(str(spec_path))}",
        "",
    ]
    finish.write_text("\n".join(finish_lines))
    submit = out / "submit.sh"
    jobs = [f'ids="$ids:$(sbatch --parsable {shlex.quote(str(s.resolve()))})"' for s in scripts]
    submit.write_text(
        "\n".join(
            [
                "#!/bin/bash",
                f"# Submits the {len(scripts)} job array(s) of study {spec.name!r}, then the finishing job.",
                "set -euo pipefail",
                'ids=""',
                *jobs,
                f"sbatch --dependency=afterany$ids {shlex.quote(str(finish.resolve()))}",
                "",
            ]
        )
    )
    submit.chmod(0o755)
    return SlurmExport(out, tuple(scripts), tuple(lists), finish, submit, n_tasks)


def _header(study: Study, job: str, out: Path, cpus: float | None, gpus: float) -> list[str]:
    s = study.spec.slurm
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job}", f"#SBATCH --time={s.time}"]
    lines.append(f"#SBATCH --output={(out / 'logs').resolve()}/%x_%A_%a.out")
    lines.append(f"#SBATCH --cpus-per-task={max(1, math.ceil(cpus or 1))}")
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{math.ceil(gpus)}")
    if s.partition:
        lines.append(f"#SBATCH --partition={s.partition}")
    if s.mem:
        lines.append(f"#SBATCH --mem={s.mem}")
    lines += [f"#SBATCH {x}" for x in s.sbatch]
    lines += ["set -euo pipefail", *s.setup]
    return lines


def read_bundle(path: str | Path, index: int) -> tuple[str, str | None, list[str]]:
    """Line ``index`` of a bundle list: model, task (``None`` for model-only units), unit keys."""
    for line in Path(path).read_text().splitlines():
        i, model, task, keys = line.split("\t")
        if int(i) == index:
            return model, (None if task == "-" else task), keys.split(",")
    raise StudySpecError(f"{path} has no bundle {index}")


__all__ = ["SlurmExport", "bundles_of", "export_slurm", "read_bundle"]
