import pytest

from ldmdetect.features.inversion import InversionConfig
from ldmdetect.methods.dire.features import DireConfig
from ldmdetect.methods.lare2.features import LareConfig


@pytest.mark.parametrize(
    ("make", "field", "bad"),
    [
        (DireConfig, "steps", 0),
        (LareConfig, "timestep", -1),
        (InversionConfig, "guidance", 0.5),
    ],
)
def test_a_value_below_its_minimum_is_refused_naming_it(make, field, bad):
    with pytest.raises(ValueError, match=rf"{field} must be at least .*, got {bad}"):
        make(**{field: bad})
    least = make.minimums[field]
    assert make(**{field: least}).to_dict()[field] == least  # the bound itself is allowed
