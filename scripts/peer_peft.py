"""LoRA SFT on PyTorch + peft, on exactly the workload `wander bench llm --sft-workload`
wrote: the same GGUF weights (dequantised by transformers), the same token ids, batches,
rank, alpha, targets and learning rate, the loss on the answer tokens only, and tokens
counted the same way (a batch of b sequences padded to t + 1 counts b * t).

    python scripts/peer_peft.py WORKLOAD.json [--threads N]

Prints one JSON line. Run by scripts/peer_peft.sh, which installs the packages.
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
import transformers
import peft


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    with open(args.workload) as f:
        work = json.load(f)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model_path = work["model"]
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(model_path)),
        gguf_file=os.path.basename(model_path),
        dtype=torch.float32,
    )
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
             "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
    config = peft.LoraConfig(
        r=work["rank"],
        lora_alpha=work["alpha"],
        lora_dropout=0.0,
        target_modules=[names[t] for t in work["targets"]],
        bias="none",
    )
    model = peft.get_peft_model(model, config)
    model.train()
    causal_lm = model.base_model.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=work["lr"], weight_decay=0.0)

    examples = work["examples"]
    b = work["batch_size"]
    pad = work["pad"]
    order = work["order"]

    tokens = 0
    losses = []
    start = time.perf_counter()
    for step in range(work["steps"]):
        batch = [examples[i] for i in order[step * b:(step + 1) * b]]
        seqs = [e["prompt"] + e["answer"] for e in batch]
        t = max(len(s) for s in seqs) - 1
        inputs = torch.full((len(seqs), t), pad, dtype=torch.long)
        rows, cols, targets = [], [], []
        for r, (e, s) in enumerate(zip(batch, seqs)):
            n = min(len(s), t)
            inputs[r, :n] = torch.tensor(s[:n])
            for k in range(len(e["prompt"]), len(s)):
                rows.append(r)
                cols.append(k - 1)
                targets.append(s[k])
        hidden = causal_lm.model(input_ids=inputs).last_hidden_state
        # As wander does: the vocabulary projection only where the loss is.
        logits = causal_lm.lm_head(hidden[torch.tensor(rows), torch.tensor(cols)])
        loss = F.cross_entropy(logits, torch.tensor(targets))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += len(seqs) * t
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    print(json.dumps({
        "peer": "pytorch+peft",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "threads": torch.get_num_threads(),
        "steps": work["steps"],
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "losses": losses,
    }))


if __name__ == "__main__":
    main()
