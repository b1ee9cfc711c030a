#!/usr/bin/env python3
"""Turns the Natural Earth 1:110m land outline into the SVG path of the status page's map.

Source: `land-110m.json` of the npm package `world-atlas` (ISC licence, by Mike Bostock;
the data is Natural Earth's, public domain). Get it with

    npm pack world-atlas && tar xzf world-atlas-*.tgz package/land-110m.json

then run

    python3 scripts/world-path.py package/land-110m.json > proxy/assets/world-110m.txt

The output is one SVG path (`d` attribute) in an equirectangular projection onto a
1000 x 500 box: x = (longitude + 180) / 360 * 1000, y = (90 - latitude) / 180 * 500, the
projection the page uses to place regions. Coordinates are rounded to 0.1 px, points
closer than --tolerance px to the line through their neighbours are dropped
(Ramer-Douglas-Peucker), land entirely south of --south (Antarctica) is left out, and
every move after the first is relative, to keep it small.
"""

import argparse
import json
import sys

WIDTH, HEIGHT = 1000.0, 500.0


def decode_arcs(topology):
    """The topology's arcs as lists of (lon, lat), undoing quantization and delta coding."""
    transform = topology.get("transform")
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for p in arc:
            if transform:
                x, y = x + p[0], y + p[1]
                sx, sy = transform["scale"]
                tx, ty = transform["translate"]
                points.append((x * sx + tx, y * sy + ty))
            else:
                points.append((p[0], p[1]))
        arcs.append(points)
    return arcs


def ring(arcs, indices):
    """One closed ring from arc indices (~i is arc i reversed); shared end points once."""
    out = []
    for i in indices:
        pts = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        out.extend(pts if not out else pts[1:])
    return out


def polygons(geometry):
    kind = geometry["type"]
    if kind == "GeometryCollection":
        for g in geometry["geometries"]:
            yield from polygons(g)
    elif kind == "Polygon":
        yield geometry["arcs"]
    elif kind == "MultiPolygon":
        yield from geometry["arcs"]


def unwrap(points):
    """Rings crossing the antimeridian (Chukotka, Fiji) as continuous longitudes, and the
    copy shifted by 360 degrees that shows the other side; the map's box clips both.
    Jumps along the poles (Antarctica's closing edge) are the map's border: kept."""
    out = [points[0]]
    crossed = False
    for lon, lat in points[1:]:
        plon = out[-1][0]
        if abs(lon - plon) > 180 and not (abs(lat) > 89.9 and abs(out[-1][1]) > 89.9):
            lon += 360 if lon < plon else -360
            crossed = True
        out.append((lon, lat))
    if not crossed:
        return [out]
    shift = -360 if max(p[0] for p in out) > 180 else 360
    return [out, [(lon + shift, lat) for lon, lat in out]]


def project(lon, lat):
    return ((lon + 180.0) / 360.0 * WIDTH, (90.0 - lat) / 180.0 * HEIGHT)


def simplify(points, tolerance):
    """Ramer-Douglas-Peucker on a closed ring (keeps the first and last point)."""
    if len(points) < 4:
        return points
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        (ax, ay), (bx, by) = points[a], points[b]
        dx, dy = bx - ax, by - ay
        norm = (dx * dx + dy * dy) ** 0.5
        best, best_d = None, tolerance
        for i in range(a + 1, b):
            px, py = points[i]
            if norm == 0:
                d = ((px - ax) ** 2 + (py - ay) ** 2) ** 0.5
            else:
                d = abs(dy * px - dx * py + bx * ay - by * ax) / norm
            if d > best_d:
                best, best_d = i, d
        if best is not None:
            keep[best] = True
            stack += [(a, best), (best, b)]
    return [p for p, k in zip(points, keep) if k]


def fmt(v):
    s = f"{v:.1f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def path(topology, tolerance, south):
    arcs = decode_arcs(topology)
    parts = []
    cur = (0, 0)  # current point in tenths of a pixel (relative commands stay exact)
    for obj in topology["objects"].values():
        for poly in polygons(obj):
            for copy in (c for r in poly for c in unwrap(ring(arcs, r))):
                if all(lat < south for _, lat in copy):
                    continue
                pts = [project(lon, lat) for lon, lat in copy]
                pts = simplify(pts, tolerance)
                q = []
                for x, y in pts:
                    t = (round(x * 10), round(y * 10))
                    if not q or q[-1] != t:
                        q.append(t)
                if len(q) < 4:
                    continue
                if q[0] == q[-1]:
                    q.pop()
                start = q[0]
                cmd = "M" if not parts else "m"
                dx, dy = (start[0], start[1]) if not parts else (start[0] - cur[0], start[1] - cur[1])
                seg = [f"{cmd}{fmt(dx / 10)} {fmt(dy / 10)}l"]
                prev = start
                coords = []
                for t in q[1:]:
                    coords.append(f"{fmt((t[0] - prev[0]) / 10)} {fmt((t[1] - prev[1]) / 10)}")
                    prev = t
                seg.append(" ".join(coords))
                seg.append("z")
                parts.append("".join(seg))
                cur = start  # after z the current point is the subpath's start
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("topojson", help="world-atlas land-110m.json")
    ap.add_argument("--tolerance", type=float, default=0.35, help="simplification, px")
    ap.add_argument(
        "--south", type=float, default=-60.0, help="drop land entirely south of this latitude"
    )
    args = ap.parse_args()
    with open(args.topojson, encoding="utf-8") as f:
        topology = json.load(f)
    sys.stdout.write(path(topology, args.tolerance, args.south) + "\n")


if __name__ == "__main__":
    main()
