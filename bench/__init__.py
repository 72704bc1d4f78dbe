"""``make bench``: lease and cycle figures beside the bare-client floor (issue 3).

A benchmark, not a test: it measures and prints, and exits 0 whether or not a target is
met. See ``docs/benchmarks.md`` for what every figure means.
"""
