"""Time and chance that move only when a test says so, for code that takes `clock` or `rng`."""

from __future__ import annotations

import random


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class PinnedRandom(random.Random):
    """Draws `value` every time, so `uniform(a, b)` is `a + (b - a) * value`: a jittered wait made exact."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value
