import pytest
import torch

from ldmdetect.engine.train_loop import _lr_lambda, fit_on_features


def _factors(schedule, total: int) -> list[float]:
    """The learning-rate factor each optimizer step runs with, as fit steps the scheduler."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = schedule(optimizer)
    factors = []
    for _ in range(total):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


@pytest.mark.parametrize("total", [10, 100, 1000])
def test_lr_warms_up_linearly_then_follows_a_cosine_to_zero(total):
    warmup = max(1, total // 20)  # as fit sets it
    factors = _factors(
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(total, warmup)), total
    )
    # The first step already learns, and the full rate is reached on the last warmup step.
    assert factors[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert factors[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))
    assert _lr_lambda(total, warmup)(total) == pytest.approx(0.0)  # the cosine ends at 0

    # After warmup this is transformers' cosine schedule; during warmup it is one step ahead:
    # transformers' runs its first step at a rate of 0, a step with no effect (with warmup 1,
    # in runs under 40 steps, that is the only warmup step).
    from transformers import get_cosine_schedule_with_warmup

    reference = _factors(lambda o: get_cosine_schedule_with_warmup(o, warmup, total), total)
    assert factors[warmup:] == pytest.approx(reference[warmup:], abs=1e-12)
    assert reference[0] == 0.0 and factors[:warmup] == pytest.approx(reference[1 : warmup + 1])


def test_fit_on_features_is_a_deprecated_alias_of_fit():
    with pytest.deprecated_call(), pytest.raises(TypeError):
        fit_on_features()  # warns, then fit itself refuses the missing arguments
