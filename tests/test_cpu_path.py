"""`make test` runs the numerics a second time under tests/cpu_path.py's variables: prove that they
really change float results on this machine (else that second run would test nothing new)."""

import platform

import pytest
import torch

import cpu_path


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the variables select x86 code paths")
def test_the_other_cpu_path_changes_float_results():
    native, other = cpu_path.run_probe({}), cpu_path.run_probe(cpu_path.other_path())
    for name in native:
        assert not torch.equal(native[name], other[name]), f"{name}: the same bits on both code paths"
        torch.testing.assert_close(other[name], native[name], rtol=1e-4, atol=1e-5)  # rounding, nothing more
