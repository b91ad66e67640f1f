"""Checks `wander export`'s GGUF LoRA adapters in real llama.cpp (llama-cpp-python's bindings
to llama.h): computes the next-token log-probabilities after the prompt in the export's
`check.json`, on the base model and with each `adapter.gguf` applied by llama.cpp
(`llama_adapter_lora_init` + `llama_set_adapter_lora`, what `llama-server --lora` does), and
compares them with wander's. The base is the GGUF wander trained on, dequantised to F32
here, with an f32 key/value cache, because check.json holds wander's f32 figures and
llama.cpp multiplies Q8_0 weights with activations quantised to 8 bits (about 0.1 nats of
difference on its own). As a
control, each adapter is also written with its query and key updates in Hugging Face's row
order (what a loader that skips the GGUF's RoPE permutation would produce): that one must
disagree.

    python scripts/check_export_llamacpp.py EXPORT_DIR MODEL.gguf

Prints one line per model and exits 1 if an adapter disagrees by more than --tolerance, or
if the greedy next token differs. Run by scripts/check_export.sh.
"""

import argparse
import ctypes
import json
import math
import os
import sys
import tempfile

import numpy as np
import gguf
import llama_cpp as L


def copy_gguf(src, dst, tensor_fn):
    """Writes `src` to `dst` with every field and each tensor replaced by `tensor_fn`'s
    (name, array) -> (array, raw_dtype or None)."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        data, raw = tensor_fn(t)
        if raw is None:
            writer.add_tensor(t.name, data)
        else:
            writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def dequantised(t):
    if t.tensor_type in (gguf.GGMLQuantizationType.F32,):
        return np.array(t.data), None
    return gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32), None


def to_hf_rows(w, heads):
    """The GGUF's q/k row order (interleaved per head for RoPE) back to Hugging Face's."""
    rows = w.shape[0]
    return (w.reshape(heads, rows // heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


class Model:
    def __init__(self, path, threads, n_ctx):
        L.llama_backend_init()
        self._quiet = L.llama_log_callback(lambda level, text, data: None)
        if not os.environ.get("LLAMA_VERBOSE"):
            L.llama_log_set(self._quiet, ctypes.c_void_p())
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        self.params = L.llama_context_default_params()
        self.params.n_ctx = n_ctx
        self.params.n_batch = n_ctx
        self.params.n_threads = threads
        self.params.n_threads_batch = threads
        # Keys and values in f32 (llama.cpp's default is f16, 3e-3 off on its own).
        self.params.type_k = gguf.GGMLQuantizationType.F32
        self.params.type_v = gguf.GGMLQuantizationType.F32
        self.ctx = None
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(n_ctx, 0, 1)

    def use_adapter(self, path):
        # A fresh context for each adapter: here, an adapter set on a context that had
        # already decoded was not applied (llama.cpp 0.3.16).
        if self.ctx:
            L.llama_free(self.ctx)
        self.ctx = L.llama_init_from_model(self.model, self.params)
        if path is None:
            return
        adapter = L.llama_adapter_lora_init(self.model, path.encode())
        if not adapter:
            raise SystemExit(f"llama.cpp refused the adapter {path}")
        if L.llama_set_adapter_lora(self.ctx, adapter, 1.0) != 0:
            raise SystemExit(f"llama.cpp could not apply the adapter {path}")

    def next_log_probs(self, prompt):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        b = self.batch
        for i, tok in enumerate(prompt):
            b.token[i] = tok
            b.pos[i] = i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = i == len(prompt) - 1
        b.n_tokens = len(prompt)
        if L.llama_decode(self.ctx, b) != 0:
            raise SystemExit("llama_decode failed")
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, -1),
                                       shape=(self.n_vocab,)).astype(np.float64)
        m = logits.max()
        return logits - (m + math.log(np.exp(logits - m).sum()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("gguf")
    ap.add_argument("--tolerance", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    with open(os.path.join(args.export_dir, "check.json")) as f:
        check = json.load(f)
    prompt, tokens = check["prompt_tokens"], check["tokens"]
    reader = gguf.GGUFReader(args.gguf)
    heads = int(reader.fields["llama.attention.head_count"].contents())
    kv_heads = int(reader.fields["llama.attention.head_count_kv"].contents())
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        base_path = os.path.join(tmp, "base-f32.gguf")
        copy_gguf(args.gguf, base_path, dequantised)
        model = Model(base_path, args.threads, len(prompt) + 8)

        def compare(name, adapter):
            model.use_adapter(adapter)
            lp = model.next_log_probs(prompt)
            err = max(abs(lp[t] - w) for t, w in zip(tokens, check[name]))
            same_top = tokens[int(np.argmax(check[name]))] == int(np.argmax(lp))
            return err, same_top, lp

        err, same_top, base_lp = compare("base", None)
        print(f"base: max |wander - llama.cpp| = {err:.2e}; greedy token "
              f"{'the same' if same_top else 'DIFFERS'}")
        failed |= not same_top
        for name in ("novelty", "alignment"):
            adapter = os.path.join(args.export_dir, name, "adapter.gguf")
            err, same_top, _ = compare(name, adapter)
            effect = max(abs(base_lp[t] - w) for t, w in zip(tokens, check[name]))
            wrong = os.path.join(tmp, f"{name}-hf-rows.gguf")

            def hf_rows(t):
                data = np.array(t.data)
                if ".lora_b" in t.name and ("attn_q" in t.name or "attn_k" in t.name):
                    # numpy's rows are the GGUF's output rows.
                    data = to_hf_rows(data, heads if "attn_q" in t.name else kv_heads)
                return np.ascontiguousarray(data), None

            copy_gguf(adapter, wrong, hf_rows)
            control, _, _ = compare(name, wrong)
            ok = err <= args.tolerance and same_top
            failed |= not ok
            print(f"{name}: max |wander - llama.cpp with adapter.gguf| = {err:.2e} "
                  f"({'ok' if ok else 'DISAGREES'}); greedy token "
                  f"{'the same' if same_top else 'DIFFERS'}; the adapter moves them by "
                  f"{effect:.2e}; with q/k rows in Hugging Face's order llama.cpp is off by "
                  f"{control:.2e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
