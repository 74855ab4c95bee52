import sys

from .cli import run

# This process's own main module (``python -m fastbp``), or a namespace of another program's
# ``runpy.run_module``, which must get its SystemExit back.
run(own_process=sys.modules.get("__main__") is not None and vars(sys.modules["__main__"]) is globals())
