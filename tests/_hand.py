"""Hand computations for loss tests: plain Python, no torch, so a test's expected value does not
share code with what it checks."""

import math


def kl(p, q):
    """KL(p ‖ q) of two distributions given as lists."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]
