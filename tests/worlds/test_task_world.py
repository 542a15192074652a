"""The task world: its format is the package's prompt format, training is reproducible,
and on the shipped checkpoints the pipelines find task and function vectors where the
world has them (and not where it cannot).

The shipped worlds (``icl_lens/data/worlds``) are the default configurations trained
from their fixed seeds by ``scripts/train_worlds.py``; ``test_training_reproduces_the_shipped_run``
retrains the first steps and compares them with the shipped early checkpoint.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

import icl_lens as il
from icl_lens.worlds import (
    TaskToyConfig,
    check_vectors,
    load_world,
    train_task_toy,
    vector_emergence,
    world_tasks,
)
from icl_lens.worlds.task_run import TEMPLATE, build_task_model
from icl_lens.worlds.task_world import arrow_positions, task_outputs, world_batch, world_loss


@pytest.fixture(scope="module")
def tasks_world():
    return load_world("tasks")


@pytest.mark.parametrize("world", ["tasks", "control"])
def test_package_prompts_are_training_sequences(world):
    config = TaskToyConfig(world=world)
    model = build_task_model(config, eval_mode=True)
    batch = world_batch(config, 4, torch.Generator().manual_seed(0))
    task = world_tasks(config)[0]
    prompts = il.build_prompts(model, task, n_shots=3, n_prompts=4, template=TEMPLATE)
    w = config.demo_width
    for row, demos, query in zip(prompts.tokens, prompts.demos, prompts.queries):
        text = "".join(f"{x} -> {y}\n" for x, y in demos) + f"{query} ->"
        assert row.tolist() == model.tokenizer(text).input_ids  # one token per piece, BOS first
        assert len(row) == 1 + 3 * w + config.input_width + 1
        # same layout as a training sequence: arrows and newlines at the same places
        assert (row[arrow_positions(config)[:3]] == batch.tokens[0, arrow_positions(config)[:3]]).all()
        assert (row[w::w][:3] == batch.tokens[0, w::w][:3]).all()
    assert "<unk>" not in model.tokenizer.convert_ids_to_tokens(prompts.tokens.flatten().tolist())


def test_world_tasks_are_the_functions_they_name():
    config = TaskToyConfig(tasks=("copy", "successor", "shift_5", "permutation_0", "parity", "colour"))
    tasks = {t.name: t for t in world_tasks(config)}
    assert all(isinstance(t, il.Task) for t in tasks.values())
    n = config.n_inputs
    assert dict(tasks["successor"].pairs)["63"] == "0" and dict(tasks["shift_5"].pairs)["62"] == "3"
    assert dict(tasks["copy"].pairs)["17"] == "17" and dict(tasks["parity"].pairs)["17"] == "odd"
    assert sorted(int(y) for y in task_outputs(config, "permutation_0")) == list(range(n))
    assert task_outputs(config, "permutation_0") != task_outputs(config, "permutation_1")
    assert sorted(set(tasks["colour"].outputs)) == sorted(tasks["colour"].labels)
    assert [tasks["colour"].outputs.count(c) for c in tasks["colour"].labels] == [n // 4] * 4
    control = world_tasks(TaskToyConfig(world="control"))
    assert len(control) == 6 and control[0].pairs[0][0].split()[1] == "0"
    # a naming maps each class to one word; two namings differ
    for t in control:
        by_class = {x.split()[0]: y for x, y in t.pairs}
        assert all(dict(t.pairs)[x] == by_class[x.split()[0]] for x in t.inputs)
    assert control[0].outputs != control[1].outputs
    with pytest.raises(il.ConfigError):
        TaskToyConfig(tasks=("copy", "antonym"))
    with pytest.raises(il.ConfigError):
        TaskToyConfig(world="other")
    with pytest.raises(il.ConfigError):
        TaskToyConfig(tvp_layer=4)


def test_tvp_loss_reads_the_zero_shot_answer_through_the_injected_icl_state():
    natural = TaskToyConfig(tvp_layer=None, n_layers=2)
    tvp = natural.replace(tvp_layer=0, tvp_weight=1.0)
    model = build_task_model(natural)
    batch = world_batch(natural, 8, torch.Generator().manual_seed(0))
    tvp_term = float((world_loss(model, tvp, batch) - world_loss(model, natural, batch)).detach())
    assert tvp_term > 1.0  # an untrained model's zero-shot cross-entropy, about ln(vocabulary)
    # the zero-shot prompt is unchanged; only the demonstrations the state was read from differ
    other = dataclasses.replace(batch, tokens=batch.tokens.roll(1, dims=0))
    changed = float((world_loss(model, tvp, other) - world_loss(model, natural, other)).detach())
    assert abs(changed - tvp_term) > 1e-4
    for p in model.parameters():
        p.grad = None
    (world_loss(model, tvp, batch) - world_loss(model, natural, batch)).backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.blocks[0].attn.parameters() if p.grad is not None)


def test_training_reproduces_the_shipped_run(tmp_path, tasks_world):
    config = TaskToyConfig()
    assert tasks_world.config == config  # the shipped world is the default configuration
    early = tasks_world.checkpoint_steps[0]
    run = train_task_toy(config, tmp_path / "run", stop_after=early, show_progress=False)
    retrained = load_file(str(run.checkpoint_path(early)))
    shipped = load_file(str(tasks_world.checkpoint_path(early)))
    assert retrained.keys() == shipped.keys()
    for key in shipped:
        assert torch.allclose(retrained[key], shipped[key], atol=1e-5, rtol=1e-4), key
    assert torch.allclose(run.train_loss.float(), tasks_world.train_loss[:early].float(), atol=1e-5)


@pytest.mark.slow
def test_task_and_function_vectors_are_found_in_the_task_world(tasks_world):
    result = check_vectors(tasks_world.model, list(tasks_world.tasks))
    df = result.to_dataframe().set_index("task")
    pooled = df.loc["all tasks"]
    assert pooled.icl >= 0.9
    assert pooled.task_vector / pooled.icl >= 0.8
    assert pooled.function_vector - pooled.zero_shot >= 0.5
    assert result.verdict("task_vector") == "found" and result.verdict("function_vector") == "found"
    assert pooled.task_vector_recovered_ci_low >= 0.5 and pooled.n_test == 6 * 13
    assert pooled.icl_ci_low < pooled.icl <= pooled.icl_ci_high


@pytest.mark.slow
def test_task_vectors_are_not_found_without_the_tvp_loss():
    natural = load_world("tasks_natural")
    assert natural.config == TaskToyConfig(tvp_layer=None)
    result = check_vectors(natural.model, list(natural.tasks), function_vectors=False)
    assert result.outcomes("icl").float().mean() >= 0.9  # ICL is as good as in the TVP world
    ratio, low, high = result.recovered("task_vector")
    assert result.verdict("task_vector") == "not found" and high < 0.5
    assert "NOT FOUND" in result.summary()
    # and the implanted vector leaves the model at zero-shot: no significant lift
    assert not result.lift("task_vector").significant


def test_emergence_over_checkpoints_of_a_short_run(tmp_path):
    config = TaskToyConfig(n_layers=2, n_steps=6, checkpoint_every=3, batch_size=4)
    run = train_task_toy(config, tmp_path / "run", show_progress=False)
    assert run.checkpoint_steps == (0, 3, 6)
    em = vector_emergence(run, steps=(0, 6))
    assert em.correct.shape == (2, 3, 6 * 13)
    assert em.verdicts() == ["no ICL", "no ICL"]  # six steps teach nothing
    assert em.task_vector_step is None
    df = em.to_dataframe()
    assert list(df.step) == [0, 6] and (df.icl_ci_low <= df.icl).all()
    with pytest.raises(il.ConfigError):
        vector_emergence(run, steps=(4,))
