"""``dvl``: release the course, check a notebook, grade submissions.

    dvl release [ID ...]                     course/<id>/ from solutions/<id>/ (all by default)
    dvl check NOTEBOOK [--json]              grade your own notebook against the hidden tests
    dvl grade SUBMITTED [--out grading]      autograde <student>/<assignment>/<notebook>.ipynb
    dvl merge PART PART ... --out DIR        one grading directory from parts graded apart

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
    limits.add_argument("--memory", type=int, default=None, metavar="MIB",
                        help="memory of one submission's processes together, in MiB "
                             "(default 4096; 0: unlimited)")

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
    g.add_argument("--resume", action="store_true",
                   help="keep the results of an earlier run into --out for submissions that "
                        "have not changed; grade only the others")
    g.add_argument("--students", default=None, metavar="FIRST:LAST",
                   help="grade only the students whose ids sort between FIRST and LAST "
                        "(inclusive; either may be empty), to split a class across machines")
    g.add_argument("--kernel-uid", type=int, default=None, metavar="UID",
                   help="when run as root: kernels run as users UID, UID+1, ... (one per job; "
                        "default 64000); -1 runs them as root")

    m = sub.add_parser("merge", help="merge grading directories of parts of a class",
                       description="Merge grading directories made by `dvl grade --students ...` "
                                   "on several machines into one: gradebook, feedback, tables.")
    m.add_argument("parts", nargs="+", type=Path, metavar="PART")
    m.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="the merged grading directory (new or empty)")
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
                            cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                            memory_mb=args.memory)
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

    from .course import InputError
    from .sandbox import DEFAULT_UID
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    uid = DEFAULT_UID if args.kernel_uid is None else (None if args.kernel_uid < 0 else args.kernel_uid)
    print(f"grading {args.submitted} -> {args.out}", flush=True)
    report = grade_submissions(args.submitted, root, args.out, cell_timeout=args.timeout,
                               notebook_timeout=args.notebook_timeout, memory_mb=args.memory,
                               parallel=args.jobs, resume=args.resume, students=args.students,
                               kernel_uid=uid, on_result=progress)
    if report.reused:
        print(f"\nkept {report.reused} result(s) of the earlier run (--resume)")
    print()
    print(format_summary(report))
    print(f"\ngrades: {report.csv_path}\nfeedback: {report.out / 'feedback'}")
    for r in report.grader_failures:
        _err(f"could not grade {r.student}/{r.assignment}: {r.status} "
             f"(log: {report.out / 'logs' / r.student / (r.assignment + '.log')})")
    return EXIT_FAILED if report.grader_failures else EXIT_OK


def _merge(args, root: Path) -> int:
    from .grade import format_summary
    from .merge import merge
    report = merge(args.parts, args.out)
    print(format_summary(report))
    print(f"\nmerged {len(args.parts)} grading directories -> {report.out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``dvl`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = _parser().parse_args(argv)
    from .course import GraderError, InputError, find_root
    from .notebooks import NotebookError
    try:
        if args.command == "merge":
            return _merge(args, Path.cwd())
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
