"""What numba compiles, not what it loads from the cache, in a test's subprocess.

``RECORD`` is Python source for the top of a subprocess script: from its end on, ``compiled``
lists the ``__name__`` of each function as numba begins to compile it, and ``compiled_in`` the
same names as ``(phase[0], name)`` pairs, for a script that sets ``phase[0]`` as it goes.
"""
import textwrap

RECORD = textwrap.dedent("""
    from numba.core import event as _event

    compiled, compiled_in, phase = [], [], [None]


    class _Record(_event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"].py_func.__name__)
            compiled_in.append((phase[0], compiled[-1]))

        def on_end(self, ev):
            pass


    _event.register("numba:compile", _Record())
""")
