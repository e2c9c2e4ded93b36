"""An independent Cloud-Optimized GeoTIFF layout check: parse the TIFF structure byte by byte.

A COG (GDAL's COG driver, https://gdal.org/drivers/raster/cog.html) is a tiled TIFF whose
header is followed by GDAL's "ghost" structural metadata, then every IFD (full resolution first,
then the overviews, largest first), then the tile data of the smallest overview first and of the
full resolution last; each tile is preceded by its byte count (4 bytes) and followed by a copy of
its last 4 bytes. Readers fetch the header and IFDs in one request and an overview in a few.
"""

from __future__ import annotations

import struct
from pathlib import Path

#: Bytes per value of the TIFF field types that appear in GeoTIFFs.
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8, 18: 8}
_INTEGER_FORMATS = {1: "B", 3: "H", 4: "I", 16: "Q"}
_GHOST_KEYS = {
    "LAYOUT": "IFDS_BEFORE_DATA",
    "BLOCK_ORDER": "ROW_MAJOR",
    "BLOCK_LEADER": "SIZE_AS_UINT4",
    "BLOCK_TRAILER": "LAST_4_BYTES_REPEATED",
    "KNOWN_INCOMPATIBLE_EDITION": "NO",
}
_WIDTH, _HEIGHT, _SUBFILE, _TILE_WIDTH, _TILE_OFFSETS, _TILE_COUNTS = 256, 257, 254, 322, 324, 325


def _read_ifds(data: bytes) -> tuple[str, bool, int, list[dict]]:
    """Byte order, BigTIFF flag, offset of the first IFD and every IFD (end of it and its arrays, tags) of the file."""
    order = {b"II": "<", b"MM": ">"}[data[:2]]
    (magic,) = struct.unpack(order + "H", data[2:4])
    big = magic == 43
    first = struct.unpack(order + ("Q" if big else "I"), data[8:16] if big else data[4:8])[0]
    count_format, entry_size, inline = ("Q", 20, 8) if big else ("H", 12, 4)
    ifds, offset = [], first
    while offset:
        (entries,) = struct.unpack_from(order + count_format, data, offset)
        start = offset + (8 if big else 2)
        tags: dict[int, list[int]] = {}
        arrays_end = 0
        for index in range(entries):
            tag, kind = struct.unpack_from(order + "HH", data, start + index * entry_size)
            (count,) = struct.unpack_from(order + ("Q" if big else "I"), data, start + index * entry_size + 4)
            value_at = start + index * entry_size + (12 if big else 8)
            size = _TYPE_SIZES.get(kind, 1) * count
            if size > inline:
                (value_at,) = struct.unpack_from(order + ("Q" if big else "I"), data, value_at)
                arrays_end = max(arrays_end, value_at + size)
            if kind in _INTEGER_FORMATS:
                tags[tag] = list(struct.unpack_from(order + _INTEGER_FORMATS[kind] * count, data, value_at))
        end = start + entries * entry_size
        (offset,) = struct.unpack_from(order + ("Q" if big else "I"), data, end)
        ifds.append({"end": max(end, arrays_end), "tags": tags})
    return order, big, first, ifds


def cog_layout_problems(path: Path) -> list[str]:
    """What makes ``path`` not a Cloud-Optimized GeoTIFF (empty when it is one)."""
    data = Path(path).read_bytes()
    order, big, first_ifd, ifds = _read_ifds(data)
    problems = []
    ghost_at = 16 if big else 8
    prefix = b"GDAL_STRUCTURAL_METADATA_SIZE="
    if not data[ghost_at:].startswith(prefix):
        return ["no GDAL structural metadata (ghost header) after the TIFF header"]
    size_at = ghost_at + len(prefix)
    size = int(data[size_at : size_at + 6])
    body_at = data.index(b"\n", size_at) + 1
    ghost = dict(
        line.split("=", 1) for line in data[body_at : body_at + size].decode("ascii").splitlines() if "=" in line
    )
    problems += [
        f"ghost header {key}={ghost.get(key)}, expected {value}"
        for key, value in _GHOST_KEYS.items()
        if ghost.get(key) != value
    ]
    tile_starts = [o for ifd in ifds for o in ifd["tags"].get(_TILE_OFFSETS, []) if o]
    first_data = min(tile_starts)
    if any(ifd["end"] > first_data for ifd in ifds) or first_ifd > first_data:
        problems.append("an IFD or its tag arrays lie after the first tile's data")
    if any(_TILE_WIDTH not in ifd["tags"] for ifd in ifds):
        problems.append("an image is not tiled")
    widths = [ifd["tags"][_WIDTH][0] for ifd in ifds]
    if widths != sorted(widths, reverse=True) or len(set(widths)) != len(widths):
        problems.append(f"IFDs are not full resolution first then smaller overviews: widths {widths}")
    if any(ifd["tags"].get(_SUBFILE, [0])[0] & 1 != 1 for ifd in ifds[1:]):
        problems.append("an overview IFD is not marked as a reduced-resolution image")
    spans = [(min(o), max(o)) for o in (ifd["tags"][_TILE_OFFSETS] for ifd in ifds)]
    if any(spans[k + 1][1] > spans[k][0] for k in range(len(spans) - 1)):
        problems.append("tile data is not ordered smallest overview first, full resolution last")
    for ifd in ifds:
        for offset, size in zip(ifd["tags"][_TILE_OFFSETS], ifd["tags"][_TILE_COUNTS]):
            (leader,) = struct.unpack_from(order + "I", data, offset - 4)
            if leader != size or data[offset + size : offset + size + 4] != data[offset + size - 4 : offset + size]:
                problems.append(f"tile at byte {offset} lacks the size leader or the repeated last 4 bytes")
                break
    return problems
