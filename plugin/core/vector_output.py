"""GeoPackage outputs add or replace their own layer; the other layers of the file are kept.

Every family writes its vector output through :func:`write_vector_layer` (boxes, grid cells,
classified features, class polygons). The layer is first written with pyogrio into a new
GeoPackage beside the target (``.<stem>.<pid>.tmp.gpkg``); then:

- no target yet (or an empty file): the new file is moved onto the target (``os.replace``);
- an existing GeoPackage: the layer is copied into it in **one SQLite transaction** that drops
  the previous layer of that name (its table, spatial index and rows in the ``gpkg_*`` tables)
  and creates the new one (table, rows, spatial index, triggers, ``gpkg_*`` rows, its CRS
  added to ``gpkg_spatial_ref_sys`` unless an equal one is there). A failure anywhere (full
  disk, the file locked) leaves the target exactly as it was: before the transaction it is not
  opened for writing, and SQLite rolls an unfinished transaction back;
- an existing file that is not a GeoPackage, or a layer name held by a table that is not a
  layer of features (``gpkg_*`` tables, attribute tables, a labeling project's ``dlt_*``
  tables): refused with a :class:`UserError`, the file untouched.

:func:`layer_problem` (standard library only) is part of every job's output checks
(:func:`.outputs.format_problems`). Geometries in a GeoPackage carry their CRS id in the blob
header (GeoPackage 1.3, §2.1.3); when the target numbers the CRS differently the headers are
rewritten.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections.abc import Sequence
from pathlib import Path

from .atomic import atomic_write, remove_stale_temporaries, temp_path
from .errors import UserError

#: ``gpkg_*`` tables whose rows belong to one layer (column ``table_name``).
LAYER_ROWS = ("gpkg_contents", "gpkg_geometry_columns", "gpkg_extensions",
              "gpkg_ogr_contents", "gpkg_data_columns", "gpkg_metadata_reference")
RESERVED = ("gpkg_", "rtree_", "sqlite_", "dlt_")


def split_layer(text: str, default: str) -> tuple[str, str]:
    """``"out.gpkg|layername=x"`` → ``("out.gpkg", "x")``; without the suffix
    ``(text, default)``."""
    base, _, rest = text.partition("|")
    for part in rest.split("|"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "layername" and value.strip():
            return base, value.strip()
    return base, default


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def layer_problem(path: str | Path, layer: str, label: str = "The output") -> str | None:
    """Why the layer ``layer`` cannot be written into ``path``, as a sentence with the fix, or
    None (no file, an empty file, or a GeoPackage where ``layer`` is new or a layer of
    features). Standard library only, reads the file read-only."""
    if not layer or layer.lower().startswith(RESERVED):
        return (f"The layer name {layer!r} of {label} is empty or reserved (gpkg_, rtree_, "
                "sqlite_, dlt_): choose another layer name.")
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as db:
            tables = {str(r[0]).lower() for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "gpkg_contents" not in tables:
                raise sqlite3.DatabaseError("no gpkg_contents")
            kind = db.execute("SELECT data_type FROM gpkg_contents WHERE lower(table_name) = ?",
                              (layer.lower(),)).fetchone()
    except sqlite3.Error:
        return (f"{label} {p} exists and is not a GeoPackage: writing the layer there would "
                "replace it. Choose another file name, or delete the file first.")
    if layer.lower() in tables and (kind is None or kind[0] != "features"):
        return (f"{label} {p} holds a table {layer!r} that is not a layer of features: choose "
                "another layer name.")
    return None


def has_layer(path: str | Path, layer: str) -> bool:
    """Whether the GeoPackage ``path`` lists a layer ``layer`` (any case) in its
    ``gpkg_contents``; False for a missing file or one that is no GeoPackage. Standard library
    only, read-only (asking GDAL for a missing layer logs a warning)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{p}?mode=ro", uri=True)) as db:
            return db.execute("SELECT 1 FROM gpkg_contents WHERE lower(table_name) = ?",
                              (layer.lower(),)).fetchone() is not None
    except sqlite3.Error:
        return False


