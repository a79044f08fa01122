"""What every notebook builder needs: markdown and code cells from indented text, and the writer.

The builders run as scripts (`python notebooks/_build/build_13.py`), so this sits beside them and
is imported as `nbcells`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent  # notebooks/


def md(text: str):
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, tags: list[str] | None = None):
    cell = new_code_cell(textwrap.dedent(text).strip())
    if tags:  # e.g. "requires-gpu" (notebooks/conftest.py skips those without CUDA)
        cell.metadata["tags"] = tags
    return cell


def write_notebook(cells: list, filename: str, id_prefix: str | None = None) -> Path:
    """Write `cells` as notebooks/`filename` (no outputs: execute it with nbconvert afterwards).

    id_prefix: give cells stable ids (`{prefix}-00`, ...) so rebuilt notebooks diff cleanly.
    """
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })
    if id_prefix is not None:
        for i, cell in enumerate(nb.cells):
            cell.id = f"{id_prefix}-{i:02d}"
    path = NOTEBOOKS_DIR / filename
    nbformat.write(nb, path)
    return path
