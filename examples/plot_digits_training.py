"""
Train on the digits and plot the learning curves
================================================

A two-layer network on the 1,797 bundled 8x8 digits, trained with SGD and momentum for
15 epochs, with a held-out fifth as validation data. ``fit`` returns a
:class:`fastbp.History`, whose :meth:`~fastbp.History.plot` draws the loss and the accuracy,
training and validation together.
"""
import fastbp
from fastbp import datasets

X, y = datasets.load_digits()
X_train, X_val, y_train, y_val = datasets.train_test_split(X, y, test_size=0.2, seed=0, stratify=y)

model = fastbp.Sequential([
    fastbp.Dense(64, 128, activation="relu"),
    fastbp.Dropout(0.2),
    fastbp.Dense(128, 10),
], seed=0)
history = model.fit(X_train, y_train, epochs=15, batch_size=32, loss="softmax_cross_entropy",
                    optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
                    validation_data=(X_val, y_val), verbose=0)
print(model.evaluate(X_val, y_val))

# %%
# The curves: one panel per quantity, training and validation together.
fig = history.plot()

# %%
# Each epoch's logs also hold the learning rate, the epoch's time and its speed.
print(f"{history.history['samples_per_second'][-1]:,.0f} samples/s in the last epoch")
