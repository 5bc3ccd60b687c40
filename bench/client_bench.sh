#!/usr/bin/env bash
# guidellm (the vLLM project's benchmark client) against a running QMS server: the
# same client the field benchmarks vLLM with, so its figures compare.
#   bench/client_bench.sh BASE_URL MODEL TOKENIZER REPORT_JSON [REQUESTS] [PROFILE] [FORMAT]
# BASE_URL  e.g. http://127.0.0.1:8000 (no /v1); the key, if any, in QMS_API_KEY
# TOKENIZER the model directory (or a hub id if the hub is reachable): synthetic
#           prompts are counted with it
# REQUESTS  how many requests (default 16); PROFILE a guidellm profile, default
#           "kind=concurrent,streams=4"; FORMAT /v1/chat/completions (default) or
#           /v1/completions; PROMPT_TOKENS / OUTPUT_TOKENS in the environment (64 / 32).
# guidellm lives in its own venv (~/.cache/qms/tools-guidellm-<version>/, built on
# first use by tests/cluster/qms_testkit/tools.py), never in the project venv.
# The report is guidellm's JSON; benchmarks[0].metrics.request_totals counts the
# successful / errored / incomplete requests.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUIDELLM_VERSION=0.8.1
if [ $# -lt 4 ]; then
  sed -n '2,15p' "${BASH_SOURCE[0]}" >&2
  exit 2
fi
URL=$1 MODEL=$2 TOKENIZER=$3 REPORT=$4
REQUESTS=${5:-16}
PROFILE=${6:-kind=concurrent,streams=4}
FORMAT=${7:-/v1/chat/completions}
VENV=$(python3 "$ROOT/tests/cluster/qms_testkit/tools.py" guidellm "guidellm==$GUIDELLM_VERSION")
BACKEND="kind=openai_http,target=$URL,model=$MODEL,request_format=$FORMAT"
if [ -n "${QMS_API_KEY:-}" ]; then
  BACKEND="$BACKEND,api_key=$QMS_API_KEY"
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec "$VENV/bin/guidellm" run \
  --backend "$BACKEND" \
  --profile "$PROFILE" \
  --constraint "kind=max_requests,count=$REQUESTS" \
  --data "kind=synthetic_text,prompt_tokens=${PROMPT_TOKENS:-64},output_tokens=${OUTPUT_TOKENS:-32}" \
  --tokenizer "kind=hf_auto,model=$TOKENIZER" \
  --output "kind=json,path=$REPORT" \
  --disable-console-interactive
