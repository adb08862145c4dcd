"""Read (fast) and rewrite (with the ``gguf`` package's writer) the end-token metadata of a GGUF file.

``gguf.GGUFReader`` parses every array element into numpy views, which takes ~7 s for a 49k-token vocabulary;
the doctor only needs a few keys, so :func:`read_gguf_metadata` walks the key/value section with ``struct``
(the layout and value types are the ``gguf`` package's own constants).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from gguf import GGUFValueType, Keys

END_KEYS = {"eos": Keys.Tokenizer.EOS_ID, "eot": Keys.Tokenizer.EOT_ID, "eom": Keys.Tokenizer.EOM_ID}
_SCALARS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


def read_gguf_metadata(path) -> dict:
    """The scalar and string metadata of a GGUF file, plus ``tokenizer.ggml.tokens`` as a list of strings.

    Other arrays (scores, merges, token types) are skipped. Raises ``ValueError`` for a file that is not GGUF.
    """
    path = Path(path)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (it does not start with 'GGUF')")
        order = "<" if struct.unpack_from("<I", data, 4)[0] < 0x10000 else ">"
        offset = 4

        def read(fmt: str):
            nonlocal offset
            values = struct.unpack_from(order + fmt, data, offset)
            offset += struct.calcsize(order + fmt)
            return values[0]

        def read_string() -> str:
            nonlocal offset
            length = read("Q")
            text = bytes(data[offset:offset + length]).decode("utf-8", errors="replace")
            offset += length
            return text

        def read_value(value_type: int, keep: bool):
            nonlocal offset
            if value_type == GGUFValueType.STRING:
                return read_string()
            if value_type != GGUFValueType.ARRAY:
                return read(_SCALARS[GGUFValueType(value_type)])
            item_type, count = read("I"), read("Q")
            if item_type in _SCALARS and not keep:
                offset += count * struct.calcsize(_SCALARS[GGUFValueType(item_type)])
                return None
            if item_type == GGUFValueType.STRING and not keep:  # e.g. 48k merges: step over, do not decode
                for _ in range(count):
                    length = read("Q")  # (not `offset += read(...)`: that would add to the offset before the read)
                    offset += length
                return None
            items = [read_value(item_type, keep) for _ in range(count)]
            return items if keep else None

        read("I")  # version
        read("Q")  # tensor count
        metadata = {}
        for _ in range(read("Q")):
            key = read_string()
            metadata[key] = read_value(read("I"), keep=key == Keys.Tokenizer.LIST)
    return {key: value for key, value in metadata.items() if value is not None}


def write_gguf_with_metadata(source, target, changes: dict[str, int]) -> None:
    """Copy a GGUF file to ``target`` with some ``tokenizer.ggml.*_token_id`` values set (added when missing)."""
    import logging

    from gguf import GGUFReader, GGUFWriter
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = GGUFReader(source, "r")
    architecture = reader.get_field(Keys.General.ARCHITECTURE).contents()
    writer = GGUFWriter(target, architecture, endianess=reader.endianess)
    new_metadata = {key: MetadataDetails(GGUFValueType.UINT32, int(value)) for key, value in changes.items()}
    logging.getLogger("gguf-new-metadata").setLevel(logging.WARNING)
    copy_with_new_metadata(reader, writer, new_metadata, [])
