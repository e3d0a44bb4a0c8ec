"""pincat's benchmark harness, run as `scripts/bench` (its docstring has the
cases, options and environment variables).

Layout: common.py (BENCH_* settings, the Tool and Target types, judging
targets, Markdown helpers, build and context), procs.py (child processes,
ports, peak RSS, payload files), tools.py (the table: every tool of every
case), one module per case (throughput, startup_latency, load, small_files,
forward, pipe, round_trips) and report.py (the whole and single-case runs)."""
