"""icl_lens: take in-context learning apart with TransformerLens.

The public API is what this module exports; everything else is an implementation module.
"""

from icl_lens.core.errors import (
    ConfigError as ConfigError,
)
from icl_lens.core.errors import (
    IclLensError as IclLensError,
)
from icl_lens.core.errors import (
    ModelContractError as ModelContractError,
)
from icl_lens.core.errors import (
    ModelNotAvailableError as ModelNotAvailableError,
)
from icl_lens.core.errors import (
    PromptError as PromptError,
)
from icl_lens.core.errors import (
    ResultFileError as ResultFileError,
)
from icl_lens.core.errors import (
    TaskError as TaskError,
)
from icl_lens.core.hooks import ModelSpec as ModelSpec
from icl_lens.core.hooks import count_hooks as count_hooks
from icl_lens.core.hooks import model_spec as model_spec

# --- report, merging split sweeps (issue 7) ---
from icl_lens.core.merge import merge_results as merge_results
from icl_lens.core.models import char_tokenizer as char_tokenizer
from icl_lens.core.models import load_model as load_model
from icl_lens.core.models import tiny_model as tiny_model
from icl_lens.core.progress import set_progress as set_progress
from icl_lens.core.results import Config as Config
from icl_lens.core.results import Result as Result
from icl_lens.core.results import load_result as load_result

# --- kernel regression, fine-tuning, recognition vs learning (issue 6) ---
from icl_lens.hypotheses.finetune import FinetuneComparison as FinetuneComparison
from icl_lens.hypotheses.finetune import IclFinetuneConfig as IclFinetuneConfig
from icl_lens.hypotheses.finetune import IclFinetuneResult as IclFinetuneResult
from icl_lens.hypotheses.finetune import compare_icl_finetuning as compare_icl_finetuning
from icl_lens.hypotheses.finetune import finetune_on_demos as finetune_on_demos
from icl_lens.hypotheses.kernel import KernelRegressionConfig as KernelRegressionConfig
from icl_lens.hypotheses.kernel import KernelRegressionResult as KernelRegressionResult
from icl_lens.hypotheses.kernel import kernel_regression as kernel_regression
from icl_lens.hypotheses.recognition import RecognitionConfig as RecognitionConfig
from icl_lens.hypotheses.recognition import RecognitionResult as RecognitionResult
from icl_lens.hypotheses.recognition import abstract_label_map as abstract_label_map
from icl_lens.hypotheses.recognition import recognition_vs_learning as recognition_vs_learning
from icl_lens.induction import AblationCheckConfig as AblationCheckConfig
from icl_lens.induction import InductionAblationResult as InductionAblationResult
from icl_lens.induction import InductionConfig as InductionConfig
from icl_lens.induction import InductionHeadsResult as InductionHeadsResult
from icl_lens.induction import OfflineHTML as OfflineHTML
from icl_lens.induction import attention_view as attention_view
from icl_lens.induction import confirm_induction_heads as confirm_induction_heads
from icl_lens.induction import find_induction_heads as find_induction_heads
from icl_lens.induction.icl_score import IclScoreConfig as IclScoreConfig
from icl_lens.induction.icl_score import IclScoreResult as IclScoreResult
from icl_lens.induction.icl_score import icl_score as icl_score
from icl_lens.induction.icl_score import load_corpus as load_corpus
from icl_lens.induction.icl_score import per_token_loss as per_token_loss
from icl_lens.induction.phase import ClassicExperimentResult as ClassicExperimentResult
from icl_lens.induction.phase import PhaseChangeResult as PhaseChangeResult
from icl_lens.induction.phase import PhaseConfig as PhaseConfig
from icl_lens.induction.phase import classic_phase_change_experiment as classic_phase_change_experiment
from icl_lens.induction.phase import phase_change as phase_change
from icl_lens.induction.toy import ToyConfig as ToyConfig
from icl_lens.induction.toy import ToyRun as ToyRun
from icl_lens.induction.toy import load_toy_run as load_toy_run
from icl_lens.induction.toy import train_toy_model as train_toy_model

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

# --- induction, icl score, phase change (issue 3) ---
from icl_lens.patching.ablation import ablate_heads as ablate_heads
from icl_lens.prompting.evaluation import (
    IclAccuracyResult as IclAccuracyResult,
)
from icl_lens.prompting.evaluation import (
    IclEvalConfig as IclEvalConfig,
)
from icl_lens.prompting.evaluation import (
    answer_logprobs as answer_logprobs,
)
from icl_lens.prompting.evaluation import (
    evaluate_icl as evaluate_icl,
)
from icl_lens.prompting.prompts import (
    HENDEL as HENDEL,
)
from icl_lens.prompting.prompts import (
    TODD as TODD,
)
from icl_lens.prompting.prompts import (
    PromptBatch as PromptBatch,
)
from icl_lens.prompting.prompts import (
    Template as Template,
)
from icl_lens.prompting.prompts import (
    build_prompts as build_prompts,
)
from icl_lens.prompting.tasks import Task as Task
from icl_lens.prompting.tasks import list_tasks as list_tasks
from icl_lens.prompting.tasks import load_task as load_task
from icl_lens.prompting.tasks import task_info as task_info

# --- function vectors, task vectors, implants (issue 5) ---
from icl_lens.vectors.common import VectorMismatchError as VectorMismatchError
from icl_lens.vectors.function_vectors import FunctionVectorConfig as FunctionVectorConfig
from icl_lens.vectors.function_vectors import FunctionVectorResult as FunctionVectorResult
from icl_lens.vectors.function_vectors import function_vector as function_vector
from icl_lens.vectors.implant import ImplantConfig as ImplantConfig
from icl_lens.vectors.implant import ImplantResult as ImplantResult
from icl_lens.vectors.implant import evaluate_implant as evaluate_implant
from icl_lens.vectors.task_vectors import TaskVectorConfig as TaskVectorConfig
from icl_lens.vectors.task_vectors import TaskVectorResult as TaskVectorResult
from icl_lens.vectors.task_vectors import task_vector as task_vector

__version__ = "0.1.0"
