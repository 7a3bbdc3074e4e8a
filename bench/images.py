"""``python -m bench.images``: what each hostile (and each ordinary) image
costs the bot, as it handles it.

Each file runs in a fresh process that does what the images plugin does:
the budget checks on the bytes (``check_bytes``), then, if they pass, the
decode and re-encode (``sanitize``) that the bot runs in a worker process.
Reported: the verdict, wall time, and peak memory above the process's
baseline (``VmHWM``). Goals (docs/PERFORMANCE.md): an accepted image
under 0.5 s and 150 MB; a refusal under 50 ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    # hostile shapes (the figures were measured against 40 M pixels, no worker)
    "6324² flat RGBA PNG": ("big_flat_png", ()),
    "6000² progressive JPEG": ("big_progressive_jpeg", ()),
    "6300² noise WebP": ("big_noise_webp", ()),
    "10 MiB PNG of empty chunks": ("png_of_empty_chunks", ()),
    "zTXt inflating to 50 MB": ("png_with_huge_text", ()),
    "50 M-pixel bomb PNG": ("decompression_bomb", ()),
    # the largest accepted shapes
    "4096² flat RGBA PNG": ("big_flat_png", (4096,)),
    "4096² progressive JPEG": ("big_progressive_jpeg", (4096,)),
    "4096² baseline JPEG photo": ("big_photo_jpeg", (4096,)),
    "2048² noise WebP": ("big_noise_webp", (2048,)),
    "1200² noise PNG": ("noise_png", (1200, 1200)),
    # ordinary
    "photo-sized JPEG with GPS": ("jpeg_with_gps", ()),
}

_MEASURE = r"""
import json, sys, time
from plugins.images.sanitize import ImageRejected, Limits, check_bytes, sanitize
def hwm_kib():
    # VmHWM, not ru_maxrss: ru_maxrss carries the parent's peak across exec.
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])
data = open(sys.argv[1], "rb").read()
limits = Limits()
base = hwm_kib()
start = time.perf_counter()
try:
    check_bytes(data, limits)
    checked = time.perf_counter()
    clean = sanitize(data, limits)
    verdict = f"accepted ({clean.width}×{clean.height} {clean.format})"
except ImageRejected as exc:
    verdict = "refused: " + str(exc)
seconds = time.perf_counter() - start
peak = hwm_kib()
print(json.dumps({"verdict": verdict, "seconds": seconds, "peak_mb": (peak - base) / 1024}))
"""


def measure(path: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        return {"verdict": f"crashed: {out.stderr.strip().splitlines()[-1:]}", "seconds": float("nan"), "peak_mb": 0}
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args(argv)
    from harness import image_corpus as corpus

    print("| file | bytes | verdict | time | peak memory |")
    print("|---|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (maker, params) in CASES.items():
            if args.only and args.only not in name:
                continue
            data = getattr(corpus, maker)(*params)
            path = Path(tmp) / "image"
            path.write_bytes(data)
            result = measure(path)
            verdict = str(result["verdict"])
            verdict = verdict if len(verdict) <= 70 else verdict[:67] + "..."
            print(f"| {name} | {len(data):,} | {verdict} | {float(result['seconds']) * 1000:,.0f} ms "  # type: ignore[arg-type]
                  f"| {float(result['peak_mb']):,.0f} MB |", flush=True)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
