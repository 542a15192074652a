"""Tasks, templates, prompt batches with every token position recorded, and ICL accuracy."""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.prompting import *`.
if TYPE_CHECKING:
    from icl_lens.prompting.evaluation import (
        IclEvalConfig as IclEvalConfig,
        evaluate_icl as evaluate_icl,
        next_token_logprobs as next_token_logprobs,
    )
    from icl_lens.prompting.evaluation_result import IclAccuracyResult as IclAccuracyResult
    from icl_lens.prompting.prompts import PromptBatch as PromptBatch, build_prompts as build_prompts
    from icl_lens.prompting.tasks import (
        Task as Task,
        list_tasks as list_tasks,
        load_task as load_task,
        task_info as task_info,
    )
    from icl_lens.prompting.templates import HENDEL as HENDEL, TODD as TODD, Template as Template

__getattr__, __dir__ = lazy_exports(__name__, __file__)
