#!/usr/bin/env python3
"""Prints the records of an mpillama output file in the order of the prompt file.

mpillama writes each record the moment its request finishes (completion order), so that a killed
job loses nothing. For input order afterwards:

    jobs/sort_records.py PROMPTS OUT.jsonl > OUT.sorted.jsonl

A record's place is its custom_id's line in PROMPTS (a line without custom_id is known by its line
number, as mpillama names it). Records whose custom_id is not in PROMPTS come last, in file order;
a torn last line (a job killed mid-write) is skipped with a warning. Standard library only.
"""
import json
import sys


def prompt_order(path):
    """custom_id -> index, in the order of the prompt file (JSONL or plain text)."""
    order, jsonl = {}, None
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if jsonl is None:
                if not s:
                    continue
                jsonl = s.startswith("{")
            if jsonl and not s:
                continue
            cid = str(lineno)
            if jsonl:
                try:
                    o = json.loads(s)
                    v = o.get("custom_id") if isinstance(o, dict) else None
                    if isinstance(v, str):
                        cid = v
                    elif isinstance(v, (int, float)) and not isinstance(v, bool):
                        cid = format(float(v), ".17g") if isinstance(v, float) else str(v)
                except ValueError:
                    pass
            order.setdefault(cid, len(order))
    return order


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr if len(argv) != 2 else sys.stdout)
        return 0 if len(argv) == 2 else 2
    order = prompt_order(argv[1])
    keyed = []
    with open(argv[2], encoding="utf-8") as f:
        for n, line in enumerate(f):
            try:
                rec = json.loads(line)
            except ValueError:
                print(f"sort_records: skipping line {n + 1} of '{argv[2]}': not a whole JSON record", file=sys.stderr)
                continue
            cid = str(rec.get("custom_id"))
            keyed.append((order.get(cid, len(order) + n), n, line if line.endswith("\n") else line + "\n"))
    keyed.sort()
    sys.stdout.writelines(line for _, _, line in keyed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
