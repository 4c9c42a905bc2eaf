"""The project's own files agree with each other: pyproject, environment.yml, layout, .gitignore."""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_what_pyproject_declares():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {_name(r): r.replace(" ", "") for r in pyproject["project"]["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert conda_python == ["python=3.11"], conda_python
    pinned = {_name(r): r.replace(" ", "") for r in pip_section if not r.startswith("-")}
    assert pinned == declared, (
        f"environment.yml and pyproject.toml disagree: only in environment.yml "
        f"{sorted(set(pinned.items()) - set(declared.items()))}, only in pyproject "
        f"{sorted(set(declared.items()) - set(pinned.items()))}")
    assert "--editable ." in pip_section, "environment.yml must install the project itself"


def test_torch_is_pinned_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_console_script_and_packages_are_installed():
    out = subprocess.run([sys.executable, "-m", "pip", "show", "-f", "dvl-course"],
                         capture_output=True, text=True, check=True).stdout
    assert "Name: dvl-course" in out
    bindir = Path(sys.executable).parent
    assert (bindir / "dvl").exists(), "the console script `dvl` is not installed next to python"
    import dvl_helpers
    import grader
    assert Path(dvl_helpers.__file__).resolve().is_relative_to(ROOT)
    assert Path(grader.__file__).resolve().is_relative_to(ROOT)


def test_layout_of_the_design_document():
    for path in ["course", "solutions", "grader", "dvl_helpers", "tests", "benchmarks", "docs",
                 "environment.yml", "README.md", "pyproject.toml", "Makefile", ".ci/run", ".gitignore",
                 "grader/nbgrader_config.py"]:
        assert (ROOT / path).exists(), f"{path} is missing"


def test_gitignore_keeps_grading_output_and_caches_out():
    probe = ["submitted/alice/01_vqvae/01_vqvae.ipynb", "autograded/x", "feedback/x", "gradebook.db",
             ".venv/bin/python", "data/MNIST/raw/x", "checkpoints/vqvae.pt", "grading/grades.csv"]
    out = subprocess.run(["git", "check-ignore", "--no-index", *probe], cwd=ROOT,
                         capture_output=True, text=True).stdout.split()
    assert sorted(out) == sorted(probe), f"not ignored: {sorted(set(probe) - set(out))}"


def test_readme_states_the_two_commands_and_the_phases():
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme
    for phase in ["00_vae", "01_vqvae", "02_stable_vq", "03_gumbel_dvae", "04_hierarchical_vq",
                  "05_vqgan", "06_fsq_lfq", "07_modern_tokenizers", "08_priors"]:
        assert phase in readme, f"the course map lacks {phase}"


def test_pytest_keeps_grading_folders_out_of_collection():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert ini["testpaths"] == ["tests"]
    for folder in ["submitted", "autograded", "feedback", ".venv"]:
        assert folder in ini["norecursedirs"]


def test_notebooks_are_committed_without_outputs_or_widget_state():
    import json
    notebooks = sorted(ROOT.glob("solutions/*/*.ipynb")) + sorted(ROOT.glob("course/*/*.ipynb"))
    for nb in notebooks:
        data = json.loads(nb.read_text())
        assert "widgets" not in data.get("metadata", {}), f"{nb} stores widget state"
        for cell in data["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs") and cell.get("execution_count") is None, \
                    f"{nb} cell {cell.get('id')} has outputs"
