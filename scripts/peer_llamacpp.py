"""The inference figures of `wander bench llm` on llama.cpp (through llama-cpp-python's
bindings to llama.h), on exactly the workload `wander bench llm --decode-workload` wrote:
the same Q8_0 GGUF, the same prompt and allowed-answer token ids, the same sample counts.

    python scripts/peer_llamacpp.py WORKLOAD.json [--threads N]

llama.cpp at its best on each figure: the prompt's KV cache is shared by many sequences
(`llama_memory_seq_cp` on a unified cache, no copy), many sequences decode as one batch of
different lengths (no padding), unconstrained sampling uses llama.cpp's own sampler, and
the allowed answers are enforced by a logits mask over the trie's children (only those
logits are read). Exact scores are what wander's precompute computes: log-probabilities of
every allowed answer under the trie-constrained decoder (softmax over the allowed children
at every branching node), from one batch of every branching prefix over the shared prompt.

Prints one JSON line. Run by scripts/peer_llamacpp.sh, which installs the package.
"""

import argparse
import ctypes
import json
import math
import os
import random
import time

import numpy as np
import llama_cpp as L


class Trie:
    """The allowed answers' token trie; node 0 is the root."""

    def __init__(self, answers):
        self.answers = answers
        self.children = [{}]
        self.depth = [0]
        self.answer_at = {}
        for a, toks in enumerate(answers):
            node = 0
            for t in toks:
                nxt = self.children[node].get(t)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][t] = nxt
                    self.children.append({})
                    self.depth.append(self.depth[node] + 1)
                node = nxt
            self.answer_at[node] = a
        # The answer below each node when only one remains (its other tokens are forced).
        self.only = {}
        for node in reversed(range(len(self.children))):
            below = [self.only.get(c) for c in self.children[node].values()]
            if node in self.answer_at and not below:
                self.only[node] = self.answer_at[node]
            elif len(below) == 1 and below[0] is not None:
                self.only[node] = below[0]

    def branching(self):
        """(node, path) of every node with more than one child, root first."""
        out, stack = [], [(0, [])]
        while stack:
            node, path = stack.pop()
            kids = self.children[node]
            if len(kids) > 1:
                out.append((node, path))
            for t, nxt in sorted(kids.items(), reverse=True):
                stack.append((nxt, path + [t]))
        return out


