# Sourced by scripts/peer_llamacpp.sh and scripts/check_export.sh: makes sure
# .wander/tools/llamacpp holds llama-cpp-python from PyPI (a source package: pip builds
# llama.cpp with cmake for this machine's instruction set, about 3 minutes on 2 cores;
# 140 MB) with numpy and gguf, and sets $venv to it. The multimodal library (LLAVA_BUILD:
# clip, mtmd, stb_image, miniaudio) is not built: nothing here loads images or audio, and it
# was half of the build's time.
venv=.wander/tools/llamacpp
if ! "$venv/bin/python" -c "import llama_cpp, numpy, gguf" 2>/dev/null; then
    echo "building llama-cpp-python 0.3.16 (llama.cpp) from PyPI into $venv" >&2
    python3 -m venv "$venv"
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "llama-cpp-python[server]==0.3.16" numpy gguf==0.17.1
fi
