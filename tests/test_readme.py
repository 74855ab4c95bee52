"""The README's Python examples run as written and do what they say."""
import pathlib
import re

import warnings

import numpy as np
import pytest

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


def test_njit_kernel_example(capsys):
    namespace = {}
    exec(compile(_python_blocks()[1], "README-kernels", "exec"), namespace)
    losses = namespace["losses"]
    assert abs(losses[0] - np.log(3)) < 1e-6  # zero weights: uniform softmax over 3 classes
    assert losses[-1] < 0.3 * losses[0]
    # The user's @njit function compiled the public names to the kernels themselves.
    assert namespace["train_step"].signatures


def test_interop_example(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="the example serves the graph with onnxruntime")
    pytest.importorskip("sklearn", reason="the example starts from scikit-learn's MLPClassifier")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's ConvergenceWarning after 20 epochs
        exec(compile(_python_blocks()[2], "README-interop", "exec"), namespace)
    model, X = namespace["model"], namespace["X"]
    np.testing.assert_allclose(namespace["proba"], model.predict_proba(X[:5]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(namespace["logits"], model.decision_function(X[:5]), rtol=1e-5, atol=1e-5)
    assert list(namespace["state"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert namespace["clf"].n_iter_ == 1 and (tmp_path / "clf.onnx").exists()