class Runtime:
    def __init__(self, model_path, threads, n_seq, n_ctx):
        L.llama_backend_init()
        # Kept on the object: ctypes does not keep a callback alive for C.
        self._quiet = L.llama_log_callback(lambda level, text, data: None)
        if not os.environ.get("LLAMA_VERBOSE"):
            L.llama_log_set(self._quiet, ctypes.c_void_p())
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(model_path.encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {model_path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_ctx
        cp.n_ubatch = min(n_ctx, 512)
        cp.n_seq_max = n_seq
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = True
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise SystemExit("llama.cpp could not create a context")
        self.mem = L.llama_get_memory(self.ctx)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_seq = n_seq
        self.batch = L.llama_batch_init(n_ctx, 0, n_seq)

    def clear(self):
        L.llama_memory_clear(self.mem, True)

    def decode(self, items):
        """items: (token, position, seq, wants_logits); returns the batch indices."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(items)
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise SystemExit(f"llama_decode failed with {rc}")

    def prefill(self, prompt, seq=0):
        self.decode([(t, i, seq, i == len(prompt) - 1) for i, t in enumerate(prompt)])

    def logits(self, i):
        return L.llama_get_logits_ith(self.ctx, i)

    def all_logits(self, outputs):
        """The logits of the last decode's `outputs` rows (in batch order), as one array."""
        return np.ctypeslib.as_array(L.llama_get_logits(self.ctx), shape=(outputs, self.n_vocab))

    def share(self, count):
        """Sequences 1..count-1 share sequence 0's cache (no copy on a unified cache)."""
        for s in range(1, count):
            L.llama_memory_seq_cp(self.mem, 0, s, -1, -1)


def log_softmax_of(logits, toks, temperature=1.0):
    xs = [float(logits[t]) / temperature for t in toks]
    m = max(xs)
    z = m + math.log(sum(math.exp(x - m) for x in xs))
    return [x - z for x in xs]


def prefill_rate(rt, prompt, reps):
    rt.clear()
    rt.prefill(prompt)  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        rt.clear()
        rt.prefill(prompt)
    return len(prompt) * reps / (time.perf_counter() - t), (time.perf_counter() - t) / reps


def greedy(rt, prompt, steps, prefill_seconds):
    t = time.perf_counter()
    rt.clear()
    rt.prefill(prompt)
    n = len(prompt)
    out = []
    idx = -1
    for k in range(steps):
        logits = np.ctypeslib.as_array(rt.logits(idx), shape=(rt.n_vocab,))
        tok = int(np.argmax(logits))
        out.append(tok)
        if k + 1 == steps:
            break
        rt.decode([(tok, n + k, 0, True)])
        idx = 0
    decode = max(time.perf_counter() - t - prefill_seconds, 1e-9)
    return out, (len(out) - 1) / decode


def unconstrained(rt, prompt, n, max_new, end, seed):
    """n samples at temperature 1 sharing one prefill, decoded as one batch per step. The
    draws are exact over the whole vocabulary, done with numpy on all rows at once:
    llama.cpp's own `dist` sampler takes 3.9 ms a call here (a full-vocabulary softmax per
    sequence), more than a 16-sequence decode step (41 ms / 16)."""
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    rt.clear()
    rt.prefill(prompt)
    rt.share(n)
    plen = len(prompt)
    active = list(range(n))
    rows = np.repeat(rt.all_logits(1), n, axis=0)
    generated = 0
    for step in range(max_new):
        p = np.exp(rows - rows.max(axis=1, keepdims=True))
        c = np.cumsum(p, axis=1)
        u = rng.random(len(active)) * c[:, -1]
        toks = [min(int(np.searchsorted(c[i], u[i])), rt.n_vocab - 1) for i in range(len(active))]
        generated += len(active)
        nxt = [(s, tok) for s, tok in zip(active, toks) if tok != end and step + 1 < max_new]
        if not nxt:
            break
        rt.decode([(tok, plen + step, s, True) for s, tok in nxt])
        active = [s for s, _ in nxt]
        rows = rt.all_logits(len(nxt))
    return time.perf_counter() - t, generated


def constrained(rt, prompt, trie, n, temperature, seed):
    """n samples restricted to the allowed answers (a mask over the trie's children)."""
    rng = random.Random(seed)
    t = time.perf_counter()
    rt.clear()
    rt.prefill(prompt)
    rt.share(n)
    plen = len(prompt)
    node = {s: 0 for s in range(n)}
    idx = {s: -1 for s in range(n)}
    answers, tokens, forced = [], 0, 0
    step = 0
    active = list(range(n))
    while active:
        nxt = []
        for s in active:
            kids = sorted(trie.children[node[s]].items())
            if len(kids) == 1:
                tok, child = kids[0]
                forced += 1
            else:
                lp = log_softmax_of(rt.logits(idx[s]), [k for k, _ in kids], temperature)
                u, acc = rng.random(), 0.0
                tok, child = kids[-1]
                for (k, c), l in zip(kids, lp):
                    acc += math.exp(l)
                    if u <= acc:
                        tok, child = k, c
                        break
            tokens += 1
            node[s] = child
            # Once one answer remains below, its other tokens are forced: no decoding (as
            # wander does).
            if child in trie.only:
                a = trie.only[child]
                answers.append(a)
                tail = len(trie.answers[a]) - trie.depth[child]
                tokens += tail
                forced += tail
            else:
                nxt.append((s, tok))
        if not nxt:
            break
        rt.decode([(tok, plen + step, s, True) for s, tok in nxt])
        active = [s for s, _ in nxt]
        idx = {s: i for i, (s, _) in enumerate(nxt)}
        step += 1
    return time.perf_counter() - t, answers, forced / max(tokens, 1)


def score(rt, prompt, answers, trie):
    """Exact constrained log-probabilities of every answer, sharing one prefill."""
    t = time.perf_counter()
    rt.clear()
    rt.prefill(prompt)
    plen = len(prompt)
    branching = trie.branching()
    root_logits = np.ctypeslib.as_array(rt.logits(-1), shape=(rt.n_vocab,)).copy()
    logp = {}  # (node, token) -> log-probability of that child
    deep = [(node, path) for node, path in branching if path]
    per_round = rt.n_seq - 1
    for node, path in branching:
        if not path:
            kids = sorted(trie.children[node])
            for k, l in zip(kids, log_softmax_of(root_logits, kids)):
                logp[(node, k)] = l
    for start in range(0, len(deep), per_round):
        group = deep[start:start + per_round]
        for s in range(1, len(group) + 1):
            L.llama_memory_seq_rm(rt.mem, s, -1, -1)
        rt.share(len(group) + 1)
        items, last = [], []
        for s, (_, path) in enumerate(group, start=1):
            for k, tok in enumerate(path):
                items.append((tok, plen + k, s, k == len(path) - 1))
            last.append(len(items) - 1)
        rt.decode(items)
        for (node, _), i in zip(group, last):
            kids = sorted(trie.children[node])
            for k, l in zip(kids, log_softmax_of(rt.logits(i), kids)):
                logp[(node, k)] = l
    out = []
    for toks in answers:
        node, total = 0, 0.0
        for tok in toks:
            if len(trie.children[node]) > 1:
                total += logp[(node, tok)]
            node = trie.children[node][tok]
        out.append(total)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    with open(args.workload) as f:
        work = json.load(f)
    prompt, answers, end = work["prompt"], work["answers"], work["end_token"]
    trie = Trie(answers)
    n_seq = 64
    n_ctx = 2048
    rt = Runtime(work["model"], args.threads, n_seq, n_ctx)
    pre_rate, pre_seconds = prefill_rate(rt, prompt, work["prefill_reps"])
    greedy_tokens, decode_rate = greedy(rt, prompt, work["greedy_tokens"], pre_seconds)
    u_seconds, u_generated = unconstrained(
        rt, prompt, work["samples"], work["max_new_tokens"], end, 1)
    c_seconds, c_answers, c_forced = constrained(
        rt, prompt, trie, work["samples"], work["temperature"], 1)
    s_seconds, logprobs = score(rt, prompt, answers, trie)
    print(json.dumps({
        "llama_cpp_python": L.__version__,
        "threads": args.threads,
        "prompt_tokens": len(prompt),
        "prefill_tokens_per_s": pre_rate,
        "decode_tokens_per_s_single": decode_rate,
        "unconstrained16_seconds": u_seconds,
        "unconstrained16_tokens_per_s": u_generated / u_seconds,
        "constrained16_seconds": c_seconds,
        "constrained16_forced_share": c_forced,
        "constrained16_answers": c_answers,
        "score_candidates_seconds": s_seconds,
        "greedy_tokens": greedy_tokens,
        "candidate_logprobs": logprobs,
    }))


if __name__ == "__main__":
    main()
