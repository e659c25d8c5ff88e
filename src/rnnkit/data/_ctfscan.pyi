from typing_extensions import Buffer

def scan(
    data: Buffer,
    specs: tuple[tuple[bytes, int, bool], ...],
    ids: int,
    cur_id: int | None,
    /,
) -> (
    tuple[
        list[bytearray | tuple[int, bytearray, bytearray, bytearray]],
        bytearray,
        bool,
        int,
        int | None,
        bytearray,
        int,
    ]
    | None
): ...
