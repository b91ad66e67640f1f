#!/usr/bin/env python3
"""Split a RecBole atomic dataset (one .inter and one .item file) into an older window and a
newer one at a share of the interactions by time, for trying `wander refresh` on real data:

    python3 scripts/split_window.py DATA_DIR OUT_DIR [--newer 0.2]

OUT_DIR/base holds the older interactions and only the items rated in them (the catalogue
as it stood); OUT_DIR/newer holds the newer interactions and the whole catalogue, so the
items first rated after the cut are new to a run built on the base.
"""
import argparse
import os
import sys


def one(folder, ext):
    found = sorted(f for f in os.listdir(folder) if f.endswith(ext))
    if len(found) != 1:
        sys.exit(f"{folder}: expected one {ext} file, found {found}")
    return os.path.join(folder, found[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--newer", type=float, default=0.2, help="share of interactions in the newer window")
    a = ap.parse_args()
    if not 0.0 < a.newer < 1.0:
        sys.exit("--newer must lie strictly between 0 and 1")
    inter_path, item_path = one(a.data, ".inter"), one(a.data, ".item")
    with open(inter_path, encoding="utf-8") as f:
        inter_header, *rows = f.read().splitlines()
    cols = [c.split(":")[0] for c in inter_header.split("\t")]
    try:
        t_col, i_col = cols.index("timestamp"), cols.index("item_id")
    except ValueError:
        sys.exit(f"{inter_path}: needs timestamp and item_id columns, has {cols}")
    order = sorted(range(len(rows)), key=lambda k: (float(rows[k].split("\t")[t_col]), k))
    cut = len(rows) - int(round(len(rows) * a.newer))
    older = [rows[k] for k in order[:cut]]
    newer = [rows[k] for k in order[cut:]]
    seen = {r.split("\t")[i_col] for r in older}
    with open(item_path, encoding="utf-8") as f:
        item_header, *items = f.read().splitlines()
    name = os.path.basename(inter_path)[: -len(".inter")]
    for window, inter, catalogue in [
        ("base", older, [l for l in items if l.split("\t")[0] in seen]),
        ("newer", newer, items),
    ]:
        d = os.path.join(a.out, window)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{name}.inter"), "w", encoding="utf-8") as f:
            f.write("\n".join([inter_header] + inter) + "\n")
        with open(os.path.join(d, f"{name}.item"), "w", encoding="utf-8") as f:
            f.write("\n".join([item_header] + catalogue) + "\n")
    new_items = len(items) - len(seen)
    print(f"base: {len(older)} interactions, {len(seen)} items; newer: {len(newer)} interactions, {len(items)} items ({new_items} new)")


if __name__ == "__main__":
    main()
