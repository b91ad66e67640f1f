# Independent reference: all-MiniLM-L6-v2 in numpy (BERT forward, mean pooling, L2 norm).
import json, sys, numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
import os
d = os.environ.get("MINILM_DIR", ".wander/assets/minilm") + "/"
w = load_file(d + "model.safetensors")
cfg = json.load(open(d + "config.json"))
tok = Tokenizer.from_file(d + "tokenizer.json"); tok.no_padding()
def W(k):
    for p in ("", "bert."):
        if p + k in w: return w[p + k].astype(np.float64)
    raise KeyError(k)
def ln(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b
from math import erf, sqrt
verf = np.vectorize(erf)
def gelu(x): return 0.5 * x * (1 + verf(x / sqrt(2)))
def embed(text):
    ids = np.array(tok.encode(text).ids)
    n = len(ids); H = cfg["hidden_size"]; nh = cfg["num_attention_heads"]; hd = H // nh
    x = W("embeddings.word_embeddings.weight")[ids] + W("embeddings.position_embeddings.weight")[:n] + W("embeddings.token_type_embeddings.weight")[0]
    x = ln(x, W("embeddings.LayerNorm.weight"), W("embeddings.LayerNorm.bias"))
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        q = x @ W(p + "attention.self.query.weight").T + W(p + "attention.self.query.bias")
        k = x @ W(p + "attention.self.key.weight").T + W(p + "attention.self.key.bias")
        v = x @ W(p + "attention.self.value.weight").T + W(p + "attention.self.value.bias")
        q, k, v = [t.reshape(n, nh, hd).transpose(1, 0, 2) for t in (q, k, v)]
        a = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(1, 0, 2).reshape(n, H)
        o = o @ W(p + "attention.output.dense.weight").T + W(p + "attention.output.dense.bias")
        x = ln(x + o, W(p + "attention.output.LayerNorm.weight"), W(p + "attention.output.LayerNorm.bias"))
        h = gelu(x @ W(p + "intermediate.dense.weight").T + W(p + "intermediate.dense.bias"))
        h = h @ W(p + "output.dense.weight").T + W(p + "output.dense.bias")
        x = ln(x + h, W(p + "output.LayerNorm.weight"), W(p + "output.LayerNorm.bias"))
    e = x.mean(0); return e / np.linalg.norm(e)
v = embed(sys.argv[1])
print(json.dumps([round(float(t), 6) for t in v]))
