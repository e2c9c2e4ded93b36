"""Read what GDAL itself reports about a raster band, through GDAL's C API (the copy rasterio ships).

rasterio exposes neither category names nor raster attribute tables, and GDAL's Python bindings
are not a dependency; QGIS reads both through these same C functions.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import rasterio


def _libgdal() -> ctypes.CDLL:
    """The libgdal rasterio is linked against (already loaded by ``import rasterio``)."""
    libs = sorted((Path(rasterio.__file__).parent.parent / "rasterio.libs").glob("libgdal*.so*"))
    lib = ctypes.CDLL(str(libs[0]) if libs else "libgdal.so")
    for name, restype, argtypes in [
        ("GDALOpen", ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]),
        ("GDALClose", None, [ctypes.c_void_p]),
        ("GDALGetGeoTransform", ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_double)]),
        ("GDALGetRasterBand", ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_int]),
        ("GDALGetRasterCategoryNames", ctypes.POINTER(ctypes.c_char_p), [ctypes.c_void_p]),
        ("GDALGetRasterColorTable", ctypes.c_void_p, [ctypes.c_void_p]),
        ("GDALGetColorEntryCount", ctypes.c_int, [ctypes.c_void_p]),
        ("GDALGetDefaultRAT", ctypes.c_void_p, [ctypes.c_void_p]),
        ("GDALRATGetRowCount", ctypes.c_int, [ctypes.c_void_p]),
        ("GDALRATGetColumnCount", ctypes.c_int, [ctypes.c_void_p]),
        ("GDALRATGetNameOfCol", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int]),
        ("GDALRATGetUsageOfCol", ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
        ("GDALRATGetValueAsString", ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]),
    ]:
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    lib.GDALAllRegister()
    return lib


@dataclass(frozen=True)
class BandCategories:
    """What GDAL reports for band 1 of a raster.

    Attributes:
        category_names: ``GDALGetRasterCategoryNames``, name of value ``i`` at index ``i``.
        color_entries: entries of the colour table (0 without one).
        rat_columns: (name, usage) of each column of the default raster attribute table.
        rat_rows: each row's values as strings.
    """

    category_names: list[str]
    color_entries: int
    rat_columns: list[tuple[str, int]]
    rat_rows: list[list[str]]


def band_categories(path: Path) -> BandCategories:
    """Category names, colour table size and attribute table of band 1 of ``path``, as GDAL reads them."""
    lib = _libgdal()
    dataset = lib.GDALOpen(str(path).encode(), 0)
    assert dataset, f"GDAL cannot open {path}"
    try:
        # a GIS reads the georeferencing first; GDAL's GeoTIFF driver loads the .aux.xml with it
        lib.GDALGetGeoTransform(dataset, (ctypes.c_double * 6)())
        band = lib.GDALGetRasterBand(dataset, 1)
        names_pointer = lib.GDALGetRasterCategoryNames(band)
        names = []
        while names_pointer and names_pointer[len(names)] is not None:
            names.append(names_pointer[len(names)].decode())
        table = lib.GDALGetRasterColorTable(band)
        rat = lib.GDALGetDefaultRAT(band)
        columns, rows = [], []
        if rat:
            columns = [
                (lib.GDALRATGetNameOfCol(rat, c).decode(), lib.GDALRATGetUsageOfCol(rat, c))
                for c in range(lib.GDALRATGetColumnCount(rat))
            ]
            rows = [
                [lib.GDALRATGetValueAsString(rat, r, c).decode() for c in range(len(columns))]
                for r in range(lib.GDALRATGetRowCount(rat))
            ]
        return BandCategories(names, lib.GDALGetColorEntryCount(table) if table else 0, columns, rows)
    finally:
        lib.GDALClose(dataset)
