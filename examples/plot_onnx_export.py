"""
Export to ONNX and serve with onnxruntime
=========================================

:meth:`fastbp.Sequential.to_onnx` writes the network as a standard ONNX graph (input ``X``;
outputs ``output``, the logits, and ``probabilities``), which any ONNX runtime serves without
fastbp. Here onnxruntime serves a model trained on the digits, and its probabilities are set
against fastbp's own. Needs ``pip install "fastbp[onnx]" onnxruntime``.
"""
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime as ort

import fastbp
from fastbp import datasets

X, y = datasets.load_digits()
X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.2, seed=0, stratify=y)
model = fastbp.Sequential([fastbp.Dense(64, 64), fastbp.BatchNorm(64), fastbp.GELU(),
                           fastbp.Dropout(0.1), fastbp.Dense(64, 10)], seed=0)
model.fit(X_train, y_train, epochs=10, loss="softmax_cross_entropy",
          optimizer=fastbp.Adam(lr=3e-3), verbose=0)

path = os.path.join(tempfile.mkdtemp(), "digits.onnx")
model.to_onnx(path)                            # BatchNorm with its running statistics; no Dropout

session = ort.InferenceSession(path)
print([o.name for o in session.get_inputs()], "->", [o.name for o in session.get_outputs()])
logits, proba = session.run(None, {"X": X_test})
print("largest difference from fastbp:", np.abs(proba - model.predict_proba(X_test)).max())
print("accuracy served by onnxruntime:", (proba.argmax(axis=1) == y_test).mean())

# %%
# The probabilities onnxruntime serves against fastbp's own, for every test digit and class.
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(model.predict_proba(X_test).ravel(), proba.ravel(), s=4)
ax.set_xlabel("fastbp predict_proba")
ax.set_ylabel("onnxruntime probabilities")
fig.tight_layout()
