"""The SLURM export (its script parsed and its unit command run for one index) and the
``icl-lens study`` commands."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from icl_lens import cli
from icl_lens.studies import Study

SPEC = f"""
name = "cluster"
output = "out"
tasks = ["antonym", "uppercase"]

[[models]]
name = "tiny-a"
source = "tiny"
seed = 1
resources = {{ num_cpus = 2, num_gpus = 1 }}

[[models]]
name = "tiny-b"
source = "tiny"
seed = 2

[analyses.function_vector]
n_mean_prompts = 4
max_candidates = 4
n_aie_prompts = 4
n_shots = 3
top_k = 3

[analyses.fv_implant]
n_test = 6
n_dev = 4
specificity_tasks = []
n_natural = 0

[resources]
num_cpus = 1

[slurm]
partition = "gpu"
time = "01:00:00"
max_parallel = 8
setup = ["export OMP_NUM_THREADS=1"]
python = "{sys.executable}"
"""

# Random tiny models answer no ICL prompt: the function vector says so; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:the model answered none")


def sbatch_options(script: str) -> dict[str, str]:
    options = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            options[key] = value
    return options


@pytest.mark.slow  # the unit command starts a Python that imports torch and TransformerLens (~10-30 s)
def test_slurm_script_runs_its_unit_command_for_one_index(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    study = Study.from_file(tmp_path / "spec.toml")
    export = study.export_slurm()
    assert export.n_tasks == 4 and [p.name for p in export.scripts] == ["job-tiny-a.sbatch", "job-tiny-b.sbatch"]

    script = export.scripts[0].read_text()
    options = sbatch_options(script)
    assert options["array"] == "0-1%8"  # one array task per model and task, at most 8 at once
    assert (options["cpus-per-task"], options["gres"], options["partition"]) == ("2", "gpu:1", "gpu")
    assert "gres" not in sbatch_options(export.scripts[1].read_text())
    body = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert body[:2] == ["set -euo pipefail", "export OMP_NUM_THREADS=1"]
    command = body[-1]
    assert shlex.split(command)[:5] == [sys.executable, "-m", "icl_lens", "study", "run-bundle"]
    submit = export.submit.read_text()
    assert submit.count("sbatch --parsable") == 2 and "--dependency=afterany" in submit

    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "OMP_NUM_THREADS": "1", "ICL_LENS_PROGRESS": "0"}
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # index 1 of tiny-a's list is its uppercase bundle: the function vector, then its implant
    finished = {(u.model, u.task, u.label) for u in study.units() if study.store.is_done(u.key)}
    assert finished == {("tiny-a", "uppercase", "function_vector"), ("tiny-a", "uppercase", "fv_implant")}
    assert done.stdout.count("done") == 2


def test_study_commands_run_status_merge_and_refuse_a_bad_spec(tmp_path, capsys):
    spec = SPEC.replace('"uppercase"]', "]").split("[slurm]")[0]
    path = tmp_path / "spec.toml"
    path.write_text(spec)
    assert cli.main(["study", "run", str(path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and all(" done " in line for line in lines)  # one line per unit as it finishes
    assert "4 units, 4 done, 0 skipped, 0 failed" in out
    assert "analysis  done  skipped  failed" in out

    assert cli.main(["study", "status", str(path)]) == 0
    assert "4 units, 4 finished" in capsys.readouterr().out
    assert cli.main(["study", "merge", str(path)]) == 0
    assert (tmp_path / "out" / "merged" / "tables.md").is_file() and "vectors" in capsys.readouterr().out
    assert cli.main(["study", "run", str(path)]) == 0
    assert "4 units, 0 done, 4 skipped, 0 failed" in capsys.readouterr().out

    path.write_text(spec.replace("top_k = 3", "top_kk = 3"))
    assert cli.main(["study", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: ") and "analyses.function_vector: FunctionVectorConfig has no field 'top_kk'" in err
