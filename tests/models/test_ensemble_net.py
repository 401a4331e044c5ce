import pytest
import torch
from torch import nn

from ldmdetect.models.ensemble import Ensemble, mean_probability_logits


def test_several_classes_mix_to_the_members_mean_softmax():
    torch.manual_seed(0)
    outputs = [torch.randn(5, 4) * 3 for _ in range(3)]
    mixed = mean_probability_logits(outputs, 4)
    expected = torch.stack([o.softmax(-1) for o in outputs]).mean(0)
    torch.testing.assert_close(mixed.softmax(-1), expected, atol=1e-6, rtol=1e-5)


def test_one_logit_mixes_to_the_members_mean_sigmoid_even_when_they_saturate():
    outputs = [torch.tensor([[60.0], [-60.0], [0.3]]), torch.tensor([[80.0], [-70.0], [-1.2]])]
    mixed = mean_probability_logits(outputs, 1)
    assert torch.isfinite(mixed).all()
    expected = torch.stack([torch.sigmoid(o.double()) for o in outputs]).mean(0)
    torch.testing.assert_close(torch.sigmoid(mixed.double()), expected)
    # Two members confident at e^-60 and e^-70 stay ordered, not both rounded to one number.
    assert mixed[0] > 59 and mixed[1] < -59


def test_an_ensemble_reads_every_member_and_saves_as_one_state_dict():
    torch.manual_seed(0)
    members = [nn.Linear(6, 3) for _ in range(2)]
    ensemble = Ensemble(members, num_classes=3)
    x = torch.randn(4, 6)
    torch.testing.assert_close(
        ensemble(x), mean_probability_logits([m(x) for m in members], 3), atol=1e-6, rtol=1e-5
    )
    assert {k.split(".")[1] for k in ensemble.state_dict()} == {"0", "1"}
    copy = Ensemble([nn.Linear(6, 3) for _ in range(2)], num_classes=3)
    copy.load_state_dict(ensemble.state_dict())
    torch.testing.assert_close(copy(x), ensemble(x))


def test_one_member_or_a_wrong_class_count_is_refused():
    with pytest.raises(ValueError, match="two or more members"):
        Ensemble([nn.Linear(2, 1)], num_classes=1)
    with pytest.raises(ValueError, match="3 logits per image for 4 classes"):
        mean_probability_logits([torch.zeros(2, 3)] * 2, 4)
