"""icl_lens: take in-context learning apart with TransformerLens.

The public API, grouped by layer (core -> prompting -> patching -> induction -> vectors ->
hypotheses -> worlds -> studies; see docs/architecture.md). Each layer lists its public
names once, in its own ``__init__``; this module re-exports every layer whole. Everything
else is an implementation module.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# Re-exports, imported on first use (icl_lens.core.lazy): `import icl_lens` loads nothing heavy.
# Each star stands for that layer's own table (core.lazy.exported_names follows it).
if TYPE_CHECKING:
    # isort: split
    # core: models, the hook contract, results, statistics, errors
    from icl_lens.core import *
    from icl_lens.core.version import __version__ as __version__

    # isort: split
    # prompting: tasks, templates, prompt batches, ICL accuracy
    from icl_lens.prompting import *

    # isort: split
    # patching: interventions, ablation, exact and attribution sweeps
    from icl_lens.patching import *

    # isort: split
    # induction: detectors, the ICL score, induction-consistent tokens, toy models and the phase change
    from icl_lens.induction import *

    # isort: split
    # vectors: function vectors, task vectors, implant evaluation
    from icl_lens.vectors import *

    # isort: split
    # hypotheses: kernel regression, ICL vs fine-tuning, recognition vs learning, the seed predictions
    from icl_lens.hypotheses import *

    # isort: split
    # worlds: toy worlds with known answers (positive and negative controls)
    from icl_lens.worlds import *

    # isort: split
    # studies: models x tasks x analyses, local, on Ray or SLURM; cross-task results
    from icl_lens.studies import *

__getattr__, __dir__ = lazy_exports(__name__, __file__)
