"""scikit-learn's MLP training rules in fastbp's terms, for fastbp.estimators.

``MLPClassifier`` and ``MLPRegressor`` follow scikit-learn's trajectory for the
same hyperparameters. Here is how each piece of scikit-learn's math maps onto
fastbp's:

- Weights start as scikit-learn starts them (Glorot uniform, biases too),
  drawn from ``random_state`` in the same order (``initial_weights``).
- scikit-learn's gradient of the data term is (p - y) / N per output unit. The
  fastbp losses average over the O outputs of binary cross-entropy and take
  2 (p - y) / (N O) for squared error, so scikit-learn's gradient is ``c``
  times fastbp's, c = O for logistic outputs and O / 2 for squared error (1
  for softmax; ``output_scales``). SGD runs at ``c * learning_rate_init``;
  Adam, invariant to the gradient's scale, gets ``epsilon / c``
  (``stochastic_optimizer``).
- The L2 penalty adds alpha W / n_batch to the weight gradient (biases are not
  penalized, as in fastbp): weight decay alpha / (c * batch_size), with
  batch_size counted in sample weight (``weight_decay``). The last, smaller
  batch of an epoch is decayed as a full one, a small departure.
- scikit-learn's momentum v = mu v - lr g equals fastbp's PyTorch-style
  v = mu v + g at a constant rate; when the rate changes ('invscaling',
  'adaptive') fastbp applies the new rate to the whole velocity at once.
- scikit-learn's Adam adds epsilon to the uncorrected sqrt(v), as
  ``Adam(eps_hat=True)`` does.
- ``loss_`` and ``loss_curve_`` are scikit-learn's: log-loss summed over
  logistic outputs, half the squared error, plus the L2 penalty, which
  scikit-learn sums over the batches of an epoch and fastbp interpolates from
  the weights at the epoch's start and end (exact with one batch per epoch;
  ``SklearnEpochs.penalty``).
- The end of an epoch (loss curve, ``tol``/``n_iter_no_change`` convergence,
  early stopping on a validation score, the 'invscaling' and 'adaptive'
  learning rates) is scikit-learn's, in its order (``SklearnEpochs``,
  ``SklearnLearningRate``).
- ``solver='lbfgs'`` minimizes c times fastbp's loss plus the penalty, the
  objective whose gradient scikit-learn computes (``LbfgsObjective``). For
  several regression outputs scikit-learn hands L-BFGS that gradient with a
  loss averaged over the outputs instead; both have the same stationary
  points, and ``loss_`` is reported as scikit-learn defines it.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from .callbacks import Callback
from .optimizers import SGD, Adam
from .schedules import Schedule


def output_scales(out_activation, n_outputs):
    """(c, loss scale): scikit-learn's gradient over fastbp's, its reported loss over fastbp's mean loss."""
    if out_activation == "identity":
        return n_outputs / 2.0, 0.5
    if out_activation in ("logistic", "exp"):
        # Logistic and exp (Poisson) outputs: scikit-learn sums over outputs what fastbp averages.
        return float(n_outputs), float(n_outputs)
    return 1.0, 1.0


def initial_weights(layer_units, activation, random_state):
    """[W0, b0, W1, b1, ...] as scikit-learn initializes them, drawn from random_state in its order."""
    factor = 2.0 if activation == "logistic" else 6.0
    weights = []
    for fan_in, fan_out in zip(layer_units, layer_units[1:]):
        bound = np.sqrt(factor / (fan_in + fan_out))
        weights.append(random_state.uniform(-bound, bound, (fan_in, fan_out)))
        weights.append(random_state.uniform(-bound, bound, fan_out))
    return weights


def clipped_batch_size(batch_size, n_samples):
    """scikit-learn's batch size: 'auto' is min(200, n_samples), a number is clipped to [1, n_samples]."""
    if batch_size == "auto":
        return min(200, n_samples)
    if batch_size > n_samples:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
    return int(np.clip(batch_size, 1, n_samples))


