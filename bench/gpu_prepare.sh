#!/usr/bin/env bash
# Get bench/gpu_bench.py ready for the accelerator machine (one H200, its own Python 3.12
# and torch, no network): download the project's pinned pure/abi wheels that machine lacks
# or has at other versions into .whl/ (ignored by git, carried by the device tool), then
# print the exact `run` call. Run from the checkout the session sends (the main one).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null \
  || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p .whl
# The versions this checkout's venv runs (pyproject pins transformers>=5.24,<5.25).
PINS=(
  transformers==5.24.0 tokenizers==0.23.3 huggingface_hub==2.4.0 safetensors==0.8.0
  accelerate==1.15.0 fastapi==0.163.2 starlette==1.10.0 uvicorn==0.54.0 h11==0.16.0
  pydantic==2.14.3 pydantic_core==2.50.4 pydantic-settings==2.16.3 python-dotenv==1.2.4
  annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0
  prometheus_client==0.26.0 llguidance==1.9.1 jsonschema==4.26.0
  jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  openai==3.51.0 jiter==0.19.0 distro anyio==4.16.0 sniffio==1.3.1 httpx==0.28.1
  httpcore==1.0.9 psutil==7.2.2 regex==2026.11.19
)
# pip matches manylinux_2_N exactly: llguidance 1.9.1 is manylinux_2_31.
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for n in 12 17 24 27 28 31 34 35; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
for pin in "${PINS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d .whl "$pin" || echo "WARNING: no wheel for $pin"
done
du -sh .whl
cat <<'CALL'
Device call (the `run` tool), about 8 minutes of the 15:
  command: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 bench/gpu_bench.py --out $OUT 2>&1 | tee $OUT/gpu_bench.log
  carry: [".whl"]
  timeout_s: 540
CALL
