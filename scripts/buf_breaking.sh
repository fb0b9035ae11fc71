#!/usr/bin/env bash
# Fail when protos/ breaks the released API (protos/released-v1.json, a buf image of the last
# release) or the API of the previous commit on main (buf FILE rules, see buf.yaml).
#
#   scripts/buf_breaking.sh            # against HEAD~1 (CI on main: the previous main commit)
#   scripts/buf_breaking.sh origin/main  # a PR branch against the main it will merge into
#
# The released image catches a break spread over several commits of one push, which HEAD~1 alone
# would miss; `make buf-release` rewrites it when a release ships (only if nothing breaks it).
#
# Needs the git history of the ref (CI: fetch-depth >= 2, or fetch origin/main). Exits 0 with a
# message (nothing to compare) when the ref does not exist because the repository has a single
# commit, or when the ref has no protos/ yet; non-zero (buf's 100) on a breaking change; 2 on
# misuse (not a git repo, no buf, unknown ref, or a shallow clone without the ref).
set -euo pipefail

ref="${1:-${BUF_BREAKING_AGAINST:-HEAD~1}}"
root="$(git rev-parse --show-toplevel 2>/dev/null)" || {
  echo "buf_breaking: not inside a git repository" >&2
  exit 2
}
cd "$root"

buf="${BUF:-}"
if [[ -z "$buf" ]]; then
  if [[ -x .venv/bin/buf ]]; then buf=.venv/bin/buf; else buf="$(command -v buf || true)"; fi
fi
[[ -n "$buf" ]] || { echo "buf_breaking: buf not found (make venv, or set BUF=/path/to/buf)" >&2; exit 2; }
[[ -d protos ]] || { echo "buf_breaking: no protos/ in $root" >&2; exit 2; }

released=protos/released-v1.json
if [[ -f "$released" ]]; then
  echo "buf_breaking: protos/ against the released API ($released)"
  if ! "$buf" breaking protos --against "$released"; then
    echo "buf_breaking: BREAKING changes against the released API (see above). Ship a new" \
      "package version (payments.amazonpay.v2) instead of changing v1." >&2
    exit 100
  fi
fi

if ! commit="$(git rev-parse --verify --quiet "${ref}^{commit}")"; then
  if [[ "$(git rev-parse --is-shallow-repository)" == "true" ]]; then
    echo "buf_breaking: $ref is not in this shallow clone; fetch more history (fetch-depth >= 2)" >&2
    exit 2
  fi
  if [[ "$ref" == "HEAD~1" ]] && [[ "$(git rev-list --count HEAD)" == "1" ]]; then
    echo "buf_breaking: $ref does not exist (the repository has a single commit); nothing to compare"
    exit 0
  fi
  echo "buf_breaking: unknown ref $ref" >&2
  exit 2
fi

if ! git cat-file -e "${commit}:protos" 2>/dev/null; then
  echo "buf_breaking: $ref (${commit:0:12}) has no protos/; nothing to compare"
  exit 0
fi

echo "buf_breaking: protos/ against $ref (${commit:0:12})"
# The .git input reads the protos exactly as committed at the ref; the FILE rules come from the
# current buf.yaml (so the check cannot be weakened by the commit under review's parent).
if "$buf" breaking protos --against ".git#ref=${commit},subdir=protos"; then
  echo "buf_breaking: no breaking changes"
else
  status=$?
  echo "buf_breaking: BREAKING changes against $ref (see above). If intended, ship a new" \
    "package version (payments.amazonpay.v2) instead of changing v1." >&2
  exit "$status"
fi
