# Sourced by scripts/peer_peft.sh and scripts/check_export.sh: makes sure .wander/tools/peft
# holds torch, transformers, peft and gguf from PyPI (about 4 GB with torch's CUDA
# libraries, which PyPI's torch wheel depends on), and sets $venv to it.
venv=.wander/tools/peft
if ! "$venv/bin/python" -c "import torch, transformers, peft, gguf" 2>/dev/null; then
    echo "installing torch, transformers, peft and gguf from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        torch==2.9.1 transformers==4.57.3 peft==0.18.0 gguf==0.17.1
fi
