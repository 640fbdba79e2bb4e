#!/usr/bin/python3
"""check_skips.py JUNIT_XML ALLOWLIST: lists every skip of a ctest run and, under CI=true, fails
(exit 1) unless each one names its reason on the allow-list.

A skip is a line "SKIP: <reason>" (the whole test, which then exits 77) or "SKIP (part): <reason>"
(part of a test) in a test's output; a test that ctest reports skipped without a "SKIP:" line is
an unexplained skip. Allow-list lines: TEST_NAME REASON_REGEX (matched at the reason's start)."""
import os
import re
import sys
import xml.etree.ElementTree as ET

SKIP_LINE = re.compile(r"^SKIP( \(part\))?: (.*)$")


def load_allowlist(path):
    allowed = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                sys.exit("check_skips: %s:%d: want TEST_NAME REASON_REGEX" % (path, n))
            allowed.append((parts[0], re.compile(parts[1])))
    return allowed


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check_skips.py JUNIT_XML ALLOWLIST")
    junit, allowlist = sys.argv[1:]
    allowed = load_allowlist(allowlist)
    ci = os.environ.get("CI", "").lower() == "true"
    bad, seen = [], 0
    for tc in ET.parse(junit).getroot().iter("testcase"):
        name = tc.get("name")
        out = tc.findtext("system-out") or ""
        whole = tc.get("status") == "notrun" or tc.find("skipped") is not None
        reasons = [(m.group(1) is not None, m.group(2).strip()) for m in map(SKIP_LINE.match, out.splitlines()) if m]
        if whole and not any(not part for part, _ in reasons):
            bad.append("%s: skipped without a 'SKIP: <reason>' line" % name)
        for part, reason in reasons:
            seen += 1
            ok = any(t == name and rx.match(reason) for t, rx in allowed)
            print("skip %-20s %-6s %s%s" % (name, "(part)" if part else "", reason, "" if ok else "  [not on the allow-list]"))
            if not ok:
                bad.append("%s: %s" % (name, reason))
    if not bad:
        print("check_skips: %d skip(s), all on %s" % (seen, allowlist) if seen else "check_skips: no skips")
        return 0
    if not ci:
        print("check_skips: %d skip(s) not on %s (a failure under CI=true)" % (len(bad), allowlist))
        return 0
    print("check_skips: CI=true and %d unexplained skip(s):" % len(bad))
    for b in bad:
        print("  " + b)
    return 1


if __name__ == "__main__":
    sys.exit(main())
