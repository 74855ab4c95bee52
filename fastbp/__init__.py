"""fastbp: hand-derived backpropagation compiled just in time with numba."""
__version__ = "0.1.0"
