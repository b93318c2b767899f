"""TRELLIS.2 O-Voxel conversions against the reference's golden cases (``../shared/golden2``)."""
import pytest

from golden_cases import has_case, load_case
from trellis2_runners_ovoxel import RUNNERS


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_trellis2_parity(name):
    if not has_case(name, family="trellis2"):
        pytest.skip(f"golden case {name} not present (set TRELLIS2_GOLDEN_DIR)")
    RUNNERS[name](load_case(name, family="trellis2"))
