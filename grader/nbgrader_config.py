"""nbgrader configuration of the course.

``dvl release``, ``dvl check`` and ``dvl grade`` load this file (with
``traitlets``' ``PyFileConfigLoader``) and then set, per run, the course root and
the gradebook of the working course they build outside the repository, and the
timeouts given on the command line. nbgrader reads configuration only from the
current directory, the Jupyter config path or the course root (``--config`` is
not one of its flags), so running nbgrader's own commands with this file means
copying it to the course root as ``nbgrader_config.py``.

Policies set here (docs/instructor.md explains them):

- a test cell scores its points when it raises no exception; output on stderr
  (warnings, progress bars, a learner's debug prints) never costs points;
- test cells a learner edited are restored from the source, deleted ones are
  added back;
- each cell may run ``Execute.timeout`` seconds, each notebook
  ``GuardedExecute.notebook_timeout`` seconds; a kernel that dies, runs out of
  memory or ignores the interrupt costs only the cell that killed it;
- hooks a notebook registers in its kernel are undone before each test cell
  (``GuardedExecute.guard_tests``); outputs are capped (``grader/outputs.py``);
- feedback shows neither hidden tests nor tracebacks of test cells.
"""
import os

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

from grader.course import IGNORE
from grader.preprocessors import GuardedExecute, HideHiddenTests, ShortTracebacks

c = get_config()  # noqa: F821 (injected by traitlets' config loader)

# --- layout ------------------------------------------------------------------------------
# The repository is the course root; the grading commands override root and db_url
# with a working course under their output directory (default ./grading).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GRADING = os.path.abspath(os.environ.get("DVL_GRADING_DIR", os.path.join(_REPO, "grading")))

c.CourseDirectory.root = _REPO
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "course"
c.CourseDirectory.submitted_directory = "submitted"
c.CourseDirectory.autograded_directory = "autograded"
c.CourseDirectory.feedback_directory = "feedback"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(_GRADING, "gradebook.db")
c.CourseDirectory.ignore = list(IGNORE)

# --- generate_assignment ---------------------------------------------------------------------
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearOutput.enabled = True
c.ClearHiddenTests.enabled = True
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"  # sic: nbgrader's spelling
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# --- autograde -------------------------------------------------------------------------------
c.Execute.timeout = 120                   # seconds per cell, then the kernel is interrupted
c.Execute.interrupt_on_timeout = True
c.Execute.iopub_timeout = 8               # after a reply or an interrupt, wait this long for the
                                          # kernel to go idle; then it counts as stuck (re-run without the cell)
c.Execute.kernel_name = "python3"         # resolved to the grader's own interpreter
c.GuardedExecute.notebook_timeout = 600   # seconds per run of a notebook
c.GuardedExecute.max_kernel_restarts = 2
c.OverwriteCells.add_missing_cells = True
# Outputs on stderr are dropped before scoring (nbgrader would score such a test
# cell zero): a correct answer that warns keeps its points. Only exceptions fail.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"[\s\S]*"
c.ClearMetadataPreprocessor.enabled = False
c.Autograde.autograde_preprocessors = [
    GuardedExecute,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# --- generate_feedback -------------------------------------------------------------------------
# nbgrader 0.9.6 has no option to hide hidden tests in feedback: remove them from
# test cells (and shorten their tracebacks, which would quote them).
c.GenerateFeedback.preprocessors = [
    GetGrades,
    HideHiddenTests,
    ShortTracebacks,
    CSSHTMLHeaderPreprocessor,
]
