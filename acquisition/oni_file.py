"""OpenNI2 ``.oni`` recordings: their record layout, and the cropping property OpenNI2 2.2's player needs.

An ``.oni`` file (OpenNI2's libOniFile, format 1.0.1.0) is a 24-byte header (``NI10``, version, max
timestamp, max node id) followed by records. Every record starts with a 28-byte header: magic
``NIR\\0``, record type, node (stream) id, fields size (header included), payload size, and the file
offset of the record it undoes (0 = none). Three kinds of field hold file offsets: that undo offset
(the previous record of the same property or stream data), a node-added record's seek-table offset
(its last 8 bytes) and the seek table's entries (timestamp u64, configuration id u32, record offset
u64). A property record's fields are its name (u32 length with the NUL, the NUL-terminated name), the
data size (u32) and the data.

OpenNI2 2.2's player (PlayerStream::OnNewDataCallback) drops every frame of a stream that has no
cropping property, and its recorder writes one (``xnCropping``) only for streams whose driver reports
cropping: recordings of the Dummy device play back no frames. :func:`add_cropping` inserts a
"cropping off, full frame" ``xnCropping`` record for each stream without one, right after the
stream's node-added record, and moves every file offset behind it; the frames are not touched.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

FILE_MAGIC = b"NI10"
FILE_HEADER_BYTES = 24
RECORD_MAGIC = b"NIR\0"
RECORD_HEADER = struct.Struct("<4sIIIIQ")  # magic, type, node id, fields size, payload size, undo offset
UNDO_OFFSET_AT = 20  # byte offset of the undo offset inside a record header
SEEK_ENTRY = struct.Struct("<QIQ")  # timestamp µs, configuration id, record offset
SEEK_ENTRY_OFFSET_AT = 12
XN_CROPPING = struct.Struct("<iHHHH")  # XnCropping: enabled, x offset, y offset, width, height (px)
MAP_OUTPUT_MODE = struct.Struct("<III")  # XnMapOutputMode: width px, height px, fps

NODE_ADDED = 0x0D  # the only node-added record OpenNI2 writes (the 1.0.0.4/5 ones carry no seek table)
OLD_NODE_ADDED = (0x02, 0x0C)
GENERAL_PROPERTY = 0x06
END = 0x0B
SEEK_TABLE = 0x0E
CROPPING_NAME = "xnCropping"
MAP_OUTPUT_MODE_NAME = "xnMapOutputMode"


class OniFormatError(ValueError):
    """The bytes are not an ``.oni`` recording this module understands (one-line message)."""


@dataclass(frozen=True)
class OniRecord:
    """One record's header: where it starts and how long it is (bytes)."""

    offset: int
    type: int
    node_id: int
    fields_bytes: int
    payload_bytes: int
    undo_offset: int

    @property
    def end(self) -> int:
        return self.offset + self.fields_bytes + self.payload_bytes


def read_records(data: bytes) -> list[OniRecord]:
    """Every record from the file header to the END record (inclusive); OniFormatError when damaged."""
    if len(data) < FILE_HEADER_BYTES or data[:4] != FILE_MAGIC:
        raise OniFormatError("not an OpenNI recording (no NI10 header)")
    records: list[OniRecord] = []
    offset = FILE_HEADER_BYTES
    while True:
        if offset + RECORD_HEADER.size > len(data):
            raise OniFormatError(f"truncated at byte {offset} (no END record)")
        magic, rtype, node, fields, payload, undo = RECORD_HEADER.unpack_from(data, offset)
        if magic != RECORD_MAGIC or fields < RECORD_HEADER.size or offset + fields + payload > len(data):
            raise OniFormatError(f"damaged record at byte {offset}")
        records.append(OniRecord(offset, rtype, node, fields, payload, undo))
        if rtype == END:
            return records
        offset += fields + payload


def property_name(data: bytes, rec: OniRecord) -> str:
    """The name of a property record."""
    (size,) = struct.unpack_from("<I", data, rec.offset + RECORD_HEADER.size)
    start = rec.offset + RECORD_HEADER.size + 4
    return data[start:start + max(size - 1, 0)].decode("ascii", errors="replace")


def property_data(data: bytes, rec: OniRecord) -> bytes:
    """The value bytes of a general property record."""
    (name_size,) = struct.unpack_from("<I", data, rec.offset + RECORD_HEADER.size)
    at = rec.offset + RECORD_HEADER.size + 4 + name_size
    (size,) = struct.unpack_from("<I", data, at)
    return data[at + 4:at + 4 + size]


