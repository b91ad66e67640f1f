#!/usr/bin/env python3
"""Compares two run directories output by output, by the sha256 in each stage's manifest.

    scripts/compare_runs.py BEFORE_RUN_DIR AFTER_RUN_DIR

Prints every output whose checksum differs; for JSON outputs it also says whether they are
equal once wall-time fields (`*seconds*`, `*per_s*`) are ignored. Exit status 1 when an
output differs beyond those fields. Used to check that a refactoring left every artifact
byte-identical (see ARCHITECTURE.md).
"""
import json
import os
import re
import sys


def strip_times(value):
    if isinstance(value, dict):
        return {k: strip_times(v) for k, v in value.items()
                if not re.search(r"seconds|per_s|per_second", k)}
    if isinstance(value, list):
        return [strip_times(v) for v in value]
    return value


def main(before, after):
    same = timing_only = differ = 0
    for stage in sorted(os.listdir(before)):
        manifest = os.path.join(before, stage, "manifest.json")
        if not os.path.isfile(manifest):
            continue
        a = json.load(open(manifest))["outputs"]
        other = os.path.join(after, stage, "manifest.json")
        b = json.load(open(other))["outputs"] if os.path.isfile(other) else {}
        for name in sorted(set(a) | set(b)):
            if a.get(name, {}).get("sha256") == b.get(name, {}).get("sha256"):
                same += 1
                continue
            note = "differs"
            if name.endswith(".json") and name in a and name in b:
                x = json.load(open(os.path.join(before, stage, name)))
                y = json.load(open(os.path.join(after, stage, name)))
                if strip_times(x) == strip_times(y):
                    note = "differs only in wall-time fields"
                    timing_only += 1
                    print(f"{stage}/{name}: {note}")
                    continue
            differ += 1
            print(f"{stage}/{name}: {note}")
    print(f"{same} identical, {timing_only} differ only in wall times, {differ} differ otherwise")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
