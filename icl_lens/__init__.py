"""icl_lens: take in-context learning apart with TransformerLens.

The public API, grouped by layer (core -> prompting -> patching -> induction -> vectors ->
hypotheses -> worlds -> studies; see docs/architecture.md). Everything else is an implementation module.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# Re-exports, imported on first use (icl_lens.core.lazy): `import icl_lens` loads nothing heavy.
if TYPE_CHECKING:
    # isort: split
    # core: models, the hook contract, results, statistics, errors
    from icl_lens.core.errors import (
        ConfigError as ConfigError,
        FastPathMismatchError as FastPathMismatchError,
        IclLensError as IclLensError,
        ModelContractError as ModelContractError,
        ModelNotAvailableError as ModelNotAvailableError,
        PromptError as PromptError,
        ResultFileError as ResultFileError,
        TaskError as TaskError,
        VectorMismatchError as VectorMismatchError,
    )
    from icl_lens.core.hooks import (
        HookedModel as HookedModel,
        ModelSpec as ModelSpec,
        count_hooks as count_hooks,
        model_spec as model_spec,
    )
    from icl_lens.core.merge import merge_results as merge_results
    from icl_lens.core.models import (
        char_tokenizer as char_tokenizer,
        load_model as load_model,
        tiny_model as tiny_model,
    )
    from icl_lens.core.progress import set_progress as set_progress
    from icl_lens.core.results import Config as Config, Result as Result, load_result as load_result
    from icl_lens.core.stats import (
        PairedComparison as PairedComparison,
        accuracy_interval as accuracy_interval,
        compare_paired as compare_paired,
        mean_interval as mean_interval,
        proportion_interval as proportion_interval,
        ratio_interval as ratio_interval,
        verdict as verdict,
    )
    from icl_lens.core.version import __version__ as __version__

    # isort: split
    # prompting: tasks, templates, prompt batches, ICL accuracy
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

    # isort: split
    # patching: interventions, ablation, exact and attribution sweeps
    from icl_lens.patching.ablation import ablate_heads as ablate_heads
    from icl_lens.patching.activations import (
        head_activations as head_activations,
        mean_head_activations as mean_head_activations,
        resid_activations as resid_activations,
    )
    from icl_lens.patching.attribution import (
        attribution_head_sweep as attribution_head_sweep,
        attribution_resid_sweep as attribution_resid_sweep,
        patching_agreement as patching_agreement,
    )
    from icl_lens.patching.interventions import (
        add_to_resid as add_to_resid,
        patch_activation as patch_activation,
        replace_resid as replace_resid,
    )
    from icl_lens.patching.metrics import (
        PromptMetric as PromptMetric,
        answer_logprob as answer_logprob,
        answer_prob as answer_prob,
        kl_to as kl_to,
        logit_diff as logit_diff,
        top1_correct as top1_correct,
    )
    from icl_lens.patching.results import (
        HeadPatchingResult as HeadPatchingResult,
        PatchingAgreement as PatchingAgreement,
        ResidPatchingResult as ResidPatchingResult,
    )
    from icl_lens.patching.sweeps import head_sweep as head_sweep, resid_sweep as resid_sweep
    from icl_lens.patching.tracing import CausalTraceConfig as CausalTraceConfig, causal_trace as causal_trace
    from icl_lens.patching.tracing_result import CausalTraceResult as CausalTraceResult

    # isort: split
    # induction: detectors, the ICL score, induction-consistent tokens, toy models and the phase change
    from icl_lens.induction.confirm import (
        AblationCheckConfig as AblationCheckConfig,
        confirm_induction_heads as confirm_induction_heads,
    )
    from icl_lens.induction.confirm_result import InductionAblationResult as InductionAblationResult
    from icl_lens.induction.detectors import (
        InductionConfig as InductionConfig,
        find_induction_heads as find_induction_heads,
    )
    from icl_lens.induction.detectors_result import InductionHeadsResult as InductionHeadsResult
    from icl_lens.induction.icl_score import (
        IclScoreConfig as IclScoreConfig,
        icl_score as icl_score,
        load_corpus as load_corpus,
        per_token_loss as per_token_loss,
    )
    from icl_lens.induction.icl_score_result import IclScoreResult as IclScoreResult
    from icl_lens.induction.phase import (
        PhaseConfig as PhaseConfig,
        classic_phase_change_experiment as classic_phase_change_experiment,
        phase_change as phase_change,
    )
    from icl_lens.induction.phase_result import (
        ClassicExperimentResult as ClassicExperimentResult,
        PhaseChangeResult as PhaseChangeResult,
    )
    from icl_lens.induction.token_classes import TOKEN_CLASSES as TOKEN_CLASSES, classify_tokens as classify_tokens
    from icl_lens.induction.token_losses import (
        InductionTokenConfig as InductionTokenConfig,
        induction_token_losses as induction_token_losses,
    )
    from icl_lens.induction.token_losses_result import InductionTokenLossResult as InductionTokenLossResult
    from icl_lens.induction.token_training import (
        TokenTrainingConfig as TokenTrainingConfig,
        induction_token_losses_over_training as induction_token_losses_over_training,
    )
    from icl_lens.induction.token_training_result import TokenTrainingResult as TokenTrainingResult
    from icl_lens.induction.toy import (
        ToyConfig as ToyConfig,
        load_toy_run as load_toy_run,
        train_toy_model as train_toy_model,
    )
    from icl_lens.induction.toy_result import ToyRun as ToyRun
    from icl_lens.induction.views import OfflineHTML as OfflineHTML, attention_view as attention_view

    # isort: split
    # vectors: function vectors, task vectors, implant evaluation
    from icl_lens.vectors.function_vector_result import FunctionVectorResult as FunctionVectorResult
    from icl_lens.vectors.function_vectors import (
        FunctionVectorConfig as FunctionVectorConfig,
        function_vector as function_vector,
    )
    from icl_lens.vectors.implant import ImplantConfig as ImplantConfig, evaluate_implant as evaluate_implant
    from icl_lens.vectors.implant_result import ImplantResult as ImplantResult
    from icl_lens.vectors.task_vector_result import TaskVectorResult as TaskVectorResult
    from icl_lens.vectors.task_vectors import TaskVectorConfig as TaskVectorConfig, task_vector as task_vector

    # isort: split
    # hypotheses: kernel regression, ICL vs fine-tuning, recognition vs learning, the seed predictions
    from icl_lens.hypotheses.finetune import (
        IclFinetuneConfig as IclFinetuneConfig,
        compare_icl_finetuning as compare_icl_finetuning,
    )
    from icl_lens.hypotheses.finetune_result import (
        FinetuneComparison as FinetuneComparison,
        IclFinetuneResult as IclFinetuneResult,
    )
    from icl_lens.hypotheses.finetune_training import finetune_on_demos as finetune_on_demos
    from icl_lens.hypotheses.formats import FormatConfig as FormatConfig, format_sensitivity as format_sensitivity
    from icl_lens.hypotheses.formats_result import FormatSensitivityResult as FormatSensitivityResult
    from icl_lens.hypotheses.kernel import (
        KernelRegressionConfig as KernelRegressionConfig,
        kernel_regression as kernel_regression,
    )
    from icl_lens.hypotheses.kernel_result import KernelRegressionResult as KernelRegressionResult
    from icl_lens.hypotheses.recognition import (
        RecognitionConfig as RecognitionConfig,
        abstract_label_map as abstract_label_map,
        recognition_vs_learning as recognition_vs_learning,
    )
    from icl_lens.hypotheses.recognition_result import RecognitionResult as RecognitionResult
    from icl_lens.hypotheses.selection import (
        SelectionConfig as SelectionConfig,
        demonstration_selection as demonstration_selection,
    )
    from icl_lens.hypotheses.selection_result import DemonstrationSelectionResult as DemonstrationSelectionResult

    # isort: split
    # worlds: toy worlds with known answers (positive and negative controls)
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

    # isort: split
    # studies: models x tasks x analyses, local, on Ray or SLURM; cross-task results
    from icl_lens.studies import (
        InductionVsFvResult as InductionVsFvResult,
        ModelEntry as ModelEntry,
        Study as Study,
        StudyAccuracyResult as StudyAccuracyResult,
        StudyResults as StudyResults,
        StudyRunReport as StudyRunReport,
        StudySpec as StudySpec,
        StudySpecError as StudySpecError,
        StudyStatus as StudyStatus,
        UniversalFvResult as UniversalFvResult,
        VectorTableResult as VectorTableResult,
        register_analysis as register_analysis,
    )

__getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "AblationCheckConfig",
    "CausalTraceConfig",
    "CausalTraceResult",
    "ClassicExperimentResult",
    "Config",
    "ConfigError",
    "DemonstrationSelectionResult",
    "EmergenceResult",
    "FastPathMismatchError",
    "FinetuneComparison",
    "FormatConfig",
    "FormatSensitivityResult",
    "FunctionVectorConfig",
    "FunctionVectorResult",
    "GradientDescentComparison",
    "GradientDescentConfig",
    "HENDEL",
    "HeadPatchingResult",
    "HookedModel",
    "IclAccuracyResult",
    "IclEvalConfig",
    "IclFinetuneConfig",
    "IclFinetuneResult",
    "IclLensError",
    "IclScoreConfig",
    "IclScoreResult",
    "ImplantConfig",
    "ImplantResult",
    "InductionAblationResult",
    "InductionConfig",
    "InductionHeadsResult",
    "InductionTokenConfig",
    "InductionTokenLossResult",
    "InductionVsFvResult",
    "KernelRegressionConfig",
    "KernelRegressionResult",
    "LinearRegressionConfig",
    "LinearRegressionRun",
    "ModelContractError",
    "ModelEntry",
    "ModelNotAvailableError",
    "ModelSpec",
    "OfflineHTML",
    "PairedComparison",
    "PatchingAgreement",
    "PhaseChangeResult",
    "PhaseConfig",
    "PromptBatch",
    "PromptError",
    "PromptMetric",
    "RecognitionConfig",
    "RecognitionResult",
    "ResidPatchingResult",
    "Result",
    "ResultFileError",
    "SelectionConfig",
    "Study",
    "StudyAccuracyResult",
    "StudyResults",
    "StudyRunReport",
    "StudySpec",
    "StudySpecError",
    "StudyStatus",
    "TODD",
    "TOKEN_CLASSES",
    "Task",
    "TaskError",
    "TaskToyConfig",
    "TaskToyRun",
    "TaskVectorConfig",
    "TaskVectorResult",
    "Template",
    "TokenTrainingConfig",
    "TokenTrainingResult",
    "ToyConfig",
    "ToyRun",
    "UniversalFvResult",
    "VectorCheckConfig",
    "VectorCheckResult",
    "VectorMismatchError",
    "VectorTableResult",
    "__version__",
    "ablate_heads",
    "abstract_label_map",
    "accuracy_interval",
    "add_to_resid",
    "answer_logprob",
    "answer_prob",
    "attention_view",
    "attribution_head_sweep",
    "attribution_resid_sweep",
    "build_prompts",
    "causal_trace",
    "char_tokenizer",
    "check_vectors",
    "classic_phase_change_experiment",
    "classify_tokens",
    "compare_icl_finetuning",
    "compare_paired",
    "compare_to_gradient_descent",
    "confirm_induction_heads",
    "count_hooks",
    "demonstration_selection",
    "emergence_result",
    "evaluate_icl",
    "evaluate_implant",
    "find_induction_heads",
    "finetune_on_demos",
    "format_sensitivity",
    "function_vector",
    "head_activations",
    "head_sweep",
    "icl_score",
    "induction_token_losses",
    "induction_token_losses_over_training",
    "kernel_regression",
    "kl_to",
    "list_tasks",
    "list_worlds",
    "load_corpus",
    "load_model",
    "load_result",
    "load_task",
    "load_task_run",
    "load_toy_run",
    "load_world",
    "logit_diff",
    "mean_head_activations",
    "mean_interval",
    "merge_results",
    "model_spec",
    "next_token_logprobs",
    "patch_activation",
    "patching_agreement",
    "per_token_loss",
    "phase_change",
    "proportion_interval",
    "ratio_interval",
    "recognition_vs_learning",
    "register_analysis",
    "replace_resid",
    "resid_activations",
    "resid_sweep",
    "set_progress",
    "task_info",
    "task_vector",
    "tiny_model",
    "top1_correct",
    "train_linear_regression_toy",
    "train_task_toy",
    "train_toy_model",
    "vector_emergence",
    "verdict",
    "world_tasks",
]
