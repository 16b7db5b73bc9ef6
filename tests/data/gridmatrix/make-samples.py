#!/usr/bin/env python3
"""Regenerates the zint Grid Matrix samples of this folder.

Each sample is zint's exact module matrix (`--dump`: one row per line, hex, most significant
bit first) and a PNG zint rendered of it; `samples.json` lists them with the text given to zint
and, where a reader independent of zint and of yima-gate (the Grid Matrix reader of the
`diagnostics2` branch of gitlost/zxing-cpp, `ZXingReader -format GridMatrix`) was available,
what that reader read. A sample whose independent read differs from its text is a zint defect
(see the README of this folder).

    python3 tests/data/gridmatrix/make-samples.py [--zxing PATH/TO/ZXingReader]

Our own encoder's symbols of the texts in `ours.json` are checked the same way: write them with
`YIMA_GM_BLESS=/tmp/gm-ours cargo test --test integration gridmatrix::our_symbols`, then
`make-samples.py --zxing PATH/TO/ZXingReader --ours /tmp/gm-ours` records what the independent
reader read of each.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

VECTORS = os.path.join(HERE, "..", "..", "vectors", "ym1-vectors.json")

TEXTS = [
    "HELLO",
    "hello world",
    "12345678901234567890",
    "Grid Matrix 2026",
    "一码通办",
    "网格矩阵码 GB/T 27766",
    "YM1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3",
    "ABCdef123 XYZ",
    "The quick brown fox jumps over the lazy dog 0123456789",
    "政务服务 一网通办 ABC 123",
    "a[b]c{d}e~f^g_h`i|j\\k",
    "Tel: +86 10 1234-5678, Fax: (010) 8765.4321",
    "北京市朝阳区 100020 第3号楼",
    "3.14159 2.71828",
    "Ünïcödé and 中文 mixed",
    "\u00e9t\u00e9",
]


def ym1_texts():
    with open(VECTORS, encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    seen, out = set(), []
    for v in vectors:
        t = v["text"]
        if t.startswith("YM1:") and len(t) > 40 and t[:40] not in seen:
            seen.add(t[:40])
            out.append(t)
    return out


def zint(text, secure, vers, out_png):
    args = ["zint", "-b", "GRIDMATRIX", "--secure=%d" % secure]
    if vers:
        args.append("--vers=%d" % vers)
    dump = subprocess.run(args + ["--dump", "-d", text], capture_output=True, check=True).stdout
    subprocess.run(args + ["--scale=2", "-o", out_png, "-d", text], capture_output=True, check=True)
    return dump.decode()


def independent_read(zxing, png):
    """The text zxing-cpp's reader prints (`Text:       "…"`), or "" when it reads nothing."""
    if not zxing:
        return None
    r = subprocess.run([zxing, "-formats", "GridMatrix", "-escape", png], capture_output=True)
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("Text:"):
            value = line[len("Text:"):].strip()
            value = value[1:-1] if value.startswith('"') and value.endswith('"') else value
            for code, name in enumerate(CONTROL_NAMES):
                value = value.replace("<%s>" % name, chr(code))
            return value.replace("<DEL>", "\x7f")
    return ""


CONTROL_NAMES = ("NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK "
                 "SYN ETB CAN EM SUB ESC FS GS RS US").split()


def ours(zxing, png_dir):
    """Fills `independent_read` of `ours.json` from the PNGs of our own encoder, written by
    `YIMA_GM_BLESS=DIR cargo test gridmatrix::our_symbols` into DIR."""
    path = os.path.join(HERE, "ours.json")
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    for e in entries:
        e["independent_read"] = independent_read(zxing, os.path.join(png_dir, e["name"] + ".png"))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(entries, f, ensure_ascii=False, indent=1)
        f.write("\n")
    agree = sum(e["independent_read"] == e["text"] for e in entries)
    print("ours: %d of %d read back by the independent reader" % (agree, len(entries)))


def main():
    zxing = None
    if "--zxing" in sys.argv:
        zxing = sys.argv[sys.argv.index("--zxing") + 1]
    if "--ours" in sys.argv:
        ours(zxing, sys.argv[sys.argv.index("--ours") + 1])
        return
    jobs = []
    for t in TEXTS:
        for secure in range(1, 6):
            jobs.append((t, secure, None))
    for t in ym1_texts():
        for secure in (1, 3, 5):
            jobs.append((t, secure, None))
    # Every version, with a short text padded out.
    for vers in range(1, 14):
        jobs.append(("V%d PADDED" % vers, 2 if vers == 1 else 1 + vers % 5, vers))
    samples = []
    for i, (text, secure, vers) in enumerate(jobs):
        name = "z%03d" % i
        png = os.path.join(HERE, name + ".png")
        try:
            dump = zint(text, secure, vers, png)
        except subprocess.CalledProcessError:
            continue
        with open(os.path.join(HERE, name + ".dump"), "w") as f:
            f.write(dump)
        entry = {"name": name, "text": text, "secure": secure, "vers": vers}
        read = independent_read(zxing, png)
        if read is not None:
            entry["independent_read"] = read
        samples.append(entry)
    with open(os.path.join(HERE, "samples.json"), "w", encoding="utf-8") as f:
        json.dump({"zint": subprocess.run(["zint", "--version"], capture_output=True).stdout.decode().strip(),
                   "samples": samples}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("%d samples" % len(samples))


if __name__ == "__main__":
    main()
