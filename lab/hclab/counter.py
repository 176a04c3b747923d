"""The lab's counter: a process whose only state is in memory, to tell a restored one from a cold start.

It counts from a random base, so a container started afresh counts from another one: a restored
process goes on from its checkpointed value (the log the checkpoint carried may come first).
"""

from __future__ import annotations

SCRIPT = "i=$((RANDOM * 100000)); while true; do i=$((i+1)); echo $i; sleep 1; done"
# How far before the first reading the checkpoint may have been taken (a backup's interval, in counts).
EARLIEST = 600


def continues_from(numbers: list[int], counted_before: int, counted_after: int) -> tuple[bool, str]:
    """Whether the last run of consecutive ``numbers`` goes through what was counted when the
    checkpoint was taken (between ``counted_before`` and ``counted_after``) and on; with a sentence."""
    if not numbers:
        return False, "no output"
    start = len(numbers) - 1
    while start > 0 and numbers[start - 1] == numbers[start] - 1:
        start -= 1
    passed = counted_before - EARLIEST < numbers[start] <= counted_after + 1 < numbers[-1]
    return passed, f"counting {numbers[start]}..{numbers[-1]} after being checkpointed at {counted_before}..{counted_after}"
