"""The labeling project: one GeoPackage holding classes, training rasters and label features.

Schema (see docs/labeling_project.md): tables ``dlt_meta``, ``dlt_classes``, ``dlt_rasters``
(GeoPackage attribute tables) and feature tables ``label_polygons``, ``label_points``,
``label_lines`` (multi-geometries, field ``class_id`` and optional ``raster_id``), all in the one
CRS chosen at creation. Class ids are always 1..N: they are the values of the label rasters.
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import gdalbind
from . import geom as gm
from .grid import RasterGrid, read_grid

FORMAT = "dltrainer-labeling"
FORMAT_VERSION = 1
LAYERS = {"polygons": "label_polygons", "points": "label_points", "lines": "label_lines"}
_LAYER_TYPES = {"polygons": "MultiPolygon", "points": "MultiPoint", "lines": "MultiLineString"}
_FIELDS = ["class_id", "raster_id"]
ROLES = ("auto", "train", "validation")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

_SCHEMA = """
CREATE TABLE dlt_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT);
CREATE TABLE dlt_classes (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id >= 1 AND id <= 254),
    name TEXT NOT NULL UNIQUE,
    color TEXT NOT NULL DEFAULT '#808080',
    solid_distance REAL NOT NULL DEFAULT 0 CHECK (solid_distance >= 0),
    blur_distance REAL NOT NULL DEFAULT 0 CHECK (blur_distance >= 0),
    sort_order INTEGER NOT NULL DEFAULT 0);
CREATE TABLE dlt_rasters (
    id INTEGER PRIMARY KEY NOT NULL,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'auto' CHECK (role IN ('auto', 'train', 'validation')));
