"""Whether a live widget's looks at the store are worth making: is any view of it open?

A notebook user re-runs the cell that made a ``JobTable`` or a ``Gallery`` many times; each run
makes a new widget, and the old one's output is cleared, but the old object lives on (``Out``,
a variable) with its thread looking at the store every half second. Each view says ``hello``
when it renders and ``bye`` when it goes (anywidget runs the view's cleanup); the thread parks
while views have opened and all have gone, and wakes at the next ``hello``. A widget no view
ever showed (a script, a test, ``table.rows()``) keeps looking.

Example::

    >>> watchers = Watchers()
    >>> watchers.hello(); watchers.bye()
    >>> watchers.watched
    False
    >>> watchers.park(stop)      # in the widget's thread: returns at the next hello (or stop)
"""

from __future__ import annotations

import threading

__all__ = ["Watchers"]


class Watchers:
    """How many views of a widget are open (see the module's docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open = 0
        self._ever = False
        #: True while the widget's thread waits in :meth:`park`
        self.parked = False

    @property
    def watched(self) -> bool:
        """True while a view is open, or before any view opened."""
        with self._cond:
            return self._open > 0 or not self._ever

    def hello(self) -> None:
        """A view opened: the looks go on (a parked thread wakes)."""
        with self._cond:
            self._open += 1
            self._ever = True
            self._cond.notify_all()

    def bye(self) -> None:
        """A view went away."""
        with self._cond:
            self._open = max(0, self._open - 1)

    def release(self) -> None:
        """Wake a parked thread (the widget stops: it then sees its stop event)."""
        with self._cond:
            self._cond.notify_all()

    def park(self, stop: threading.Event) -> None:
        """Wait while no view is open (views opened before); return at once otherwise, or when
        ``stop`` is set and :meth:`release` called."""
        with self._cond:
            while self._ever and self._open == 0 and not stop.is_set():
                self.parked = True
                self._cond.wait()
            self.parked = False
