"""Several trained copies of one network, read as one (a deep ensemble).

Why: a detector's low-FPR threshold sits in the tail of its real images' scores, and that tail
is where one training run differs most from another (the same data and recipe, another seed,
can move the 1% threshold by half the score range and miss a third more fakes). Averaging the
probabilities of a few independently trained members (Lakshminarayanan et al., NeurIPS 2017,
"Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles") keeps what they
agree on and smooths what one run got by chance; it is also the usual first step for better
out-of-distribution behaviour, which a family head's open set relies on.

The ensemble's output is a logit again, so every method reads it as it reads one network's:
with several classes, ``log(mean_m softmax(z_m))`` (its softmax is the members' mean
probability); with one logit, ``logit(mean_m sigmoid(z_m))``. Both are computed in log space,
so confident members do not saturate to infinities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Ensemble", "mean_probability_logits"]


def mean_probability_logits(outputs: Sequence[torch.Tensor], num_classes: int) -> torch.Tensor:
    """Members' logits (each of one shape) -> the logits of their mean probability.

    ``num_classes`` > 1: the last dimension holds one logit per class (softmax); 1: every
    element is one binary logit (sigmoid), whatever the shape."""
    if not outputs:
        raise ValueError("an ensemble needs at least one member's output")
    stacked = torch.stack([o.double() for o in outputs])
    log_n = math.log(len(outputs))
    if num_classes > 1:
        if stacked.shape[-1] != num_classes:
            raise ValueError(
                f"members gave {stacked.shape[-1]} logits per image for {num_classes} classes"
            )
        mixed = torch.logsumexp(F.log_softmax(stacked, dim=-1), dim=0) - log_n
    else:
        log_p = torch.logsumexp(F.logsigmoid(stacked), dim=0) - log_n
        log_q = torch.logsumexp(F.logsigmoid(-stacked), dim=0) - log_n
        mixed = log_p - log_q
    return mixed.to(outputs[0].dtype if outputs[0].is_floating_point() else torch.float32)


class Ensemble(nn.Module):
    """``members`` (networks of one architecture, called alike) whose forward pass is the
    mean of their probabilities, as logits (:func:`mean_probability_logits`).

    Saved and loaded as one state dict (``members.0.*``, ``members.1.*``, ...), so a detector
    directory holds an ensemble exactly as it holds one network."""

    def __init__(self, members: Sequence[nn.Module], num_classes: int) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two or more members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.num_classes = num_classes

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return mean_probability_logits(
            [member(*args, **kwargs) for member in self.members], self.num_classes
        )
