"""RecBole's SASRec on exactly the split wander's SASRec trains and tests on.

Reads a wander run's ingested interactions (`ingest/interactions.parquet`), writes them as
RecBole atomic files with each row's position in wander's (user, time, input) order as its
timestamp, so that RecBole's leave-one-out split by time (`LS: valid_and_test, order: TO`)
gives every user the same training items, validation item and test item as wander's
leave-last-out split (checked below, not assumed). Then trains RecBole's SASRec with the
given settings, evaluates full ranking (seen items removed, as wander does) and prints one
JSON object: test NDCG@10 and Recall@10, the best validation NDCG@10 and its epoch, seconds
to that epoch's validation, seconds in all.

    python peer_recbole.py RUN_DIR OUT_DIR --settings wander|recbole [--epochs N]
        [--stopping-step N] [--threads N] [--item-settings JSON]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch

# RecBole 1.2.1 predates NumPy 1.24 (np.float, np.long) and torch 2.6 (torch.load's
# weights_only default, which rejects the checkpoints RecBole itself writes). Restore what it
# expects instead of pinning old packages; the file loaded is the one this process wrote.
# RecBole's own compatibility shim reads np.float_, np.complex_ and np.unicode_, which NumPy 2
# removed as well.
for name, value in {"float": float, "long": np.int64, "bool8": np.bool_, "float_": np.float64,
                    "complex_": np.complex128, "unicode_": np.str_}.items():
    if not hasattr(np, name):
        setattr(np, name, value)
_torch_load = torch.load
torch.load = lambda *a, **k: _torch_load(*a, **{"weights_only": False, **k})

from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

LOO_TRAIN, LOO_VALID, LOO_TEST = 0, 1, 2


def write_atomic(run_dir, data_dir, name):
    table = pq.read_table(os.path.join(run_dir, "ingest", "interactions.parquet"),
                          columns=["user", "item", "seq", "loo_split"]).to_pydict()
    os.makedirs(os.path.join(data_dir, name), exist_ok=True)
    rows = sorted(zip(table["seq"], table["user"], table["item"], table["loo_split"]))
    expected = {}
    with open(os.path.join(data_dir, name, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for seq, user, item, split in rows:
            f.write(f"u{user}\ti{item}\t{seq}\n")
            if split != LOO_TRAIN:
                expected[(f"u{user}", split)] = f"i{item}"
    return expected, len(rows)


def check_split(dataset, part, split, expected):
    """Every user's held-out item in RecBole's `part` is wander's."""
    uid, iid = dataset.uid_field, dataset.iid_field
    users = dataset.id2token(uid, part.dataset.inter_feat[uid].numpy())
    items = dataset.id2token(iid, part.dataset.inter_feat[iid].numpy())
    got = dict(zip(users, items))
    want = {u: i for (u, s), i in expected.items() if s == split}
    if got != want:
        bad = [u for u in want if got.get(u) != want[u]][:5]
        sys.exit(f"RecBole's split differs from wander's for {len(bad)}+ users, e.g. {bad}")
    return len(got)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--settings", choices=["wander", "recbole"], required=True)
    ap.add_argument("--item-settings", default="{}",
                    help="wander's [items] table as JSON (for --settings wander)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--stopping-step", type=int)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    name = "wander"
    expected, rows = write_atomic(args.run_dir, os.path.join(args.out_dir, "data"), name)
    cfg = {
        "data_path": os.path.join(args.out_dir, "data"),
        "checkpoint_dir": os.path.join(args.out_dir, "saved"),
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full",
                      "group_by": "user"},
        "metrics": ["NDCG", "Recall"], "topk": [10], "valid_metric": "NDCG@10",
        "train_neg_sample_args": None, "loss_type": "CE",
        "device": "cpu", "use_gpu": False, "seed": args.seed, "reproducibility": True,
        "show_progress": False, "log_wandb": False, "state": "WARNING",
    }
    if args.settings == "wander":
        # wander's defaults (wander.toml [items]) mapped onto RecBole's SASRec. RecBole's
        # batch counts (prefix, next item) samples, wander's counts users (every position of
        # up to 50); 512 samples is the setting of the first comparison.
        w = json.loads(args.item_settings)
        cfg.update({
            "MAX_ITEM_LIST_LENGTH": w.get("max_len", 50),
            "hidden_size": w.get("dim", 64), "inner_size": w.get("dim", 64),
            "n_layers": w.get("layers", 2), "n_heads": w.get("heads", 2),
            "hidden_dropout_prob": w.get("dropout", 0.2),
            "attn_dropout_prob": w.get("dropout", 0.2), "hidden_act": "relu",
            "learning_rate": w.get("lr", 0.002), "train_batch_size": 512,
            "epochs": w.get("max_epochs", 40), "stopping_step": w.get("patience", 5),
        })
    if args.epochs:
        cfg["epochs"] = args.epochs
    if args.stopping_step:
        cfg["stopping_step"] = args.stopping_step

    config = Config(model="SASRec", dataset=name, config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    users_valid = check_split(dataset, valid_data, LOO_VALID, expected)
    users_test = check_split(dataset, test_data, LOO_TEST, expected)

    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    start = time.perf_counter()
    curve = []

    progress = open(os.path.join(args.out_dir, "curve.jsonl"), "w")

    def after_validation(epoch, score):
        curve.append({"epoch": epoch + 1, "valid_ndcg10": float(score),
                      "seconds": time.perf_counter() - start})
        # One line per epoch as it ends, so a run stopped early still shows its curve.
        progress.write(json.dumps(curve[-1]) + "\n")
        progress.flush()

    best_valid, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False,
                                callback_fn=after_validation)
    seconds = time.perf_counter() - start
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    best = max(curve, key=lambda c: c["valid_ndcg10"])
    json.dump({
        "settings": args.settings,
        "recbole": __import__("recbole").__version__, "torch": torch.__version__,
        "threads": args.threads, "interactions": rows,
        "users_valid": users_valid, "users_test": users_test,
        "config": {k: config[k] for k in ["hidden_size", "inner_size", "n_layers", "n_heads",
                                          "hidden_dropout_prob", "attn_dropout_prob",
                                          "hidden_act", "learning_rate", "train_batch_size",
                                          "MAX_ITEM_LIST_LENGTH", "epochs", "stopping_step"]},
        "test_ndcg10": float(test["ndcg@10"]), "test_recall10": float(test["recall@10"]),
        "best_valid_ndcg10": float(best_valid), "best_epoch": best["epoch"],
        "seconds_to_best": best["seconds"], "epochs": len(curve), "seconds": seconds,
        "curve": curve,
    }, sys.stdout)
    print()


if __name__ == "__main__":
    main()