def weight_decay(alpha, n_samples, batch_size, weight_total, c):
    """scikit-learn's L2 gradient alpha W / (weight of a batch), in fastbp's gradient units."""
    return alpha * n_samples / (batch_size * weight_total * c)


def stochastic_optimizer(params, c):
    """(learning-rate schedule, optimizer) for an estimator's solver parameters, c as in output_scales."""
    if params.solver == "sgd":
        lr = SklearnLearningRate(params.learning_rate_init, params.learning_rate, params.power_t, c)
        nesterov = params.nesterovs_momentum and params.momentum > 0
        return lr, SGD(lr=lr, momentum=params.momentum, nesterov=nesterov)
    lr = SklearnLearningRate(params.learning_rate_init)
    return lr, Adam(lr=lr, betas=(params.beta_1, params.beta_2), eps=params.epsilon / c, eps_hat=True)


def validation_split(X, Y, sample_weight, fraction, random_state, stratify):
    """scikit-learn's early-stopping hold-out: (X, Y, sample_weight), (X_val, Y_val, sw_val).

    scikit-learn's own train_test_split, not ``fastbp.datasets.train_test_split``: from the same
    ``random_state`` it holds out the rows scikit-learn's MLPs hold out, which the estimators'
    match to scikit-learn's results rests on.

    ``stratify`` is Y or None; scikit-learn stratifies single-output
    classification only.
    """
    arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
    parts = train_test_split(*arrays, random_state=random_state, test_size=fraction, stratify=stratify)
    X, X_val, Y, Y_val = parts[:4]
    sample_weight, sw_val = (parts[4], parts[5]) if sample_weight is not None else (None, None)
    if X_val.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                         "or the size of your dataset.")
    return (np.ascontiguousarray(X), Y, sample_weight), (np.ascontiguousarray(X_val), Y_val, sw_val)


class SklearnLearningRate(Schedule):
    """scikit-learn's learning-rate policy (its SGDOptimizer) as a fastbp schedule.

    ``current`` is scikit-learn's learning rate; fastbp's optimizer runs at
    ``current * scale`` (the gradient-scale factor c of ``output_scales``).
    ``SklearnEpochs`` drives it in scikit-learn's order: ``iteration_ends``
    after every epoch, ``trigger_stopping`` when the loss has stalled.
    """

    def __init__(self, lr, policy="constant", power_t=0.5, scale=1.0):
        super().__init__(lr)
        self.policy, self.power_t, self.scale = policy, float(power_t), float(scale)
        self.current = self.lr

    def lr_at(self, epoch):
        return self.current * self.scale

    def iteration_ends(self, time_step):
        if self.policy == "invscaling":
            self.current = self.lr / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        """True to stop; 'adaptive' divides the rate by 5 instead while it is above 1e-6."""
        if self.policy != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.current <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.current /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.current)
        return False

    def get_config(self):
        # Saved with the model (Sequential.save), it reloads as the rate reached.
        return {"type": "Constant", "lr": self.current * self.scale}


