"""Checks `wander export`'s PEFT adapters in real transformers + peft: loads the GGUF wander
trained on (dequantised by transformers), computes the next-token log-probabilities after
the prompt in the export's `check.json`, without and with each adapter, and compares them
with wander's. As a control it also loads each adapter with the query and key updates left
in the GGUF's row order (the mistake the export's un-permutation exists to avoid): that one
must disagree.

    python scripts/check_export.py EXPORT_DIR MODEL.gguf

Prints one line per model and exits 1 if an adapter disagrees by more than --tolerance.
Run by scripts/check_export.sh, which installs the packages.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
import transformers
import peft
from safetensors.torch import load_file, save_file


def to_gguf_rows(w, heads):
    """Hugging Face's q/k row order to the GGUF's (llama.cpp's converter's permutation)."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("gguf")
    ap.add_argument("--tolerance", type=float, default=2e-3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    with open(os.path.join(args.export_dir, "check.json")) as f:
        check = json.load(f)
    ids = torch.tensor([check["prompt_tokens"]])
    tokens = torch.tensor(check["tokens"])

    def load_base():
        return transformers.AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(args.gguf)),
            gguf_file=os.path.basename(args.gguf), dtype=torch.float32).eval()

    def log_probs(model):
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1].double()
        return torch.log_softmax(logits, -1)[tokens]

    def gap(a, b):
        return (a - torch.tensor(b, dtype=torch.float64)).abs().max().item()

    base = load_base()
    cfg = base.config
    base_lp = log_probs(base)
    failed = False
    print(f"base: max |wander - transformers| = {gap(base_lp, check['base']):.2e}")
    for name in ("novelty", "alignment"):
        folder = os.path.join(args.export_dir, name)
        model = peft.PeftModel.from_pretrained(load_base(), folder).eval()
        lp = log_probs(model)
        err = gap(lp, check[name])
        effect = gap(base_lp, check[name])
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(folder, "adapter_config.json"), tmp)
            tensors = load_file(os.path.join(folder, "adapter_model.safetensors"))
            for key, w in tensors.items():
                if "lora_B" in key and ("q_proj" in key or "k_proj" in key):
                    heads = cfg.num_attention_heads if "q_proj" in key else cfg.num_key_value_heads
                    tensors[key] = to_gguf_rows(w, heads).contiguous()
            save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"))
            wrong = peft.PeftModel.from_pretrained(load_base(), tmp).eval()
            control = gap(log_probs(wrong), check[name])
        ok = err <= args.tolerance
        failed |= not ok
        print(f"{name}: max |wander - peft| = {err:.2e} ({'ok' if ok else 'DISAGREES'}); "
              f"the adapter moves them by {effect:.2e}; with q/k rows in the GGUF's order "
              f"peft is off by {control:.2e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
