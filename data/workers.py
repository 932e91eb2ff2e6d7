"""Worker-process setup that fails loudly instead of looping.

A ``multiprocessing.Pool`` whose initializer raises (no EGL for MuJoCo, a broken checkpoint, a
missing package) silently starts a new worker, which fails again, forever: the run hangs with
no message. :func:`guarded_initializer` keeps the worker alive and remembers the error instead,
and :func:`raise_if_setup_failed` (called first by every task function) sends it to the main
process as a :class:`WorkerSetupError`, where ``pool.imap`` re-raises it.
"""

from __future__ import annotations

import functools
import traceback

_setup_error: str | None = None


class WorkerSetupError(RuntimeError):
    """A worker process could not set up its env or policy; the message says why."""


def guarded_initializer(init):
    """Decorates a pool initializer so that its exception is kept, not fatal to the worker."""

    @functools.wraps(init)
    def wrapper(*args, **kwargs):
        global _setup_error
        _setup_error = None
        try:
            init(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - reported to the main process verbatim
            last = traceback.extract_tb(err.__traceback__)[-1]
            _setup_error = (
                f"{type(err).__name__}: {err} (in {last.filename}:{last.lineno}){_hint(err)}"
            )

    return wrapper


def raise_if_setup_failed() -> None:
    """Raises the worker's setup error, if its initializer failed."""
    if _setup_error is not None:
        raise WorkerSetupError(f"a worker process could not start: {_setup_error}")


def _hint(err: Exception) -> str:
    text = str(err).lower()
    if any(word in text for word in ("egl", "opengl", "gl context", "mujoco_gl", "osmesa")):
        return (
            "; MuJoCo renders headless through EGL: run `make setup` (it installs libegl1 and "
            "Mesa) or set MUJOCO_GL=egl/osmesa to a backend this machine has"
        )
    return ""
