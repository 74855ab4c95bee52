"""The README's Python examples run as written and do what they say."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    commands = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    lines = [line for line in commands.splitlines() if line and not line.startswith("#")]
    assert lines == ['python -m pip install . && fastbp train',
                     'python -m pip install -e ".[test]" && python -m pytest']
    assert "python -m pytest" in pathlib.Path(README.parent, ".ci", "run").read_text()


def test_training_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_python_blocks()[0], "README-training", "exec"), namespace)
    model, same = namespace["model"], namespace["same"]
    X_test, y_test = namespace["X_test"], namespace["y_test"]
    assert model.evaluate(X_test, y_test)["accuracy"] >= 0.97
    np.testing.assert_array_equal(same.decision_function(X_test), model.decision_function(X_test))
    assert (tmp_path / "digits.npz").exists()


def test_readme_has_one_python_example():
    # The other examples live on the site's pages, which tests/test_docs.py runs.
    assert len(_python_blocks()) == 1


def test_readme_speed_table_is_benchmarks_current_table():
    bench = (README.parent / "BENCHMARKS.md").read_text()
    rows = re.findall(r"^\| [^|]*batch \d+ \| ([\d,]+) \|", README.read_text(), flags=re.M)
    assert rows and all(f"| {r} |" in bench for r in rows)
