"""Image sizes and the multi-stage saving (seed: "multi-stage builds cut the image").

Builds each Dockerfile twice with the machine's engine (buildah here, on the local
Debian base): the real multi-stage image, and the same Dockerfile stopped at its
builder stage (`--target builder`, what a single-stage Dockerfile would ship).
Layers are cached, so after `qms-cluster images` both builds mostly reuse them.
Prints sizes as the engine stores them (uncompressed) and the ratio of each pair.

    python bench/image_bench.py [operator] [runtime]
"""

from __future__ import annotations

import sys

from qms_cluster import images


def main(argv: list[str]) -> int:
    names = argv or ["operator", "runtime"]
    if images.engine() != "buildah":
        print("this benchmark reads sizes from buildah's storage", file=sys.stderr)
        return 2
    base = images.ensure_base(print)
    print(f"base {base}: {images.image_size(base) / 1e9:.3f} GB")
    rows = []
    for name in names:
        image = images.IMAGES[name]
        multi_s = images.build_image(image, print, base)
        single_tag = f"localhost/qms-{name}:single-stage"
        single_s = images.build_image(image, print, base, single_stage=True, tag=single_tag)
        multi, single = images.image_size(image.ref), images.image_size(single_tag)
        rows.append((name, multi, single, multi_s, single_s))
    print()
    print(f"{'image':<10} {'multi-stage':>12} {'builder only':>13} {'multi/single':>13}")
    for name, multi, single, _, _ in rows:
        print(f"{name:<10} {multi / 1e9:>10.3f}GB {single / 1e9:>11.3f}GB {multi / single:>13.3f}")
    print(
        "(build seconds, layers cached: "
        + ", ".join(f"{n} {m:.0f}s/{s:.0f}s" for n, _, _, m, s in rows)
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
