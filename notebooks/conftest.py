"""nbval settings for the notebooks."""

import pytest


def pytest_collection_modifyitems(config, items):
    """Every notebook cell is marked `numerics`, and cells tagged `requires-gpu` are skipped (not
    run) on machines without CUDA.

    The notebooks print float results that must hold on any CPU: `make test` runs everything marked
    `numerics` a second time on another CPU code path (README, "Tests"). The notebooks guard their
    GPU cells with `if torch.cuda.is_available()` too, and fall back to the embedded model, so they
    still teach on a CPU.
    """
    import torch

    for item in items:
        if getattr(item, "cell", None) is not None:
            item.add_marker(pytest.mark.numerics)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="cell tagged requires-gpu and no CUDA GPU is available")
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "requires-gpu" in cell.get("metadata", {}).get("tags", []):
            item.add_marker(skip)
