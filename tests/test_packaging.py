"""The set-up files agree with each other: what the README promises is what CI runs."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_installs_this_package_with_pinned_torch():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(project["project"]["optional-dependencies"])
    local = [line for line in pip if line.startswith("-e .")]
    assert local, "environment.yml must install this package from its pip section"
    wanted = set(re.search(r"\[(.*)\]", local[0]).group(1).split(","))
    assert wanted == extras, f"environment.yml installs extras {wanted}, pyproject defines {extras}"
    assert "torch==2.13.0" in pip  # the same pin as the Makefile: never an unpinned CUDA build
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = project["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_makefile_pins_the_same_torch():
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.M)
    assert "make test" in commands and "make demo" in commands
    assert re.search(r"^make test$", ci, flags=re.M)


# The folders in the order the README's layout lists them: a module may import from its own folder
# and the ones above it, never from one below (the model knows nothing of loading or decoding).
LAYERS = ["errors", "paths", "model", "tokenizer", "quantize", "loading", "decoding", "train", "explore", "cli", "__main__", "__init__"]


def _layer(dotted: str) -> str:
    return dotted.removeprefix("minigemma.").split(".")[0] or "__init__"


def test_imports_only_flow_down():
    import ast

    root = Path(__file__).resolve().parents[1] / "minigemma"
    wrong = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        package = ["minigemma", *rel.parts[:-1]] if rel.name != "__init__" else ["minigemma", *rel.parts[:-1]]
        here = _layer(".".join(["minigemma", *rel.parts])) if rel.parts[0] != "__init__" else "__init__"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if target == "minigemma" and node.module is None:
                    continue
                there = _layer(target)
                if there in LAYERS and LAYERS.index(there) > LAYERS.index(here):
                    wrong.append(f"{path.relative_to(root)} imports {target}")
    assert not wrong, wrong
