#!/usr/bin/python3
"""Scaling report for mpillama runs: tables, plots and a fitted performance model.

    /usr/bin/python3 analysis/report.py RUNS_DIR OUT_DIR [options]

Reads every summary.json under RUNS_DIR (recursively; docs/TRACE.md), and the trace.json beside
it when there is one (message and step counts). Writes to OUT_DIR: scaling.csv, predictions.csv,
report.md and PNG plots (throughput.png, efficiency.png, categories.png, bubble.png,
prediction.png). Needs numpy (the fit) and matplotlib (the plots; Debian: python3-matplotlib);
without either it still writes what it can and says what it left out. Bad or partial input gives
notes in the report, never a traceback. Exit status: 0 when report.md was written, 2 on a usage
error. analysis/README.md describes the model."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mpireport.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
