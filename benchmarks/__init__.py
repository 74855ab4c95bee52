"""fastbp benchmarks: asv suites (bench_*.py), pytest-benchmark (test_*.py) and compare.py.

All three take their shapes, configurations, data and models from ``configs``.
"""
