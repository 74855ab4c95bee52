"""pytest settings for the benchmarks.

pyproject's addopts carry --benchmark-disable so that the default test run never times
anything, and pytest-benchmark refuses --benchmark-only together with it. Asking for
benchmarks only is asking for them to run: turn them back on, so that
``pytest benchmarks --benchmark-only`` works as written.

The default test run spreads over worker processes (pytest-xdist, addopts), under which
pytest-benchmark will not time anything: asking for benchmarks also runs them in this one
process. (tryfirst: before xdist's own configure sees the worker count.)
"""
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    if config.getoption("benchmark_only", False):
        config.option.benchmark_enable = True
        if config.pluginmanager.hasplugin("xdist"):
            config.option.numprocesses = 0
            config.option.dist = "no"
