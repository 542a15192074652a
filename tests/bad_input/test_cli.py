"""Bad input, class "the command line": every bad argument is one line on stderr, fast, non-zero.

``icl-lens`` checks all its arguments (task names and files, model folders, the output
folder, the text file, numbers, study specs) before torch is imported or a model loads.
Exit status: 2 for a bad argument, 1 for an error or a report whose sections all failed,
3 for a report where some sections failed and others worked.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icl_lens import cli


def _command() -> list[str]:
    script = Path(sys.executable).parent / "icl-lens"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "icl_lens"]


def _run(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([*_command(), *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


BAD = {
    "no command": [],
    "unknown command": ["explain"],
    "unknown size": ["report", "--size", "huge"],
    "unknown section": ["report", "--sections", "everything"],
    "seed not an int": ["report", "--seed", "1.5"],
    "negative seed": ["report", "--seed", "-1"],
    "unknown task": ["report", "--task", "antonyms"],
    "missing task file": ["fv", "--task", "mine.csv"],
    "task file without header": ["tv", "--task", "noheader.csv"],
    "model folder missing": ["report", "--model", "./models/mine"],
    "unknown toy world": ["report", "--model", "toy:permutations"],
    "task not in the toy world": ["tv", "--model", "toy:tasks", "--task", "antonym"],
    "model folder empty": ["induction", "--model", "empty_model"],
    "out is a file": ["report", "--out", "a_file"],
    "out section holds other files": ["fv", "--out", "taken"],
    "text file missing": ["report", "--text", "novel.txt"],
    "shots not ints": ["accuracy", "--shots", "0", "1.5"],
    "n-prompts zero": ["accuracy", "--n-prompts", "0"],
    "study spec missing": ["study", "run", "nope.toml"],
    "study merge spec missing": ["study", "merge", "nope.toml", "--out", "merged"],
    "study subcommand": ["study", "launch", "x.toml"],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "noheader.csv").write_text("hot,cold\nup,down\n")
    (d / "empty_model").mkdir()
    (d / "a_file").write_text("keep")
    (d / "taken" / "function_vector").mkdir(parents=True)
    (d / "taken" / "function_vector" / "mine.txt").write_text("keep")
    return d


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_argument_is_one_line_fast_and_non_zero(workdir, case):
    done, wall, cpu = _run(BAD[case], workdir)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == cli.EXIT_USAGE, (case, done.returncode, done.stderr)
    assert 1 <= len(lines) <= 3, (case, done.stderr)
    assert "Traceback" not in done.stderr and all(line.startswith("icl-lens") for line in lines), done.stderr
    # Within 2 s: torch is never imported (it alone costs ~2.5 s of CPU). CPU time is the
    # measure that does not depend on how loaded the machine running the tests is.
    assert cpu < 1.5, (case, cpu)
    assert wall < 20, (case, wall)
    assert (workdir / "a_file").read_text() == "keep"
    assert (workdir / "taken" / "function_vector" / "mine.txt").read_text() == "keep"


def test_several_bad_arguments_fit_three_lines(workdir):
    done, _, _ = _run(["report", "--task", "nope", "--seed", "-2", "--out", "a_file", "--text", "x.txt"], workdir)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == cli.EXIT_USAGE and len(lines) == 3
    assert "more problems" in lines[-1]


def test_the_parser_imports_nothing_heavy():
    code = (
        "import sys; from icl_lens import cli; "
        "args = cli.build_parser().parse_args(['report', '--task', 'antonym']); "
        "assert cli.check_arguments(args) == [], cli.check_arguments(args); "
        "print(sorted(m for m in ('torch', 'transformers', 'transformer_lens', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def _errors(capsys) -> list[str]:
    """The error lines on stderr (the others are progress: 'loaded ... in 2.1 s')."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.strip().splitlines() if line.startswith("icl-lens")]


@pytest.fixture(scope="module")
def small_task(tmp_path_factory):
    """A task too small for a 5-shot prompt: the sections that need one fail."""
    path = tmp_path_factory.mktemp("task") / "three.json"
    path.write_text(json.dumps([{"input": a, "output": b} for a, b in (("a", "b"), ("c", "d"), ("e", "f"))]))
    return path


def test_report_exit_status_tells_all_failed_from_partly_failed(tiny_hf_dir, small_task, tmp_path, capsys):
    common = ["report", "--model", str(tiny_hf_dir), "--task", str(small_task), "--size", "tiny", "--no-attention-view"]
    # Every section that runs fails (a 3-pair task cannot make 5-shot prompts): status 1.
    assert cli.main([*common, "--sections", "accuracy", "function_vector", "--out", str(tmp_path / "a")]) == 1
    err = _errors(capsys)
    assert len(err) == 1 and "2 of 2 sections failed (accuracy, function_vector)" in err[0]
    # One fails, one works: status 3, and the working section is written.
    assert cli.main([*common, "--sections", "accuracy", "induction", "--out", str(tmp_path / "b")]) == 3
    err = _errors(capsys)
    assert len(err) == 1 and "1 of 2 sections failed (accuracy)" in err[0]
    assert (tmp_path / "b" / "induction" / "result.json").is_file()
    # --strict makes a partial failure status 1.
    args = [*common, "--sections", "accuracy", "induction", "--out", str(tmp_path / "c"), "--strict"]
    assert cli.main(args) == 1


def test_an_error_during_a_command_is_one_line_not_a_traceback(tiny_hf_dir, small_task, tmp_path, capsys):
    code = cli.main(
        ["fv", "--model", str(tiny_hf_dir), "--task", str(small_task), "--size", "tiny", "--out", str(tmp_path)]
    )
    assert code == cli.EXIT_ERROR
    err = _errors(capsys)
    assert len(err) == 1 and "Traceback" not in err[0] and "Function vector failed" in err[0]
