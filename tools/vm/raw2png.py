#!/usr/bin/env python3
"""Converts one raw V4L2 frame to PNG (no dependencies beyond the stdlib).

usage: raw2png.py FORMAT_FILE RAW_FILE OUT_PNG
FORMAT_FILE holds "WIDTH HEIGHT FOURCC [BYTESPERLINE]"; supported FOURCCs:
YU12 (I420), NV12, YUYV, RGB3, BGR3.
"""
import struct
import sys
import zlib


def clamp(v):
    return 0 if v < 0 else 255 if v > 255 else int(v)


def yuv_to_rgb(y, u, v):
    c, d, e = y - 16, u - 128, v - 128
    return (clamp((298 * c + 409 * e + 128) >> 8),
            clamp((298 * c - 100 * d - 208 * e + 128) >> 8),
            clamp((298 * c + 516 * d + 128) >> 8))


def to_rgb_rows(data, width, height, fourcc, stride):
    rows = []
    if fourcc in ("YU12", "NV12"):
        stride = stride or width
        y_size = stride * height
        for r in range(height):
            row = bytearray()
            for c in range(width):
                y = data[r * stride + c]
                if fourcc == "YU12":
                    cw = stride // 2
                    u = data[y_size + (r // 2) * cw + c // 2]
                    v = data[y_size + y_size // 4 + (r // 2) * cw + c // 2]
                else:
                    base = y_size + (r // 2) * stride + (c // 2) * 2
                    u, v = data[base], data[base + 1]
                row += bytes(yuv_to_rgb(y, u, v))
            rows.append(bytes(row))
    elif fourcc == "YUYV":
        stride = stride or width * 2
        for r in range(height):
            row = bytearray()
            for c in range(width):
                base = r * stride + (c // 2) * 4
                y = data[base + (c % 2) * 2]
                row += bytes(yuv_to_rgb(y, data[base + 1], data[base + 3]))
            rows.append(bytes(row))
    elif fourcc in ("RGB3", "BGR3"):
        stride = stride or width * 3
        for r in range(height):
            row = data[r * stride: r * stride + width * 3]
            if fourcc == "BGR3":
                row = b"".join(bytes((row[i + 2], row[i + 1], row[i])) for i in range(0, len(row), 3))
            rows.append(bytes(row))
    else:
        raise SystemExit(f"raw2png: unsupported format {fourcc}")
    return rows


def write_png(path, width, height, rows):
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + row for row in rows)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def main():
    fmt_file, raw_file, out = sys.argv[1:4]
    fields = open(fmt_file).read().split()
    width, height, fourcc = int(fields[0]), int(fields[1]), fields[2]
    stride = int(fields[3]) if len(fields) > 3 else 0
    data = open(raw_file, "rb").read()
    write_png(out, width, height, to_rgb_rows(data, width, height, fourcc, stride))


if __name__ == "__main__":
    main()
