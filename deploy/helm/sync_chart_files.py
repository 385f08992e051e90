"""Bring the Helm chart's generated and copied files in line with the repository.

    .venv/bin/python deploy/helm/sync_chart_files.py          # write them
    .venv/bin/python deploy/helm/sync_chart_files.py --check  # exit 1 and list what differs

What it maintains, under deploy/helm/runbookd/files/:

- rbac-rules.yaml: the ClusterRole rules derived from the actions' declared permissions
  (daemon.actions.rbac over daemon.actions.registry.default_registry());
- rules/*.yaml: copies of rules/*.yaml (the chart wraps each in a PrometheusRule);
- runbooks/*.yaml: copies of runbooks/*.yaml (the chart ships them in the runbooks ConfigMap);
- rules/README.md and runbooks/README.md: a note that the folder is generated, from what and how.

Helm only packages files inside the chart folder, hence copies rather than links. tests/test_helm.py runs
the same comparison, so a new action, rule or runbook without a re-sync fails CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "runbookd"
FILES = CHART / "files"
COPIED = {"rules": REPO / "rules", "runbooks": REPO / "runbooks"}
"""Chart folder under files/ -> the repository folder whose *.yaml it copies."""


def generated_note(folder: str) -> bytes:
    """The README.md of a copied folder: what it is generated from and how to regenerate it."""
    return (
        f"# Generated: do not edit\n\n"
        f"Every `*.yaml` file here is a byte-for-byte copy of the repository's `{folder}/` folder, made by\n"
        f"`deploy/helm/sync_chart_files.py` (Helm packages only files inside the chart folder, hence copies).\n"
        f"Edit `{folder}/` and run:\n\n"
        f"    .venv/bin/python deploy/helm/sync_chart_files.py\n\n"
        f"`tests/test_helm.py` fails when this folder and `{folder}/` differ.\n"
    ).encode()


def expected() -> dict[Path, bytes]:
    """Every file this script owns, by path, with the content it should have."""
    sys.path.insert(0, str(REPO))
    from daemon.actions.rbac import render_rules, rules_for
    from daemon.actions.registry import default_registry

    want = {FILES / "rbac-rules.yaml": render_rules(rules_for(default_registry())).encode()}
    for folder, source in COPIED.items():
        for src in sorted(source.glob("*.yaml")):
            want[FILES / folder / src.name] = src.read_bytes()
        want[FILES / folder / "README.md"] = generated_note(folder)
    return want


def differences(want: dict[Path, bytes]) -> list[str]:
    """What is missing, stale or extra in the chart, as repository-relative paths."""
    out = []
    for path, content in want.items():
        if not path.exists():
            out.append(f"missing: {path.relative_to(REPO)}")
        elif path.read_bytes() != content:
            out.append(f"out of date: {path.relative_to(REPO)}")
    for folder in COPIED:
        for path in sorted((FILES / folder).glob("*.yaml")):
            if path not in want:
                out.append(f"extra (no longer in {folder}/): {path.relative_to(REPO)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if out of sync")
    args = parser.parse_args(argv)
    want = expected()
    diffs = differences(want)
    if args.check:
        for line in diffs:
            print(line, file=sys.stderr)
        return 1 if diffs else 0
    for folder in COPIED:
        for path in (FILES / folder).glob("*.yaml"):
            if path not in want:
                path.unlink()
    for path, content in want.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    for line in diffs:
        print(f"synced ({line})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