"""


@dataclass(frozen=True)
class LabelClass:
    """A class: ``id`` (1..N, its value in label rasters), name, colour '#rrggbb', and the default
    solid / blur distances in pixels for point and line labels."""

    id: int
    name: str
    color: str
    solid_distance: float = 0.0
    blur_distance: float = 0.0
    sort_order: int = 0


@dataclass(frozen=True)
class TrainingRaster:
    """A raster to label and train on; ``role`` is 'auto', 'train' or 'validation'."""

    id: int
    path: str
    name: str
    role: str = "auto"


@dataclass(frozen=True)
class LabelFeature:
    """One label: its feature id within ``layer`` ('polygons', 'points' or 'lines'), class and
    geometry (a GeoJSON dict, in the project CRS or the CRS asked for)."""

    fid: int
    layer: str
    class_id: int
    geometry: dict
    raster_id: int | None = None

    @property
    def ref(self) -> str:
        """A name for messages, e.g. 'polygons #12'."""
        return f"{self.layer} #{self.fid}"


class LabelingProject:
    """A labeling project file. Create with :meth:`create`, open with :meth:`open`.

    Metadata tables are edited with sqlite3 in short transactions; features are read and written
    with pyogrio (GDAL's GeoPackage driver), so QGIS can keep the same file open as layers at the
    same time. Inside QGIS's process only the metadata side and :meth:`create` are used (on
    QGIS's GDAL bindings, see :mod:`.gdalbind`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._crs: str | None = None

    # -- files ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, crs: str) -> LabelingProject:
        """A new, empty project at ``path`` (a .gpkg that must not exist yet) in CRS ``crs``."""
        p = Path(path)
        if p.suffix.lower() != ".gpkg":
            raise UserError(f"A labeling project is a GeoPackage file; {p.name} does not end "
                            "in .gpkg.", "Choose a file name ending in .gpkg.")
        if p.exists():
            raise UserError(f"{p} already exists.",
                            "Open it as a labeling project, or choose another file name.")
        if not p.parent.is_dir():
            raise UserError(f"The folder {p.parent} does not exist.", "Create it first.")
        if gdalbind.in_qgis():
            crs_value = gdalbind.crs_text(crs)
            if crs_value is None:
                raise gm.bad_crs(crs)
            created = gdalbind.create_layers(str(p), crs_value, LAYERS)
        else:
            crs_value = gm.crs_text(gm.make_srs(crs))
            created = _create_layers(p, crs_value)
        if not created:
            raise UserError(f"Cannot create {p}.", "Check that the folder is writable.")
        with sqlite3.connect(p) as con:
            con.executescript(_SCHEMA)
            for table, what in (("dlt_meta", "Deep Learning Trainer labeling project metadata"),
                                ("dlt_classes", "Label classes (id = value in label rasters)"),
                                ("dlt_rasters", "Training rasters")):
                con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, "
                            "description) VALUES (?, 'attributes', ?, ?)", (table, table, what))
            con.executemany("INSERT INTO dlt_meta VALUES (?, ?)",
                            [("format", FORMAT), ("format_version", str(FORMAT_VERSION)),
                             ("crs", crs_value)])
        con.close()
        return cls.open(p)

    @classmethod
    def open(cls, path: str | Path) -> LabelingProject:
        """Open an existing project; a clear error if it is missing or not a labeling project."""
        p = Path(path)
        if not p.is_file():
            raise UserError(f"The labeling project {p} does not exist.",
                            "Check the path, or create a new labeling project.")
        try:
            con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True)
            try:
                row = con.execute("SELECT value FROM dlt_meta WHERE key = 'format'").fetchone()
                version = con.execute(
                    "SELECT value FROM dlt_meta WHERE key = 'format_version'").fetchone()
            finally:
                con.close()
        except sqlite3.DatabaseError:
            row = version = None
        if not row or row[0] != FORMAT:
            raise UserError(f"{p.name} is not a Deep Learning Trainer labeling project.",
                            "Open a .gpkg created by the Labeling Tool, or import these labels "
                            "into a new project with 'Import labels'.")
        if version and int(version[0]) > FORMAT_VERSION:
            raise UserError(f"{p.name} was written by a newer version of Deep Learning Trainer "
                            f"(format {version[0]}).", "Update the plugin.")
        return cls(p)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10)
        con.row_factory = sqlite3.Row
        try:
            with con:
                yield con
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise UserError(f"The labeling project {self.path.name} is locked by another "
                                "writer.", "Save or roll back pending label edits (or close the "
                                "program writing it) and try again.") from None
            raise
        finally:
            con.close()

    @property
    def crs(self) -> str:
        """The CRS of the label layers ('EPSG:code' or WKT)."""
        if self._crs is None:
            with self._db() as con:
                row = con.execute("SELECT value FROM dlt_meta WHERE key = 'crs'").fetchone()
            self._crs = row[0]
        return self._crs

    @property
    def name(self) -> str:
        return self.path.stem

    # -- classes -------------------------------------------------------------------------------
    def classes(self) -> list[LabelClass]:
        """Classes in display order (sort_order, then id)."""
        with self._db() as con:
            rows = con.execute("SELECT id, name, color, solid_distance, blur_distance, sort_order "
                               "FROM dlt_classes ORDER BY sort_order, id").fetchall()
        return [LabelClass(r[0], r[1], r[2], float(r[3]), float(r[4]), int(r[5])) for r in rows]

    def class_by_id(self, class_id: int) -> LabelClass:
        for c in self.classes():
            if c.id == class_id:
                return c
        raise UserError(f"There is no class with id {class_id}.", "Pick a class of the project.")

    def class_by_name(self, name: str) -> LabelClass | None:
        for c in self.classes():
            if c.name == name:
                return c
        return None

    def add_class(self, name: str, color: str | None = None, solid_distance: float = 0,
                  blur_distance: float = 0) -> LabelClass:
        """Add a class with the next id (N + 1); ``color`` defaults to the next palette colour."""
        from .palette import next_color

        name = _check_name(name)
        existing = self.classes()
        if any(c.name == name for c in existing):
            raise UserError(f"A class named {name!r} already exists.", "Choose another name.")
        if len(existing) >= 254:
            raise UserError("A project holds at most 254 classes (255 means 'ignore').")
        color = _check_color(color or next_color([c.color for c in existing]))
        _check_distances(solid_distance, blur_distance)
        new_id = len(existing) + 1
        order = max((c.sort_order for c in existing), default=0) + 1
        with self._db() as con:
            con.execute("INSERT INTO dlt_classes VALUES (?, ?, ?, ?, ?, ?)",
                        (new_id, name, color, float(solid_distance), float(blur_distance), order))
        return LabelClass(new_id, name, color, float(solid_distance), float(blur_distance), order)

    def update_class(self, class_id: int, name: str | None = None, color: str | None = None,
                     solid_distance: float | None = None, blur_distance: float | None = None,
                     sort_order: int | None = None) -> LabelClass:
        """Change a class's name, colour, distances or display order (labels keep their class)."""
        old = self.class_by_id(class_id)
        new = LabelClass(
            class_id,
            _check_name(name) if name is not None else old.name,
            _check_color(color) if color is not None else old.color,
            float(solid_distance) if solid_distance is not None else old.solid_distance,
            float(blur_distance) if blur_distance is not None else old.blur_distance,
            int(sort_order) if sort_order is not None else old.sort_order)
        _check_distances(new.solid_distance, new.blur_distance)
        if new.name != old.name and self.class_by_name(new.name) is not None:
            raise UserError(f"A class named {new.name!r} already exists.", "Choose another name.")
        with self._db() as con:
            con.execute("UPDATE dlt_classes SET name=?, color=?, solid_distance=?, "
                        "blur_distance=?, sort_order=? WHERE id=?",
                        (new.name, new.color, new.solid_distance, new.blur_distance,
                         new.sort_order, class_id))
        return new

    def move_class(self, class_id: int, step: int) -> None:
        """Move a class up (step < 0) or down in the display order (ids do not change)."""
        order = [c.id for c in self.classes()]
        i = order.index(class_id)
        j = max(0, min(len(order) - 1, i + step))
        order.insert(j, order.pop(i))
        with self._db() as con:
            con.executemany("UPDATE dlt_classes SET sort_order=? WHERE id=?",
                            [(k + 1, cid) for k, cid in enumerate(order)])

    def delete_class(self, class_id: int, force: bool = False) -> int:
        """Delete a class. Refused while labels use it unless ``force`` (then they are deleted).

        Ids stay 1..N: the classes above move down by one and their labels follow. Returns the
        number of labels deleted.
        """
        self.class_by_id(class_id)
        used = self.label_counts().get(class_id, 0)
        if used and not force:
            name = self.class_by_id(class_id).name
            raise UserError(f"Class {name!r} is used by {used} label(s).",
                            "Reassign or delete those labels first, or confirm deleting them.")
        higher = [c.id for c in sorted(self.classes(), key=lambda c: c.id) if c.id > class_id]
        statements = [f"DELETE FROM {t} WHERE class_id = {int(class_id)}" for t in LAYERS.values()]
        statements += [f"UPDATE {t} SET class_id = class_id - 1 WHERE class_id > {int(class_id)}"
                       for t in LAYERS.values()]
        statements.append(f"DELETE FROM dlt_classes WHERE id = {int(class_id)}")
        # one by one, upwards, so that the primary key stays unique throughout
        statements += [f"UPDATE dlt_classes SET id = {cid - 1} WHERE id = {cid}" for cid in higher]
        # The GeoPackage's R-tree triggers call its SQL functions: see _gpkg_functions.
        try:
            with self._db() as con:
                _gpkg_functions(con)
                for sql in statements:
                    con.execute(sql)
        except sqlite3.DatabaseError as exc:
            raise UserError(f"Cannot delete the class: {exc}",
                            "Save or discard pending label edits, then try again.") from None
        return used

    # -- rasters -------------------------------------------------------------------------------
    def rasters(self) -> list[TrainingRaster]:
        with self._db() as con:
            rows = con.execute(
                "SELECT id, path, name, role FROM dlt_rasters ORDER BY id").fetchall()
        return [TrainingRaster(r[0], r[1], r[2], r[3]) for r in rows]

    def add_raster(self, path: str | Path, role: str = "auto",
                   name: str | None = None) -> TrainingRaster:
        """Add a training raster (checked: readable, north-up, georeferenced). Adding a raster
        already in the project returns it unchanged."""
        if role not in ROLES:
            raise UserError(f"Raster role {role!r} is unknown.", f"Use one of {', '.join(ROLES)}.")
        p = str(Path(path).resolve())
        for r in self.rasters():
            if r.path == p:
                return r
        read_grid(p)
        with self._db() as con:
            cur = con.execute("INSERT INTO dlt_rasters (path, name, role) VALUES (?, ?, ?)",
                              (p, name or Path(p).stem, role))
            new_id = cur.lastrowid
        return TrainingRaster(int(new_id), p, name or Path(p).stem, role)

    def set_raster_role(self, raster_id: int, role: str) -> None:
        if role not in ROLES:
            raise UserError(f"Raster role {role!r} is unknown.", f"Use one of {', '.join(ROLES)}.")
        with self._db() as con:
            con.execute("UPDATE dlt_rasters SET role=? WHERE id=?", (role, raster_id))

    def remove_raster(self, raster_id: int) -> None:
        """Remove a raster from the project. Its labels stay (nothing drawn is deleted)."""
        with self._db() as con:
            con.execute("DELETE FROM dlt_rasters WHERE id = ?", (raster_id,))

    def raster_by_id(self, raster_id: int) -> TrainingRaster:
        for r in self.rasters():
            if r.id == raster_id:
                return r
        raise UserError(f"There is no raster with id {raster_id} in the project.")

    # -- features ------------------------------------------------------------------------------
    def add_feature(self, class_id: int, geometry: Any, crs: str | None = None,
                    raster_id: int | None = None) -> list[LabelFeature]:
        """Add a label (GeoJSON dict or WKT, in ``crs`` or the project CRS). Geometry collections
        are split by type; returns the stored features."""
        return self.add_features([(class_id, geometry)], crs=crs, raster_id=raster_id)

    def add_features(self, items: list[tuple[int, Any]], crs: str | None = None,
                     raster_id: int | None = None) -> list[LabelFeature]:
        """Add many labels in one transaction: ``items`` are (class_id, geometry)."""
        valid = {c.id for c in self.classes()}
        proj_srs = gm.make_srs(self.crs)
        ct = gm.transformer(gm.make_srs(crs), proj_srs) if crs else None
        parts: dict[str, list[tuple[int, Any]]] = {k: [] for k in LAYERS}
        for class_id, geometry in items:  # everything checked before anything is written
            if class_id not in valid:
                raise UserError(f"There is no class with id {class_id}.", "Add the class first.")
            g = gm.reproject(gm.to_shape(geometry), ct)
            if g is None:
                raise UserError("A label could not be reprojected into the project CRS.",
                                "Check the CRS given for the labels.")
            for fam, part in gm.split_by_family(g):
                parts[fam].append((int(class_id), part))
        out: list[LabelFeature] = []
        for fam, rows in parts.items():
            if rows:
                fids = self._append(fam, rows, raster_id)
                out += [LabelFeature(fid, fam, cid, gm.to_geojson(part), raster_id)
                        for fid, (cid, part) in zip(fids, rows)]
        return out

    def _append(self, fam: str, rows: list[tuple[int, Any]], raster_id: int | None) -> list[int]:
        """Write (class id, multi-geometry) rows to a label layer in one transaction; their fids
        (the table's AUTOINCREMENT fids are handed out in order)."""
        import numpy as np
        import shapely
        from pyogrio.errors import DataLayerError, DataSourceError
        from pyogrio.raw import write

        table = LAYERS[fam]
        with self._db() as con:
            before = con.execute(f"SELECT COALESCE(MAX(fid), 0) FROM {table}").fetchone()[0]
        n = len(rows)
        rid = np.full(n, raster_id or 0, np.int32)
        try:
            write(str(self.path), shapely.to_wkb(np.array([g for _, g in rows], dtype=object)),
                  [np.array([c for c, _ in rows], np.int32), rid], _FIELDS,
                  field_mask=[np.zeros(n, bool), np.full(n, raster_id is None)],
                  layer=table, driver="GPKG", geometry_type=_LAYER_TYPES[fam],
                  crs=self.crs, append=True)
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise UserError(f"Cannot write to {self.path}: {exc}",
                            "Check that the file is writable and not locked.") from None
        with self._db() as con:
            return [r[0] for r in con.execute(f"SELECT fid FROM {table} WHERE fid > ? "
                                              "ORDER BY fid LIMIT ?", (before, n))]

    def features(self, layer: str | None = None, crs: str | None = None) -> list[LabelFeature]:
        """All labels (of one layer if given), geometries in ``crs`` or the project CRS."""
        return [f for f, _ in self._iter_features(layer, crs)]

    def _iter_features(self, layer: str | None = None, crs: str | None = None,
                       bbox: tuple[float, float, float, float] | None = None
                       ) -> Iterator[tuple[LabelFeature, Any]]:
        """(label, its geometry in ``crs``) for every non-empty label, optionally only those
        whose bounding box meets ``bbox`` (minx, miny, maxx, maxy in the project CRS)."""
        ct = gm.transformer(gm.make_srs(self.crs), gm.make_srs(crs)) if crs else None
        import numpy as np
        import shapely
        from pyogrio.errors import DataSourceError
        from pyogrio.raw import read

        keys = [layer] if layer else list(LAYERS)
        for key in keys:
            try:
                _, fids, wkb, (cids, rids) = read(str(self.path), layer=LAYERS[key],
                                                  columns=_FIELDS, bbox=bbox, return_fids=True)
            except DataSourceError:
                raise UserError(f"Cannot open {self.path}.", "Check that the file exists and is "
                                "not locked by another program.") from None
            geoms = shapely.from_wkb(wkb) if len(wkb) else []
            for fid, g, cid, rid in zip(fids, geoms, cids, rids):
                if g is None or g.is_empty:
                    continue
                moved = gm.reproject(g, ct)
                yield (LabelFeature(int(fid), key, 0 if np.isnan(cid) else int(cid),
                                    gm.to_geojson(moved) if moved is not None else {},
                                    None if np.isnan(rid) else int(rid)), moved)

    def features_for(self, raster: TrainingRaster | str | Path) -> list[LabelFeature]:
        """Labels that intersect ``raster``, reprojected into the raster's CRS."""
        return self.features_on(raster)[0]

    def features_on(self, raster: TrainingRaster | str | Path,
                    grid: RasterGrid | None = None) -> tuple[list[LabelFeature], int]:
        """(labels intersecting ``raster`` in its CRS, number of applicable labels outside it).

        A label with a ``raster_id`` applies only to that raster (while it is in the project);
        labels without one apply to every raster they overlap. The spatial index preselects the
        labels near the raster, so large projects stay fast.
        """
        path = raster.path if isinstance(raster, TrainingRaster) else str(raster)
        grid = grid or read_grid(path)
        rid = raster.id if isinstance(raster, TrainingRaster) else None
        present = {r.id for r in self.rasters()}
        footprint = grid.footprint()
        inside: list[LabelFeature] = []
        for feat, g in self._iter_features(crs=grid.crs_wkt, bbox=self._bbox_of(grid)):
            if feat.raster_id is not None and feat.raster_id in present and feat.raster_id != rid:
                continue
            if g is not None and g.intersects(footprint):
                inside.append(feat)
        others = sorted(present - {rid})
        applicable = 0
        with self._db() as con:
            for table in LAYERS.values():
                sql = f"SELECT COUNT(*) FROM {table} WHERE geom IS NOT NULL"
                if others:
                    sql += (" AND (raster_id IS NULL OR raster_id NOT IN "
                            f"({', '.join(str(int(i)) for i in others)}))")
                applicable += con.execute(sql).fetchone()[0]
        return inside, max(0, applicable - len(inside))

    def _bbox_of(self, grid: RasterGrid) -> tuple[float, float, float, float] | None:
        """The raster's footprint as a box in the project CRS (None when it cannot be mapped)."""
        import shapely

        x0, y0, x1, y1 = grid.bounds
        footprint = shapely.segmentize(grid.footprint(), max(x1 - x0, y1 - y0) / 32)
        moved = gm.reproject(footprint, gm.transformer(grid.srs, gm.make_srs(self.crs)))
        if moved is None or moved.is_empty:
            return None
        minx, miny, maxx, maxy = moved.bounds
        pad = 0.01 * max(maxx - minx, maxy - miny)
        if not all(map(math.isfinite, (minx, maxx, miny, maxy))):
            return None
        return minx - pad, miny - pad, maxx + pad, maxy + pad

    def label_counts(self, by_layer: bool = False) -> dict:
        """Number of labels per class id (or per class id and layer with ``by_layer``)."""
        counts: dict = {}
        with self._db() as con:
            for key, table in LAYERS.items():
                for cid, n in con.execute(f"SELECT class_id, COUNT(*) FROM {table} "
                                          "GROUP BY class_id"):
                    if by_layer:
                        counts.setdefault(cid, {})[key] = n
                    else:
                        counts[cid] = counts.get(cid, 0) + n
        return counts

    def layer_uri(self, layer: str) -> str:
        """The OGR data source URI of a label layer ('path|layername=label_polygons')."""
        return f"{self.path}|layername={LAYERS[layer]}"


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise UserError("A class needs a name.", "Type a name for the class.")
    return name


