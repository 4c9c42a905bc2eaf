"""``dvl``: release the course, check a notebook, grade submissions.

    dvl release [ID ...]                     course/<id>/ from solutions/<id>/ (all by default)
    dvl check NOTEBOOK [--json]              grade your own notebook against the hidden tests
    dvl grade SUBMITTED [--out grading]      autograde <student>/<assignment>/<notebook>.ipynb

Every command takes ``--root DIR``, the course root (the directory holding
``solutions/``); by default the first such directory from the current one
upwards, else the repository ``dvl`` is installed from.

Exit codes: 0 done (whatever the scores), 1 the grader failed, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(add_help=False)
    root.add_argument("--root", type=Path, default=None,
                      help="course root, the directory holding solutions/ (default: found "
                           "from the current directory upwards)")
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument("--timeout", type=int, default=None, metavar="S",
                        help="seconds a cell may run before it is interrupted (default 120)")
    limits.add_argument("--notebook-timeout", type=int, default=None, metavar="S",
                        help="seconds one run of a notebook may take (default 600)")

    p = argparse.ArgumentParser(
        prog="dvl", description="Discrete Latent Representations: release, check and grade.",
        epilog="Exit codes: 0 done (whatever the scores), 1 the grader failed, 2 bad input.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("release", parents=[root], help="regenerate course/<id>/ from solutions/<id>/",
                       description="Regenerate course/<id>/ from solutions/<id>/ with nbgrader "
                                   "generate_assignment, without outputs or widget state.")
    r.add_argument("ids", nargs="*", metavar="ID", help="assignment ids (default: all)")

    c = sub.add_parser("check", parents=[root, limits], help="grade one notebook against the hidden tests",
                       description="Grade your notebook against the hidden tests (smoke preset). "
                                   "The assignment is read from the folder or file name.")
    c.add_argument("notebook", type=Path, metavar="NOTEBOOK")
    c.add_argument("--assignment", default=None, metavar="ID",
                   help="assignment id, when the folder and file names do not say")
    c.add_argument("--json", action="store_true", help="print the result as JSON")

    g = sub.add_parser("grade", parents=[root, limits], help="autograde a folder of submissions",
                       description="Autograde SUBMITTED/<student>/<assignment>/<notebook>.ipynb: "
                                   "feedback, gradebook and grades.csv go to --out.")
    g.add_argument("submitted", type=Path, metavar="SUBMITTED")
    g.add_argument("--out", type=Path, default=Path("grading"), metavar="DIR",
                   help="output directory (default ./grading)")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="submissions graded at the same time (default 1)")
    return p


def _err(msg: str) -> None:
    print(f"dvl: {msg}", file=sys.stderr)


def _release(args, root: Path) -> int:
    from .release import release
    for rel in release(root, args.ids or None):
        extra = f" and {len(rel.files)} other file(s)" if rel.files else ""
        print(f"released {rel.assignment}: {len(rel.notebooks)} notebook(s){extra} -> "
              f"{rel.directory}")
    return EXIT_OK


def _check(args, root: Path) -> int:
    from .check import check_json, check_notebook, format_check
    result = check_notebook(args.notebook, root, assignment=args.assignment,
                            cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout)
    if args.json:
        print(json.dumps(check_json(result), indent=2))
    else:
        print(format_check(result, args.notebook))
    return EXIT_OK


def _grade(args, root: Path) -> int:
    from .grade import format_summary, grade_submissions

    def progress(result):
        print(f"  {result.student}/{result.assignment}: {result.score:g} / {result.max_score:g}"
              f"  {result.status}", flush=True)

    print(f"grading {args.submitted} -> {args.out}", flush=True)
    report = grade_submissions(args.submitted, root, args.out, cell_timeout=args.timeout,
                               notebook_timeout=args.notebook_timeout, parallel=args.jobs,
                               on_result=progress)
    print()
    print(format_summary(report))
    print(f"\ngrades: {report.csv_path}\nfeedback: {report.out / 'feedback'}")
    for r in report.grader_failures:
        _err(f"could not grade {r.student}/{r.assignment}: {r.status} "
             f"(log: {report.out / 'logs' / r.student / (r.assignment + '.log')})")
    return EXIT_FAILED if report.grader_failures else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``dvl`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = _parser().parse_args(argv)
    from .course import GraderError, InputError, find_root
    from .notebooks import NotebookError
    try:
        root = Path(args.root).resolve() if args.root else find_root()
        if not (root / "solutions").is_dir():
            raise InputError(f"{root} is not a course root: it has no solutions/ directory")
        if args.command == "check" and not args.notebook.is_file():
            raise InputError(f"{args.notebook}: no such file")
        if args.command == "grade" and not args.submitted.is_dir():
            raise InputError(f"{args.submitted} is not a directory of submissions "
                              "(<student>/<assignment>/<notebook>.ipynb)")
        return {"release": _release, "check": _check, "grade": _grade}[args.command](args, root)
    except NotebookError as e:
        _err(f"not a notebook: {e}")
        return EXIT_USAGE
    except InputError as e:
        _err(str(e))
        return EXIT_USAGE
    except GraderError as e:
        _err(str(e))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
