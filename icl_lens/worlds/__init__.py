"""Toy worlds where the answer is known: positive and negative controls for the pipelines.

* The task world (:func:`train_task_toy`): a small transformer trained on a mixture of
  known functions shown as ``x -> f(x)`` demonstrations, in the package's own prompt
  format, so that every analysis runs on it unchanged. With the task-vector prompting
  loss (Yang et al. 2025) task and function vectors form; without it ICL is as good and
  task vectors are not there. The control world (task learning) is where they cannot help.
* :func:`check_vectors` runs the package's task- and function-vector pipelines over a
  world's tasks and says, with intervals, whether each was found;
  :func:`vector_emergence` does it over a run's checkpoints.
* In-context linear regression (:func:`train_linear_regression_toy`) and
  :func:`compare_to_gradient_descent`: one linear self-attention layer matches one step of
  gradient descent (von Oswald et al. 2023), and where that stops.
* :func:`load_world` opens the worlds shipped with the package, already trained.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy): the command line reads the
# shipped worlds' names (registry) before torch is imported. `icl_lens` re-exports them all.
if TYPE_CHECKING:
    from icl_lens.worlds.check import (
        VectorCheckConfig as VectorCheckConfig,
        check_vectors as check_vectors,
        vector_emergence as vector_emergence,
    )
    from icl_lens.worlds.check_result import EmergenceResult as EmergenceResult, VectorCheckResult as VectorCheckResult
    from icl_lens.worlds.gradient_descent import (
        GradientDescentConfig as GradientDescentConfig,
        compare_to_gradient_descent as compare_to_gradient_descent,
    )
    from icl_lens.worlds.gradient_descent_result import GradientDescentComparison as GradientDescentComparison
    from icl_lens.worlds.linear_regression import (
        LinearRegressionConfig as LinearRegressionConfig,
        LinearRegressionRun as LinearRegressionRun,
        train_linear_regression_toy as train_linear_regression_toy,
    )
    from icl_lens.worlds.registry import (
        emergence_result as emergence_result,
        list_worlds as list_worlds,
        load_world as load_world,
    )
    from icl_lens.worlds.task_run import (
        TaskToyRun as TaskToyRun,
        load_task_run as load_task_run,
        train_task_toy as train_task_toy,
    )
    from icl_lens.worlds.task_world import TaskToyConfig as TaskToyConfig, world_tasks as world_tasks

__getattr__, __dir__ = lazy_exports(__name__, __file__)
