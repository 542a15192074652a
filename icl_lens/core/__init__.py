"""The bottom layer: what every analysis stands on.

Loading models (``models``), the model contract (``hooks``: hook names, shapes, per-head
``W_O``, the ``HookedModel`` protocol), answer-position forwards (``forward``), the
``Config``/``Result`` base classes with save/load (``results``), statistics (``stats``),
option checking, plotting, progress bars, errors and merging split results.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.core import *`.
if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(__name__, __file__)
