"""fastbp's version, in a module of its own: the package's ``__init__`` imports every module, so
a module that records the version in what it writes (``_persist``, ``export``) reads it here."""
__version__ = "0.1.0"
