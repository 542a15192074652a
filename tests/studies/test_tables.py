"""The cross-task vector table: every accuracy it prints carries its Wilson interval."""

from __future__ import annotations

import re

from icl_lens.core.stats import proportion_interval
from icl_lens.studies.tables import VectorTableResult


def test_the_full_table_gives_the_own_state_ceiling_its_interval():
    row = dict(model="m", task="t", seed=0, icl5=0.6, tv_zero_shot=0.0, tv=0.46, own_state=0.54, half_from=21)
    row.update(n_tv=50, tv_folds=1, tv_layer=21, kl_zs=9.21)
    table = VectorTableResult(rows=(row,))
    low, high = proportion_interval(27, 50)
    assert table.to_dataframe().own_state_ci_low.item() == low
    line = table.to_markdown(full=True).splitlines()[-1]
    assert f"| 54 [{100 * low:.0f}, {100 * high:.0f}] | 21 |" in line
    # every percentage cell but the layers and KL is a value with its interval
    assert len(re.findall(r"\d+ \[\d+, \d+\]", line)) == 4
