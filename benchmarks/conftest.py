"""pytest settings for the benchmarks.

pyproject's addopts carry --benchmark-disable so that the default test run never times
anything, and pytest-benchmark refuses --benchmark-only together with it. Asking for
benchmarks only is asking for them to run: turn them back on, so that
``pytest benchmarks --benchmark-only`` works as written.
"""


def pytest_configure(config):
    if config.getoption("benchmark_only", False):
        config.option.benchmark_enable = True
