"""
The estimators in a scikit-learn pipeline, with a grid search
=============================================================

:class:`fastbp.MLPClassifier` takes scikit-learn's parameters, so it fits in a
``Pipeline`` and a ``GridSearchCV``
like scikit-learn's own ``MLPClassifier``. A tiny grid over the L2 penalty and the hidden
width, with 3-fold cross-validation, float32 for speed.
"""
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastbp
from fastbp import datasets

X, y = datasets.load_digits()
pipe = make_pipeline(StandardScaler(),
                     fastbp.MLPClassifier(max_iter=30, random_state=0, dtype="float32"))
grid = {"mlpclassifier__alpha": [1e-4, 1e-1],
        "mlpclassifier__hidden_layer_sizes": [(16,), (64,)]}
search = GridSearchCV(pipe, grid, cv=3)
search.fit(X, y)
print("best:", search.best_params_, f"accuracy {search.best_score_:.3f}")

# %%
# The mean cross-validated accuracy of each point of the grid.
scores = search.cv_results_["mean_test_score"].reshape(2, 2)
fig, ax = plt.subplots(figsize=(5, 3.5))
for i, alpha in enumerate(grid["mlpclassifier__alpha"]):
    ax.plot([16, 64], scores[i], marker="o", label=f"alpha = {alpha:g}")
ax.set_xlabel("hidden units")
ax.set_ylabel("mean CV accuracy")
ax.set_xticks([16, 64])
ax.legend()
fig.tight_layout()
