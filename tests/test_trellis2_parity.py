"""Parity of the TRELLIS.2 re-implementation with the reference on the golden2 cases (CPU, float32, 1e-4).

One test per case folder of golden2 (``TRELLIS2_GOLDEN_DIR``, default ``../shared/golden2``), id = the
case name. The runners live in ``tests/trellis2_runners_<area>.py`` modules, each exposing
``RUNNERS = {case_name: fn}`` (see ``trellis2_golden.py`` for the runner contract); every such module
present is imported here. A case without a runner fails with "no runner for case X".
"""
from __future__ import annotations

import importlib
import pathlib
from typing import Callable, Dict

import pytest

from golden_cases import case_names
from trellis2_golden import FAMILY, Case

RUNNER_MODULES = sorted(p.stem for p in pathlib.Path(__file__).parent.glob("trellis2_runners_*.py"))


def collect_runners() -> Dict[str, Callable]:
    runners: Dict[str, Callable] = {}
    for module_name in RUNNER_MODULES:
        module = importlib.import_module(module_name)
        for case, fn in getattr(module, "RUNNERS", {}).items():
            if case in runners:
                raise RuntimeError(f"case {case!r} has runners in two modules (the second: {module_name})")
            runners[case] = fn
    return runners


RUNNERS = collect_runners()
CASES = case_names(FAMILY)


@pytest.mark.parametrize("name", CASES)
def test_trellis2_parity(name, record_property):
    runner = RUNNERS.get(name)
    if runner is None:
        pytest.fail(f"no runner for case {name} (add it to RUNNERS in a tests/trellis2_runners_<area>.py)")
    errors = runner(Case.load(name))
    assert errors, f"the runner of {name} compared nothing"
    worst = max(errors, key=errors.get)
    record_property("max_rel_err", errors[worst])
    print(f"{name}: max relative error {errors[worst]:.2e} ({worst})")
