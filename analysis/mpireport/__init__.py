"""mpillama scaling report, as a package: common (constants, plan arithmetic), runs (reading
summaries), model (the performance model), tables, plots, cli. analysis/report.py runs cli.main."""
