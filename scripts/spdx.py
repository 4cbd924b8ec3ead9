#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""scripts/spdx.py - every source file of the project says its licence in an SPDX line.

    scripts/spdx.py          lists the tracked source files without one (exit 1 if any)
    scripts/spdx.py --add    adds the line where it is missing (after a #! line)
"""
import subprocess
import sys

TAG = "SPDX-License-Identifier: Apache-2.0"
# file name ending -> the line to add
STYLES = {".c": f"/* {TAG} */", ".h": f"/* {TAG} */", ".py": f"# {TAG}", ".sh": f"# {TAG}",
          ".js": f"// {TAG}", ".lua": f"-- {TAG}", ".am": f"# {TAG}", ".ac": f"dnl {TAG}",
          ".conf": f"# {TAG}", ".load": f"# {TAG}", ".ci/run": f"# {TAG}",
          "debian/rules": f"# {TAG}"}
SKIP = ("fuzz/corpus/", "tests/integration/snapshots/",
        "tests/peers/dd-apm-test-agent/ddapm_test_agent/")  # Datadog's, with its own licence


def style(path):
    for end, line in STYLES.items():
        if path.endswith(end):
            return line
    return None


def main():
    add = "--add" in sys.argv[1:]
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split("\n")
    missing = []
    for path in files:
        line = style(path) if path and not path.startswith(SKIP) else None
        if line is None:
            continue
        try:
            text = open(path, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError):
            continue
        if TAG in "\n".join(text.split("\n")[:5]):
            continue
        missing.append(path)
        if add:
            lines = text.split("\n")
            at = 1 if lines and lines[0].startswith("#!") else 0
            lines.insert(at, line)
            open(path, "w", encoding="utf-8").write("\n".join(lines))
    for path in missing:
        print(("added to " if add else "no SPDX line: ") + path)
    return 0 if add or not missing else 1


if __name__ == "__main__":
    sys.exit(main())
