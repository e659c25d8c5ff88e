"""CNTK's ``default_options``: option defaults set for a ``with`` block, for CNTK programs.

The API, for the constructors of :mod:`rnnkit.cntk` (nothing else in rnnkit reads it):

``default_options(**options)``
    A context manager: inside the block, a constructor of :mod:`rnnkit.cntk` that takes an
    option of one of these names and is not given it explicitly uses the value set here.
    Blocks nest; the innermost block that sets a name wins.
``default_options_for(owners, **options)``
    The same, for the constructors in ``owners`` only (one constructor or a list).
``default_override_or(value)``
    The marker a constructor puts in its signature: ``activation=default_override_or(tanh)``
    shows the default (``tanh``) and tells :func:`resolve` that the caller passed nothing.
``resolve(owner, name=value)``
    Inside a constructor: ``value`` when the caller passed it, else the innermost setting of
    ``name`` in force for ``owner``, else the default that ``default_override_or`` holds.
``get_default(name, fallback, owner=None)``
    The innermost setting of ``name`` in force (for ``owner`` when given), else ``fallback``.

As in CNTK, a block's names are not checked when it is entered (one block serves constructors
with different options); a constructor reads only the names it takes, and :func:`resolve` and
:func:`get_default` with an ``owner`` refuse a name that ``owner`` has no parameter for. The
settings are kept per thread and per asyncio task (a :class:`contextvars.ContextVar`).

rnnkit's own classes take every option explicitly (no global option contexts in rnnkit
itself): ``default_options`` changes only what the :mod:`rnnkit.cntk` constructors build.

>>> def Dense(shape, activation=default_override_or(None), bias=default_override_or(True)):
...     return resolve(Dense, activation=activation), resolve(Dense, bias=bias)
>>> Dense(3)
(None, True)
>>> with default_options(activation="relu"):
...     with default_options(activation="tanh", bias=False):
...         inner = Dense(3)
...     outer = Dense(3), Dense(3, activation="sigmoid")
>>> inner, outer
(('tanh', False), (('relu', True), ('sigmoid', True)))
>>> with default_options_for(Dense, bias=False):
...     Dense(3), get_default("bias", True, owner=Dense)
((None, False), False)
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "default_options",
    "default_options_for",
    "default_override_or",
    "get_default",
    "resolve",
]

T = TypeVar("T")


@dataclass(frozen=True)
class _Scope:
    """One ``with`` block: its options, the constructors it is for (None: all) and the block
    around it."""

    options: Mapping[str, Any]
    owners: frozenset[Callable[..., Any]] | None
    outer: _Scope | None


_CURRENT: ContextVar[_Scope | None] = ContextVar("rnnkit_cntk_default_options", default=None)


class default_override_or(Generic[T]):
    """A signature's default that :func:`resolve` may replace by a ``default_options`` one.

    >>> default_override_or(0.5).value
    0.5
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"default_override_or({self.value!r})"


@contextlib.contextmanager
def _enter(owners: frozenset[Callable[..., Any]] | None, options: dict[str, Any]) -> Iterator[None]:
    token = _CURRENT.set(_Scope(dict(options), owners, _CURRENT.get()))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def default_options(**options: Any) -> contextlib.AbstractContextManager[None]:
    """Defaults for every :mod:`rnnkit.cntk` constructor built inside the ``with`` block that
    takes an option of these names (see the module doc)."""
    return _enter(None, options)


def default_options_for(
    owners: Callable[..., Any] | Iterable[Callable[..., Any]], **options: Any
) -> contextlib.AbstractContextManager[None]:
    """:func:`default_options` for the constructors ``owners`` (one or a list) only.

    >>> def GRU(shape, init_bias=default_override_or(0.0)):
    ...     return resolve(GRU, init_bias=init_bias)
    >>> def RNNStep(shape, init_bias=default_override_or(0.0)):
    ...     return resolve(RNNStep, init_bias=init_bias)
    >>> with default_options_for([GRU], init_bias=1.0):
    ...     GRU(4), RNNStep(4)
    (1.0, 0.0)
    """
    chosen = [owners] if callable(owners) else list(owners)
    for i, owner in enumerate(chosen):
        if not callable(owner):
            raise TypeError(
                f"owners[{i}]: expected a constructor (a function or class), found "
                f"{type(owner).__name__}"
            )
    return _enter(frozenset(chosen), options)


def _check_takes(owner: Callable[..., Any], name: str) -> None:
    target = owner.__init__ if inspect.isclass(owner) else owner
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check
        return
    if name not in parameters:
        raise TypeError(
            f"{getattr(owner, '__name__', repr(owner))}() has no option named {name!r}: "
            f"expected one of {sorted(p for p in parameters if p != 'self')}"
        )


def get_default(name: str, fallback: T, owner: Callable[..., Any] | None = None) -> T:
    """The innermost ``default_options`` setting of ``name`` in force, else ``fallback``.

    With an ``owner``, the ``default_options_for`` blocks apply only when they name it; without
    one, every block applies (CNTK's rule).

    >>> get_default("initial_state", None)
    >>> with default_options(initial_state=0.1):
    ...     get_default("initial_state", None)
    0.1
    """
    if owner is not None:
        _check_takes(owner, name)
    scope = _CURRENT.get()
    while scope is not None:
        applies = scope.owners is None or owner is None or owner in scope.owners
        if applies and name in scope.options:
            return scope.options[name]
        scope = scope.outer
    return fallback


def resolve(owner: Callable[..., Any], **option: Any) -> Any:
    """The value of one option of ``owner`` (CNTK's ``get_default_override``): the one passed
    when it is not a :class:`default_override_or`, else the innermost setting in force for
    ``owner``, else the marker's value."""
    if len(option) != 1:
        raise TypeError(f"resolve: expected one option name=value, found {len(option)}")
    ((name, value),) = option.items()
    _check_takes(owner, name)
    if not isinstance(value, default_override_or):
        return value
    return get_default(name, value.value, owner)
