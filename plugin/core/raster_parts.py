"""Classify Pixels in several processes: each rank writes its share of rows to a part file beside
the output (:func:`part_path`); rank 0 puts the parts together into one GeoTIFF
(:func:`assemble`). Parts are in the output's folder, so on several machines that folder must be
shared (the same path on each)."""

from __future__ import annotations

from pathlib import Path

ROWS_PER_COPY = 1024   # rows copied from a part at a time (memory: rows × width × bands bytes)


def part_path(path: str | Path, rank: int) -> Path:
    """Where rank ``rank`` writes its rows of ``path`` (a hidden file beside it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.rank{rank}.tmp{path.suffix}")


def assemble(parts: list[Path], spans: list[tuple[int, int]], target: Path,
             profile: dict) -> None:
    """Write ``target`` (GeoTIFF ``profile``, the whole raster) from ``parts``, part k holding
    raster rows ``spans[k]`` = (first, end); the colour table and band descriptions come from the
    first part."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(target, "w", **profile) as dst:
        with rasterio.open(parts[0]) as first:
            descriptions = first.descriptions
            try:
                dst.write_colormap(1, first.colormap(1))
            except ValueError:   # no colour table
                pass
        for band, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(band, text)
        for part, (y0, y1) in zip(parts, spans):
            if y1 <= y0:
                continue
            with rasterio.open(part) as src:
                for r in range(0, y1 - y0, ROWS_PER_COPY):
                    n = min(ROWS_PER_COPY, y1 - y0 - r)
                    data = src.read(window=Window(0, r, src.width, n))
                    dst.write(data, window=Window(0, y0 + r, src.width, n))
