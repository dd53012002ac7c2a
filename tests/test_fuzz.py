"""The bounded property-based suite: every case of tests/fuzz_cases.py for a few dozen examples
(the longer campaign is benchmarks/fuzz_campaign.py)."""

import fuzz_cases
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# CI budget: about 30-60 s for the whole file on 2 cores.
EXAMPLES = {"antialias": 60, "texture": 80, "rasterize": 80, "interpolate": 80, "DepthPeeler": 40, "bad input": 300}


@pytest.mark.parametrize("name", sorted(fuzz_cases.CASES))
def test_case(name):
    @settings(max_examples=EXAMPLES.get(name, 60), deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data())
    def run(data):
        fuzz_cases.CASES[name](data)

    run()
