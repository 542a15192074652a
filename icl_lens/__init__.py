"""icl_lens: take in-context learning apart with TransformerLens.

The public API is what this module exports; everything else is an implementation module.
"""

from icl_lens._progress import set_progress as set_progress
from icl_lens.errors import (
    ConfigError as ConfigError,
)
from icl_lens.errors import (
    IclLensError as IclLensError,
)
from icl_lens.errors import (
    ModelContractError as ModelContractError,
)
from icl_lens.errors import (
    ModelNotAvailableError as ModelNotAvailableError,
)
from icl_lens.errors import (
    PromptError as PromptError,
)
from icl_lens.errors import (
    ResultFileError as ResultFileError,
)
from icl_lens.errors import (
    TaskError as TaskError,
)
from icl_lens.evaluation import (
    IclAccuracyResult as IclAccuracyResult,
)
from icl_lens.evaluation import (
    IclEvalConfig as IclEvalConfig,
)
from icl_lens.evaluation import (
    answer_logprobs as answer_logprobs,
)
from icl_lens.evaluation import (
    evaluate_icl as evaluate_icl,
)
from icl_lens.hooks import ModelSpec as ModelSpec
from icl_lens.hooks import count_hooks as count_hooks
from icl_lens.hooks import model_spec as model_spec
from icl_lens.models import char_tokenizer as char_tokenizer
from icl_lens.models import load_model as load_model
from icl_lens.models import tiny_model as tiny_model
from icl_lens.prompts import (
    HENDEL as HENDEL,
)
from icl_lens.prompts import (
    TODD as TODD,
)
from icl_lens.prompts import (
    PromptBatch as PromptBatch,
)
from icl_lens.prompts import (
    Template as Template,
)
from icl_lens.prompts import (
    build_prompts as build_prompts,
)
from icl_lens.results import Config as Config
from icl_lens.results import Result as Result
from icl_lens.results import load_result as load_result
from icl_lens.tasks import Task as Task
from icl_lens.tasks import list_tasks as list_tasks
from icl_lens.tasks import load_task as load_task
from icl_lens.tasks import task_info as task_info

# --- patching (issue 4) ---

# --- induction, icl score, phase change (issue 3) ---

# --- kernel regression, fine-tuning, recognition vs learning (issue 6) ---

# --- function vectors, task vectors, implants (issue 5) ---

__version__ = "0.1.0"
