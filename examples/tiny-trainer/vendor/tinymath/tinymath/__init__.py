"""Portable, bit-for-bit deterministic building blocks for tiny-trainer.

Everything here uses only IEEE-754 +, -, *, / and exact power-of-two scaling, so results are the
same on every machine, whatever its C math library: a run resumed on another instance computes
exactly what an uninterrupted run would have.
"""

import math

__version__ = "0.1.0"

_MASK64 = (1 << 64) - 1
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00


class SplitMix64:
    """SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, fully specified integer generator."""

    def __init__(self, seed):
        self.state = seed & _MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def uniform(self, low=0.0, high=1.0):
        """A float in [low, high) from the top 53 bits."""
        return low + (high - low) * ((self.next_u64() >> 11) * (1.0 / (1 << 53)))

    def below(self, n):
        """An integer in [0, n) without modulo bias."""
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            x = self.next_u64()
            if x < limit:
                return x % n


def exp(x):
    """e**x from range reduction and a fixed Taylor polynomial: no libm involved."""
    if x > 709.0:
        return float("inf")
    if x < -745.0:
        return 0.0
    k = int(math.floor(x * _INV_LN2 + 0.5))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    term = 1.0
    total = 1.0
    for n in range(1, 18):
        term = term * r / n
        total += term
    return math.ldexp(total, k)


def sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)


def dot(a, b):
    total = 0.0
    for x, y in zip(a, b):
        total += x * y
    return total