def write_vector_layer(path: str | Path, layer: str, geometries: Sequence, fields: dict,
                       crs_wkt: str | None, geometry_type: str) -> Path:
    """Write the layer ``layer`` of ``path`` (a GeoPackage): ``geometries`` (N WKB bytes, or
    None), ``fields`` (name → array of N values: integers, floats, or objects for text) in the
    CRS ``crs_wkt`` (None: no CRS), ``geometry_type`` ("Polygon", "Point", "Unknown" …). The
    other layers of an existing GeoPackage are kept; a previous layer of that name is replaced
    atomically (see the module docstring). Raises :class:`UserError` naming the file for a file
    that is not a GeoPackage, a reserved or taken layer name, or a failed write (full disk …),
    the file untouched. Returns ``path``."""
    import numpy as np
    from pyogrio.raw import write

    target = Path(path)
    problem = layer_problem(target, layer, "The output")
    if problem:
        raise UserError(problem)

    def write_new(tmp: Path) -> None:
        write(str(tmp), np.asarray(list(geometries), dtype=object),
              [np.asarray(v) for v in fields.values()], list(fields), layer=layer,
              driver="GPKG", geometry_type=geometry_type, crs=crs_wkt or None)

    fresh = True      # while the new file is written: its own data cannot be at fault
    try:
        if not target.is_file() or target.stat().st_size == 0:
            with atomic_write(target) as tmp:
                write_new(tmp)
            return target
        remove_stale_temporaries(target)
        tmp = temp_path(target)
        try:
            tmp.unlink(missing_ok=True)
            write_new(tmp)
            fresh = False
            _copy_layer(tmp, target, layer)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyogrio, sqlite3 and OS errors, named for users
        err = write_error(exc, target, fresh)
        if err is None:
            raise
        raise err from exc
    return target


def write_error(exc: BaseException, target: Path, fresh: bool = False) -> UserError | None:
    """A :class:`UserError` naming ``target`` for a failed GeoPackage write (full disk, file
    kept busy by another program, damaged file), or None for an error of another kind.
    ``fresh``: the error came while a new GeoPackage was written beside the target, where a
    GDAL or SQLite error means the disk refused the data (a full disk shows there as ``no such
    table: gpkg_contents``)."""
    low = " ".join(str(e) for e in (exc, exc.__cause__, exc.__context__) if e).lower()
    module = type(exc).__module__ or ""
    refused = fresh and (isinstance(exc, (OSError, sqlite3.Error)) or (
        module.startswith("pyogrio") and ("sqlite" in low or type(exc).__name__ in (
            "DataSourceError", "DataLayerError", "TransactionError"))))
    if refused or any(k in low for k in ("disk is full", "no space", "too large", "i/o error",
                                         "quota")):
        why, fix = ("the disk is full (or refused the data)",
                    "Free disk space or choose a folder on another disk.")
    elif "locked" in low or "busy" in low:
        why, fix = ("another program kept it busy (reading or writing it) for 20 s",
                    "Close the layers of that file in QGIS (or the other program) and run again.")
    elif isinstance(exc, sqlite3.Error) or "sqlite" in low or "gpkg" in low:
        why, fix = (str(exc), "Check the file (open it in QGIS) or choose another file name.")
    else:
        return None
    return UserError(f"Writing the layer into {target} failed: {why}. The file was left as it "
                     "was.", fix)


# -- copying one layer between GeoPackages ----------------------------------------------------
def _set_srs(blob, srs_id: int):
    """A GeoPackage geometry blob with the CRS id ``srs_id`` in its header."""
    if not isinstance(blob, bytes) or len(blob) < 8 or blob[:2] != b"GP":
        return blob
    return blob[:4] + struct.pack("<i" if blob[3] & 1 else ">i", int(srs_id)) + blob[8:]


def _copy_layer(src: Path, dst: Path, layer: str) -> None:
    """Copy the layer ``layer`` of the GeoPackage ``src`` into ``dst``, replacing a layer of
    that name, in one transaction (rolled back on any failure)."""
    db = sqlite3.connect(str(dst), isolation_level=None, timeout=20)
    try:
        db.create_function("dlt_set_srs", 2, _set_srs, deterministic=True)
        db.execute("ATTACH DATABASE ? AS new", (str(src),))
        db.execute("BEGIN IMMEDIATE")
        try:
            _replace_layer(db, layer)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()