class SklearnEpochs(Callback):
    """scikit-learn's end-of-epoch bookkeeping of ``_fit_stochastic``, in its order, on the estimator."""

    def __init__(self, estimator, n_samples, n_batches, weight_total, validation, incremental):
        self.estimator = estimator
        self.n_samples, self.n_batches, self.weight_total = n_samples, n_batches, weight_total
        self.validation = validation
        self.incremental = incremental

    def on_train_begin(self, logs=None):
        self.squared_before = squared_weights(self.estimator.coefs_)

    def penalty(self):
        """scikit-learn's L2 term of the epoch loss: alpha / (2 N) * sum over batches of ||W||^2.

        ||W||^2 is known at the epoch's start and end, not at each batch: the
        sum over the B batches interpolates linearly between them (exact for
        one batch per epoch).
        """
        before, after = self.squared_before, squared_weights(self.estimator.coefs_)
        self.squared_before = after
        total = ((self.n_batches + 1) * before + (self.n_batches - 1) * after) / 2.0
        return 0.5 * self.estimator.alpha * total / self.weight_total

    def on_epoch_end(self, epoch, logs=None):
        est = self.estimator
        self.log_loss(logs["loss"])
        if self.validation is not None:
            self.watch_validation_score()
        else:
            self.watch_training_loss()
        est._lr.iteration_ends(est.t_)
        if est._no_improvement_count > est.n_iter_no_change and self.stop_when_stalled():
            self.model.stop_training = True
            return
        if not self.incremental and est.n_iter_ == est.max_iter:
            warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
                          "hasn't converged yet." % est.max_iter, ConvergenceWarning)

    def log_loss(self, mean_loss):
        """The epoch's loss as scikit-learn reports it, in loss_, loss_curve_ and the verbose line."""
        est = self.estimator
        est.n_iter_ += 1
        est.loss_ = float(mean_loss) * est._loss_scale + est._offset + self.penalty()
        est.t_ += self.n_samples
        est.loss_curve_.append(est.loss_)
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

    def diverged(self):
        """Record an epoch cut short by a non-finite step as scikit-learn records one: NaN loss and score."""
        est = self.estimator
        est.n_iter_ += 1
        est.loss_ = np.nan
        est.t_ += self.n_samples
        est.loss_curve_.append(est.loss_)
        if self.validation is not None:
            est.validation_scores_.append(np.nan)
            est._no_improvement_count += 1
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

    def watch_validation_score(self):
        """Early stopping: count epochs whose validation score gained less than tol, keep the best weights."""
        est = self.estimator
        score = est._score_validated(*self.validation)
        if est.validation_scores_ is None:  # a warm start after a fit without early stopping
            est.validation_scores_, est.best_validation_score_ = [], -np.inf
        est.validation_scores_.append(score)
        if est.verbose:
            print("Validation score: %f" % score)
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_weights = est._model.get_flat_weights()

    def watch_training_loss(self):
        """Without early stopping: count epochs whose training loss fell by less than tol."""
        est = self.estimator
        loss = est.loss_curve_[-1]
        if est.best_loss_ is None:
            est.best_loss_ = np.inf
        if loss > est.best_loss_ - est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if loss < est.best_loss_:
            est.best_loss_ = loss

    def stop_when_stalled(self):
        """After n_iter_no_change stalled epochs: True to stop, or ('adaptive') a smaller rate and go on."""
        est = self.estimator
        what = ("Validation score did not improve" if self.validation is not None
                else "Training loss did not improve")
        msg = "%s more than tol=%f for %d consecutive epochs." % (what, est.tol, est.n_iter_no_change)
        if est._lr.trigger_stopping(msg, est.verbose):
            return True
        est._no_improvement_count = 0
        return False


def squared_weights(coefs):
    """||W||^2 over the weight matrices (biases are not penalized)."""
    return sum(float(np.dot(w.ravel(), w.ravel())) for w in coefs)


class LbfgsObjective:
    """scikit-learn's L-BFGS objective on a fastbp ``Sequential.objective``.

    c times the data loss (whose gradient is scikit-learn's, (p - y) / N per
    output) plus alpha ||W||^2 / (2 N). Called with theta, it returns (value,
    gradient) for ``scipy.optimize.minimize(jac=True)`` and keeps in ``loss``
    the loss scikit-learn reports at theta.
    """

    def __init__(self, objective, n_weights, weight_total, scales, alpha, offset=0.0):
        self.objective, self.n_weights, self.weight_total = objective, n_weights, weight_total
        self.c, self.loss_scale = scales
        self.offset = offset  # terms of y alone that scikit-learn's reported loss holds
        self.alpha = alpha
        self.loss = np.nan

    def __call__(self, theta):
        loss, grad = self.objective(theta)
        w = theta[:self.n_weights]
        penalty = 0.5 * self.alpha * np.dot(w, w) / self.weight_total
        grad *= self.c
        grad[:self.n_weights] += self.alpha * w / self.weight_total
        self.loss = loss * self.loss_scale + self.offset + penalty
        return self.c * loss + penalty, grad
