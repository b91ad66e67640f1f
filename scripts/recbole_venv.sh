# Sourced by scripts/peer_recbole.sh: makes sure .wander/tools/recbole holds RecBole 1.2.1
# and what its SASRec path imports, from PyPI (about 4 GB with torch's CUDA libraries, which
# PyPI's torch wheel depends on), and sets $venv to it. RecBole itself is installed without
# its declared dependencies: it pins ray <= 2.6.3, which only its hyper-parameter search
# imports, and the packages below are the ones the training and evaluation path imports.
venv=.wander/tools/recbole
if ! "$venv/bin/python" -c "import recbole, torch, pyarrow, tensorboard, sklearn" 2>/dev/null; then
    echo "installing torch and RecBole 1.2.1 from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        torch==2.9.1 numpy pandas scipy scikit-learn pyarrow pyyaml tqdm tensorboard \
        texttable tabulate psutil colorlog==4.7.2 colorama==0.4.4
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps recbole==1.2.1
fi