def _tables(db: sqlite3.Connection, schema: str) -> dict[str, str]:
    return {str(n).lower(): str(n) for (n,) in db.execute(
        f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'")}


def _columns(db: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [str(r[1]) for r in db.execute(f"PRAGMA {schema}.table_info({_q(table)})")]


def _replace_layer(db: sqlite3.Connection, layer: str) -> None:
    low = layer.lower()
    main, new = _tables(db, "main"), _tables(db, "new")
    # 1. the previous layer of that name: its table (with its triggers and indexes), spatial
    #    indexes and gpkg_* rows
    if "gpkg_geometry_columns" in main:
        for (col,) in db.execute("SELECT column_name FROM main.gpkg_geometry_columns WHERE "
                                 "lower(table_name) = ?", (low,)).fetchall():
            db.execute(f"DROP TABLE IF EXISTS main.{_q(f'rtree_{layer}_{col}')}")
    if low in main:
        db.execute(f"DROP TABLE main.{_q(main[low])}")
    for table in LAYER_ROWS:
        if table in main:
            db.execute(f"DELETE FROM main.{table} WHERE lower(table_name) = ?", (low,))
    # 2. gpkg_* tables the target lacks (gpkg_ogr_contents, gpkg_extensions …)
    for name in new:
        if name.startswith("gpkg_") and name not in main:
            (sql,) = db.execute("SELECT sql FROM new.sqlite_master WHERE type = 'table' AND "
                                "lower(name) = ?", (name,)).fetchone()
            db.execute(sql)
    # 3. the CRS, numbered as the target numbers it
    geom_col, srs_new = db.execute("SELECT column_name, srs_id FROM new.gpkg_geometry_columns "
                                   "WHERE lower(table_name) = ?", (low,)).fetchone()
    srs = _target_srs(db, int(srs_new))
    # 4. the table and its rows, then its spatial index, then triggers and indexes (after the
    #    rows: GDAL's triggers call its own SQL functions, unknown here)
    (sql,) = db.execute("SELECT sql FROM new.sqlite_master WHERE type = 'table' AND name = ?",
                        (layer,)).fetchone()
    db.execute(sql)
    cols = _columns(db, "new", layer)
    picks = ", ".join(f"dlt_set_srs({_q(c)}, {srs})" if c == geom_col and srs != srs_new
                      else _q(c) for c in cols)
    db.execute(f"INSERT INTO main.{_q(layer)} ({', '.join(map(_q, cols))}) "
               f"SELECT {picks} FROM new.{_q(layer)}")
    rtree = f"rtree_{layer}_{geom_col}".lower()
    if rtree in new:
        (sql,) = db.execute("SELECT sql FROM new.sqlite_master WHERE lower(name) = ?",
                            (rtree,)).fetchone()
        db.execute(sql)
        db.execute(f"INSERT INTO main.{_q(new[rtree])} SELECT * FROM new.{_q(new[rtree])}")
    for table in LAYER_ROWS:
        if table in new:
            common = [c for c in _columns(db, "new", table) if c in _columns(db, "main", table)]
            picks = ", ".join(str(srs) if c == "srs_id" else _q(c) for c in common)
            db.execute(f"INSERT INTO main.{table} ({', '.join(map(_q, common))}) "
                       f"SELECT {picks} FROM new.{table} WHERE lower(table_name) = ?", (low,))
    for (sql,) in db.execute("SELECT sql FROM new.sqlite_master WHERE type IN ('index', "
                             "'trigger') AND lower(tbl_name) = ? AND sql IS NOT NULL",
                             (low,)).fetchall():
        db.execute(sql)


def _target_srs(db: sqlite3.Connection, srs_new: int) -> int:
    """The id under which the target knows the CRS ``srs_new`` of the new file (the same
    organisation and code, or the same definition), added when it lacks it."""
    cols = [c for c in _columns(db, "new", "gpkg_spatial_ref_sys")
            if c in _columns(db, "main", "gpkg_spatial_ref_sys")]
    row = dict(zip(cols, db.execute(
        f"SELECT {', '.join(map(_q, cols))} FROM new.gpkg_spatial_ref_sys WHERE srs_id = ?",
        (srs_new,)).fetchone()))
    org, code = str(row.get("organization") or ""), row.get("organization_coordsys_id")
    hit = None
    if org and org.upper() != "NONE" and code is not None and int(code) > 0:
        hit = db.execute("SELECT srs_id FROM main.gpkg_spatial_ref_sys WHERE "
                         "upper(organization) = ? AND organization_coordsys_id = ?",
                         (org.upper(), code)).fetchone()
    if hit is None:
        hit = db.execute("SELECT srs_id FROM main.gpkg_spatial_ref_sys WHERE definition = ? "
                         "AND (? > 0 OR srs_id = ?)", (row.get("definition"), srs_new,
                                                       srs_new)).fetchone()
    if hit is not None:
        return int(hit[0])
    taken = db.execute("SELECT 1 FROM main.gpkg_spatial_ref_sys WHERE srs_id = ?",
                       (srs_new,)).fetchone()
    srs = srs_new if not taken else max(100000, int(db.execute(
        "SELECT max(srs_id) FROM main.gpkg_spatial_ref_sys").fetchone()[0]) + 1)
    row["srs_id"] = srs
    db.execute(f"INSERT INTO main.gpkg_spatial_ref_sys ({', '.join(map(_q, row))}) "
               f"VALUES ({', '.join('?' * len(row))})", list(row.values()))
    return srs
