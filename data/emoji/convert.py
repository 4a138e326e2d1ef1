#!/usr/bin/env python3
"""Build data/emoji/{emoji.png,labels.npy,split.npy,classes.json} from the npm package
emoji-datasource-google@16.0.0 (images: Noto Emoji, Apache License 2.0; data: MIT).

    npm pack emoji-datasource-google@16.0.0 && tar xzf emoji-datasource-google-16.0.0.tgz
    python3 data/emoji/convert.py package data/emoji

Every Google image of img/google/64 (64x64, RGBA, grey+alpha or palette with transparency)
whose emoji.json category is not "Component" (the five skin-tone and hair swatches): 1,906
emoji and their 1,875 skin-tone variants, 3,781 images. Each is composited on white
(out = round((c a + 255 (255 - a)) / 255)) and stored as 8-bit RGB.

Labels are the nine categories in the order of categories.json (0 Smileys & Emotion, 1 People
& Body, 2 Animals & Nature, 3 Food & Drink, 4 Travel & Places, 5 Activities, 6 Objects,
7 Symbols, 8 Flags), written to classes.json. The fixed split: emoji are ordered by their
sort_order; every tenth (position 9, 19, ...) goes to the test split with all its skin-tone
variants, so no variant of a test emoji is trained on. Images are stored train first, then
test, each in sort order (variants after their base, by their key); split.npy marks each row
0 (train) or 1 (test).

emoji.png is a grid of 64 columns of 64x64 images (image i at grid row i//64, column i%64),
the unused cells of the last row white. Standard library only.
"""
import json, struct, sys, zlib
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
SIZE, COLS = 64, 64


def read_png(path):
    """(width, height, rows of RGBA bytes) of an 8-bit non-interlaced PNG of colour type 3, 4 or 6."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, palette, trns = 8, b"", None, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and ctype in (3, 4, 6), (path, depth, ctype, interlace)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            trns = body
        elif kind == b"IDAT":
            idat += body
    bpp = {3: 1, 4: 2, 6: 4}[ctype]
    raw, stride, prev, rows = zlib.decompress(idat), w * bpp, bytearray(w * bpp), []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        if ctype == 6:
            rows.append(bytes(line))
        elif ctype == 4:
            rows.append(bytes(v for g, al in zip(line[::2], line[1::2]) for v in (g, g, g, al)))
        else:
            rows.append(bytes(v for k in line for v in (*palette[3 * k : 3 * k + 3], trns[k] if k < len(trns) else 255)))
    return w, h, rows


def on_white(rgba_rows):
    out = bytearray()
    for row in rgba_rows:
        for i in range(0, len(row), 4):
            r, g, b, a = row[i : i + 4]
            out += bytes((c * a + 255 * (255 - a) + 127) // 255 for c in (r, g, b))
    return bytes(out)


categories = [c for c in json.loads((src / "categories.json").read_text()) if c != "Component"]
emoji = sorted(
    (e for e in json.loads((src / "emoji.json").read_text()) if e["category"] != "Component" and e["has_img_google"]),
    key=lambda e: e["sort_order"],
)
splits = {0: [], 1: []}
for i, e in enumerate(emoji):
    label, part = categories.index(e["category"]), 1 if i % 10 == 9 else 0
    files = [e["image"]] + [v["image"] for _, v in sorted(e.get("skin_variations", {}).items()) if v["has_img_google"]]
    splits[part] += [(f, label) for f in files]
images = splits[0] + splits[1]
assert len(images) == 3781, len(images)

pixels = []
for name, _ in images:
    w, h, rows = read_png(src / "img" / "google" / "64" / name)
    assert (w, h) == (SIZE, SIZE), name
    pixels.append(on_white(rows))

grid_rows = -(-len(images) // COLS)
width = COLS * SIZE
white = b"\xff" * (SIZE * 3)
filtered, prev = bytearray(), bytes(width * 3)
for y in range(grid_rows * SIZE):
    gy, py = divmod(y, SIZE)
    line = b"".join(
        pixels[i][py * SIZE * 3 : (py + 1) * SIZE * 3] if i < len(pixels) else white
        for i in range(gy * COLS, gy * COLS + COLS)
    )
    # Filter "up" (the row minus the one above): flat artwork on white compresses best so.
    filtered.append(2)
    filtered += bytes((v - p) & 255 for v, p in zip(line, prev))
    prev = line


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, grid_rows * SIZE, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(bytes(filtered), 9)) + chunk(b"IEND", b"")
(out / "emoji.png").write_bytes(png)


def npy_u8(values):
    header = "{'descr': '|u1', 'fortran_order': False, 'shape': (%d,), }" % len(values)
    header += " " * (127 - 10 - len(header)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(values)


(out / "labels.npy").write_bytes(npy_u8([label for _, label in images]))
(out / "split.npy").write_bytes(npy_u8([0] * len(splits[0]) + [1] * len(splits[1])))
(out / "classes.json").write_text(json.dumps(categories) + "\n")
print(f"{len(splits[0])} train, {len(splits[1])} test images; emoji.png {len(png)} bytes")
