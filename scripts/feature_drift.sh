#!/usr/bin/env bash
# Fails when `cargo build --release` (the main command) and `cargo test --workspace
# --features engine` (the test command) would build a shared dependency with different features,
# which makes the test build compile it, and everything above it, a second time.
# The fix is to add the printed features to crates/wander-workspace-hack/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tree() { cargo tree --prefix none -f '{p}|{f}' "$@" | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u; }
tree -e normal,build >"$tmp/main"
tree --workspace --features engine -e normal,build,dev >"$tmp/test"
python3 - "$tmp/main" "$tmp/test" <<'PY'
import sys
def load(path):
    features = {}
    for line in open(path):
        package, _, names = line.strip().partition("|")
        if not package:
            continue
        key = " ".join(package.split()[:2])
        features.setdefault(key, set()).update(n for n in names.split(",") if n)
    return features
main, test = load(sys.argv[1]), load(sys.argv[2])
# The binary and the pipeline are built twice on purpose: the engine feature is theirs.
own = {"wander-cli", "wander-pipeline"}
drift = [(k, sorted(test[k] - main[k]), sorted(main[k] - test[k]))
         for k in sorted(main) if k in test and test[k] != main[k] and k.split()[0] not in own]
for package, extra, missing in drift:
    print(f"feature drift: {package}: the test build adds {extra}, lacks {missing}")
if drift:
    sys.exit(f"{len(drift)} shared crates would be compiled twice: add the features above to crates/wander-workspace-hack/Cargo.toml")
print(f"feature drift: none ({len(main)} crates in the main build)")
PY
