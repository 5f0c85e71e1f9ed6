#!/usr/bin/env python3
"""Writes deploy/k8s/prometheusrule.yaml from deploy/switchyard-alerts.yml.

deploy/switchyard-alerts.yml is the one source of switchyard's alert rules (a Prometheus rule
file). The Prometheus Operator wants the same groups inside a PrometheusRule object: this script
copies the rule file's text under `spec:` (indented, comments kept), so the two cannot drift
apart in content. Standard library only.

    python3 deploy/k8s/gen-prometheusrule.py           # rewrite prometheusrule.yaml
    python3 deploy/k8s/gen-prometheusrule.py --check   # exit 1 if it is not up to date

deploy/validate.sh runs --check, and also compares the two files' groups after parsing them.
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent / "switchyard-alerts.yml"
TARGET = HERE / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/switchyard-alerts.yml by deploy/k8s/gen-prometheusrule.py: do not edit
# (edit the rule file, then run the script). The same groups as the rule file, for the
# Prometheus Operator. Your Prometheus may select rules by label (its ruleSelector, e.g.
# release: <helm release>): add that label in kustomization.yaml.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: switchyard
  labels:
    app.kubernetes.io/name: switchyard
spec:
"""


def render(source_text: str) -> str:
    lines = source_text.splitlines()
    # The rule file's leading comment block describes the file itself: leave it out.
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    if not lines or not lines[0].startswith("groups:"):
        raise SystemExit(f"{SOURCE}: expected the rule file to start with `groups:` after its comments")
    for line in lines:
        if line and not line[0].isspace() and not line.startswith(("groups:", "#")):
            raise SystemExit(f"{SOURCE}: a rule file has only `groups:` at the top level, found {line!r}")
    body = "".join(("  " + line if line.strip() else "") + "\n" for line in lines)
    return HEADER + body


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] and not check:
        print(__doc__, file=sys.stderr)
        return 2
    want = render(SOURCE.read_text())
    have = TARGET.read_text() if TARGET.exists() else None
    if check:
        if have != want:
            print(f"{TARGET} is not up to date with {SOURCE}: run python3 {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if have != want:
        TARGET.write_text(want)
        print(f"wrote {TARGET}")
    else:
        print(f"{TARGET} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
