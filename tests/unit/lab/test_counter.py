"""The counter's rule tells a process restored from its checkpoint from one started cold."""

from __future__ import annotations

import pytest

from lab.hclab import counter


@pytest.mark.parametrize("numbers, verdict, detail", [
    ([500, 501, 502, 503, 504], True, "counting 500..504"),  # went on from the checkpoint (taken at 500..502)
    ([470, 471, 500, 501, 502, 503, 504], True, "counting 500..504"),  # the checkpointed log first, then on
    ([9000, 9001, 9002, 9003], False, "counting 9000..9003"),  # a cold start: another random base
    ([500, 501, 502], False, "counting 500..502"),  # stopped at the checkpoint: not counting on
    ([], False, "no output"),
])
def test_the_counter_check_tells_a_restored_process_from_a_cold_start(numbers, verdict, detail):
    passed, said = counter.continues_from(numbers, 500, 502)
    assert passed is verdict
    assert said == detail if not numbers else said == f"{detail} after being checkpointed at 500..502"