def _check_color(color: str) -> str:
    if not isinstance(color, str) or not _COLOR.match(color):
        raise UserError(f"Colour {color!r} is not of the form #rrggbb.", "Pick a colour.")
    return color.lower()


def _check_distances(solid: float, blur: float) -> None:
    if solid < 0 or blur < 0:
        raise UserError("Solid and blur distances are pixel counts and cannot be negative.",
                        "Use 0 or more.")


def _create_layers(path: Path, crs: str) -> bool:
    """:func:`.gdalbind.create_layers` on pyogrio."""
    import numpy as np
    from pyogrio.errors import DataSourceError
    from pyogrio.raw import write

    try:
        for key, name in LAYERS.items():
            write(str(path), np.array([], dtype=object), [np.array([], np.int32)] * 2, _FIELDS,
                  layer=name, driver="GPKG", geometry_type=_LAYER_TYPES[key], crs=crs,
                  append=path.exists(),
                  layer_options={"GEOMETRY_NAME": "geom", "FID": "fid", "SPATIAL_INDEX": "YES"})
    except (DataSourceError, OSError):
        return False
    return True


def _gpkg_functions(con: sqlite3.Connection) -> None:
    """The GeoPackage SQL functions the R-tree triggers call (ST_IsEmpty, ST_MinX…), read from the
    geometry blob's header (GeoPackage 1.3, clause 2.1.3), so that plain sqlite3 can update label
    tables. A blob without an envelope only occurs for points, which the header cannot bound:
    those fall back to the WKB point's coordinates."""
    import struct

    def header(blob: bytes) -> tuple[bool, tuple[float, ...] | None]:
        flags = blob[3]
        order = "<" if flags & 1 else ">"
        kind = (flags >> 1) & 7
        empty = bool(flags & 0x10)
        if kind:
            return empty, struct.unpack_from(order + "4d", blob, 8)
        wkb = blob[8:]
        o = "<" if wkb[0] == 1 else ">"
        if empty or struct.unpack_from(o + "I", wkb, 1)[0] % 1000 != 1:
            return empty, None
        x, y = struct.unpack_from(o + "2d", wkb, 5)
        return empty, (x, x, y, y)

    def bound(i: int):
        def f(blob):
            env = header(blob)[1] if blob else None
            return None if env is None else env[i]
        return f

    con.create_function("ST_IsEmpty", 1, lambda b: None if b is None else int(header(b)[0]),
                        deterministic=True)
    for i, name in enumerate(("ST_MinX", "ST_MaxX", "ST_MinY", "ST_MaxY")):
        con.create_function(name, 1, bound(i), deterministic=True)
