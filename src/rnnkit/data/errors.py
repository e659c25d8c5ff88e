"""The one error class every rnnkit reader raises for malformed input."""

from __future__ import annotations

from os import PathLike

__all__ = ["ReaderError"]


class ReaderError(ValueError):
    """Malformed input, located as ``path:line:column`` (1-based), with what was found.

    Binary files are located by ``byte``, the 0-based offset of the problem (``path: byte N``).

    >>> str(ReaderError("expected a number, found 'x'", path="a.ctf", line=3, column=7, stream="x"))
    "a.ctf:3:7: stream 'x': expected a number, found 'x'"
    >>> str(ReaderError("expected 0x00, found 0x05", path="x.idx", byte=1))
    'x.idx: byte 1: expected 0x00, found 0x05'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        column: int | None = None,
        stream: str | None = None,
        byte: int | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.stream = stream
        self.byte = byte
        super().__init__(self._render())

    def _render(self) -> str:
        where = [p for p in (self.path, self.line, self.column) if p is not None]
        prefix = ":".join(str(p) for p in where)
        parts = [prefix] if prefix else []
        if self.byte is not None:
            parts.append(f"byte {self.byte}")
        if self.stream is not None:
            parts.append(f"stream {self.stream!r}")
        parts.append(self.message)
        return ": ".join(parts)