def cropping_record(node_id: int, width_px: int, height_px: int) -> bytes:
    """An ``xnCropping`` general property record: cropping off, the full ``width_px`` x ``height_px``."""
    name = CROPPING_NAME.encode() + b"\0"
    value = XN_CROPPING.pack(0, 0, 0, width_px, height_px)
    fields = struct.pack("<I", len(name)) + name + struct.pack("<I", len(value)) + value
    return RECORD_HEADER.pack(RECORD_MAGIC, GENERAL_PROPERTY, node_id, RECORD_HEADER.size + len(fields), 0, 0) + fields


def _frame_sizes_px(data: bytes, records: list[OniRecord]) -> dict[int, tuple[int, int]]:
    """(width, height) per node id from its ``xnMapOutputMode`` records (the last one wins)."""
    sizes: dict[int, tuple[int, int]] = {}
    for rec in records:
        if rec.type == GENERAL_PROPERTY and property_name(data, rec) == MAP_OUTPUT_MODE_NAME:
            value = property_data(data, rec)
            if len(value) == MAP_OUTPUT_MODE.size:
                w, h, _ = MAP_OUTPUT_MODE.unpack(value)
                sizes[rec.node_id] = (w, h)
    return sizes


def _insert_records(data: bytes, records: list[OniRecord], inserts: dict[int, bytes]) -> bytes:
    """``data`` up to its END record with ``inserts`` (old offset -> record bytes) placed before the
    records at those offsets; every file offset in the records is moved accordingly."""
    cuts = sorted(inserts)

    def moved(offset: int) -> int:
        return offset + sum(len(inserts[c]) for c in cuts if c <= offset)

    out = bytearray(data[:FILE_HEADER_BYTES])
    for rec in records:
        if rec.offset in inserts:
            out += inserts[rec.offset]
        new = len(out)
        out += data[rec.offset:rec.end]
        if rec.undo_offset:
            struct.pack_into("<Q", out, new + UNDO_OFFSET_AT, moved(rec.undo_offset))
        if rec.type == NODE_ADDED:
            at = new + rec.fields_bytes - 8
            (seek_table,) = struct.unpack_from("<Q", out, at)
            if seek_table:
                struct.pack_into("<Q", out, at, moved(seek_table))
        elif rec.type == SEEK_TABLE:
            for i in range(rec.payload_bytes // SEEK_ENTRY.size):
                at = new + rec.fields_bytes + i * SEEK_ENTRY.size + SEEK_ENTRY_OFFSET_AT
                (target,) = struct.unpack_from("<Q", out, at)
                if target:
                    struct.pack_into("<Q", out, at, moved(target))
    return bytes(out)


def with_cropping(data: bytes) -> tuple[bytes, int]:
    """The recording ``data`` with an ``xnCropping`` record for each stream lacking one, and how many
    streams got one (0: ``data`` is returned unchanged). OniFormatError when it cannot be done."""
    records = read_records(data)
    if any(r.type in OLD_NODE_ADDED for r in records):
        raise OniFormatError("an OpenNI 1.x recording (old node records): not rewritten")
    cropped = {r.node_id for r in records
               if r.type == GENERAL_PROPERTY and property_name(data, r) == CROPPING_NAME}
    sizes = _frame_sizes_px(data, records)
    inserts: dict[int, bytes] = {}
    for i, rec in enumerate(records):
        if rec.type != NODE_ADDED or rec.node_id in cropped:
            continue
        if rec.node_id not in sizes:
            raise OniFormatError(f"stream {rec.node_id} has no {MAP_OUTPUT_MODE_NAME} (frame size) record")
        inserts[records[i + 1].offset] = cropping_record(rec.node_id, *sizes[rec.node_id])
        cropped.add(rec.node_id)
    if not inserts:
        return data, 0
    return _insert_records(data, records, inserts), len(inserts)


def add_cropping(path: str | Path) -> int:
    """Make an ``.oni`` file play back in OpenNI2 2.2 (see the module docstring): rewrite it in place
    (atomically) with a cropping property for each stream without one. Returns how many streams got
    one (0: the file is left as it was). Bytes after the END record (OpenNI2 leaves some) are dropped."""
    from rig.core.imageio import atomic_write_bytes

    path = Path(path)
    data = path.read_bytes()
    new, count = with_cropping(data)
    if count:
        atomic_write_bytes(path, new)
    return count
