"""icl_lens: take in-context learning apart with TransformerLens.

The public API is what this module exports; everything else is an implementation module.
"""

from icl_lens._progress import set_progress as set_progress

# --- function vectors, task vectors, implants (issue 5) ---
from icl_lens._vector_common import VectorMismatchError as VectorMismatchError

# --- induction, icl score, phase change (issue 3) ---
from icl_lens.ablation import ablate_heads as ablate_heads
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

# --- kernel regression, fine-tuning, recognition vs learning (issue 6) ---
from icl_lens.finetune import FinetuneComparison as FinetuneComparison
from icl_lens.finetune import IclFinetuneConfig as IclFinetuneConfig
from icl_lens.finetune import IclFinetuneResult as IclFinetuneResult
from icl_lens.finetune import compare_icl_finetuning as compare_icl_finetuning
from icl_lens.finetune import finetune_on_demos as finetune_on_demos
from icl_lens.function_vectors import FunctionVectorConfig as FunctionVectorConfig
from icl_lens.function_vectors import FunctionVectorResult as FunctionVectorResult
from icl_lens.function_vectors import function_vector as function_vector
from icl_lens.hooks import ModelSpec as ModelSpec
from icl_lens.hooks import count_hooks as count_hooks
from icl_lens.hooks import model_spec as model_spec
from icl_lens.icl_score import IclScoreConfig as IclScoreConfig
from icl_lens.icl_score import IclScoreResult as IclScoreResult
from icl_lens.icl_score import icl_score as icl_score
from icl_lens.icl_score import load_corpus as load_corpus
from icl_lens.icl_score import per_token_loss as per_token_loss
from icl_lens.implant import ImplantConfig as ImplantConfig
from icl_lens.implant import ImplantResult as ImplantResult
from icl_lens.implant import evaluate_implant as evaluate_implant
from icl_lens.induction import AblationCheckConfig as AblationCheckConfig
from icl_lens.induction import InductionAblationResult as InductionAblationResult
from icl_lens.induction import InductionConfig as InductionConfig
from icl_lens.induction import InductionHeadsResult as InductionHeadsResult
from icl_lens.induction import OfflineHTML as OfflineHTML
from icl_lens.induction import attention_view as attention_view
from icl_lens.induction import confirm_induction_heads as confirm_induction_heads
from icl_lens.induction import find_induction_heads as find_induction_heads
from icl_lens.kernel import KernelRegressionConfig as KernelRegressionConfig
from icl_lens.kernel import KernelRegressionResult as KernelRegressionResult
from icl_lens.kernel import kernel_regression as kernel_regression

# --- report, merging split sweeps (issue 7) ---
from icl_lens.merge import merge_results as merge_results
from icl_lens.models import char_tokenizer as char_tokenizer
from icl_lens.models import load_model as load_model
from icl_lens.models import tiny_model as tiny_model

# --- patching (issue 4) ---
from icl_lens.patching import HeadPatchingResult as HeadPatchingResult
from icl_lens.patching import PatchingAgreement as PatchingAgreement
from icl_lens.patching import PromptMetric as PromptMetric
from icl_lens.patching import ResidPatchingResult as ResidPatchingResult
from icl_lens.patching import add_to_resid as add_to_resid
from icl_lens.patching import answer_logprob as answer_logprob
from icl_lens.patching import answer_prob as answer_prob
from icl_lens.patching import attribution_head_sweep as attribution_head_sweep
from icl_lens.patching import attribution_resid_sweep as attribution_resid_sweep
from icl_lens.patching import head_activations as head_activations
from icl_lens.patching import head_sweep as head_sweep
from icl_lens.patching import kl_to as kl_to
from icl_lens.patching import logit_diff as logit_diff
from icl_lens.patching import mean_head_activations as mean_head_activations
from icl_lens.patching import patch_activation as patch_activation
from icl_lens.patching import patching_agreement as patching_agreement
from icl_lens.patching import replace_resid as replace_resid
from icl_lens.patching import resid_activations as resid_activations
from icl_lens.patching import resid_sweep as resid_sweep
from icl_lens.patching import top1_correct as top1_correct
from icl_lens.phase import ClassicExperimentResult as ClassicExperimentResult
from icl_lens.phase import PhaseChangeResult as PhaseChangeResult
from icl_lens.phase import PhaseConfig as PhaseConfig
from icl_lens.phase import classic_phase_change_experiment as classic_phase_change_experiment
from icl_lens.phase import phase_change as phase_change
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
from icl_lens.recognition import RecognitionConfig as RecognitionConfig
from icl_lens.recognition import RecognitionResult as RecognitionResult
from icl_lens.recognition import abstract_label_map as abstract_label_map
from icl_lens.recognition import recognition_vs_learning as recognition_vs_learning
from icl_lens.results import Config as Config
from icl_lens.results import Result as Result
from icl_lens.results import load_result as load_result
from icl_lens.task_vectors import TaskVectorConfig as TaskVectorConfig
from icl_lens.task_vectors import TaskVectorResult as TaskVectorResult
from icl_lens.task_vectors import task_vector as task_vector
from icl_lens.tasks import Task as Task
from icl_lens.tasks import list_tasks as list_tasks
from icl_lens.tasks import load_task as load_task
from icl_lens.tasks import task_info as task_info
from icl_lens.toy import ToyConfig as ToyConfig
from icl_lens.toy import ToyRun as ToyRun
from icl_lens.toy import load_toy_run as load_toy_run
from icl_lens.toy import train_toy_model as train_toy_model

__version__ = "0.1.0"
