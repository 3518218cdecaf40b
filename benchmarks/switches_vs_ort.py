"""Per call, under ``npxception bench``'s conditions: each system's wall time, its threads' CPU time, time
runnable but waiting for a core, and voluntary / involuntary context switches, and the host's steal.

    python benchmarks/switches_vs_ort.py [--rounds 30] [--no-tf] [--set MODULE NAME VALUE]

Ours (our main thread and the worker threads our first passes start) and ONNX Runtime (the threads its session
starts, and the main thread that calls it) on the same weights, in Williams order with 20 ms gaps as the bench.
From ``/proc/self/task/*/schedstat`` and ``status``; steal and idle from ``/proc/stat`` (ticks of 10 ms, both
CPUs). ``--set`` sets a module attribute first (an A/B in two processes). Run it in an autogroup of its own
at -20. Results: docs/performance.md, "Issue 15, 2026-11-30 10:30-12:15 UTC".
"""
import argparse, ast, importlib, os, statistics, sys, time, collections
import numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from npxception import bench

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=30)
ap.add_argument("--no-tf", action="store_true")
ap.add_argument("--set", nargs=3, action="append", default=[])
args = ap.parse_args()
for mod, name, val in args.set:
    setattr(importlib.import_module(mod), name, ast.literal_eval(val))

import keras
from npxception.weights_tools import from_keras
kmodel = keras.applications.Xception(weights=None, input_shape=(299, 299, 3))
rng = np.random.default_rng(0)
for layer in kmodel.layers:
    if layer.weights:
        layer.set_weights([bench._random_like(w, layer, rng) for w in layer.weights])
model = from_keras(kmodel)
x = np.random.default_rng(1).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)

def tasks():
    return set(os.listdir("/proc/self/task"))

t0 = tasks()
model(x); model(x)
ours_t = sorted(tasks() - t0) + [str(os.getpid())]
systems = {"ours": model}
if not args.no_tf:
    peers, _ = bench._peers(kmodel, ("tf",), 299, (1,))
    peers["tf"](x); peers["tf"](x)
    systems["tf"] = peers["tf"]
t1 = tasks()
peers, _ = bench._peers(kmodel, ("ort",), 299, (1,))
peers["ort"](x); peers["ort"](x)
ort_t = sorted(tasks() - t1) + [str(os.getpid())]
systems["ort"] = peers["ort"]
print("ours threads", ours_t, "ort threads", ort_t, flush=True)

def tstat(tids):
    out = {}
    for t in tids:
        try:
            run, wait, slices = map(int, open(f"/proc/self/task/{t}/schedstat").read().split())
            st = open(f"/proc/self/task/{t}/status").read().split("\n")
        except FileNotFoundError:
            continue
        d = dict(l.split(":\t") for l in st if ":\t" in l)
        out[t] = (run, wait, int(d["voluntary_ctxt_switches"]), int(d["nonvoluntary_ctxt_switches"]))
    return out

def steal():
    f = open("/proc/stat").readline().split()
    return int(f[8]), int(f[4])  # steal, idle (ticks)

def delta(a, b):
    cpu = sum(b[t][0] - a[t][0] for t in b if t in a) / 1e6
    wait = sum(b[t][1] - a[t][1] for t in b if t in a) / 1e6
    vol = {t: b[t][2] - a[t][2] for t in b if t in a}
    inv = sum(b[t][3] - a[t][3] for t in b if t in a)
    return cpu, wait, vol, inv

names = list(systems)
orders = bench.round_orders(len(names))
rec = collections.defaultdict(list)
for r in range(args.rounds):
    prev = None
    for i in orders[r % len(orders)]:
        name = names[i]
        tids = ours_t if name == "ours" else ort_t if name == "ort" else []
        time.sleep(bench.GAP_S)
        a, s0 = tstat(tids), steal()
        t = time.perf_counter()
        systems[name](x)
        dt = time.perf_counter() - t
        b, s1 = tstat(tids), steal()
        cpu, wait, vol, inv = delta(a, b)
        rec[name].append((dt * 1e3, cpu, wait, sum(vol.values()), vol.get(str(os.getpid()), 0), inv,
                          s1[0] - s0[0], s1[1] - s0[1], prev))
        prev = name

med = statistics.median
print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()}")
for name, rows in rec.items():
    cols = list(zip(*rows))
    print(f"{name:5s} wall {med(cols[0]):6.1f} (p10 {sorted(cols[0])[len(rows)//10]:.1f} p90 {sorted(cols[0])[9*len(rows)//10]:.1f})"
          f" cpu {med(cols[1]):6.1f} runq-wait {med(cols[2]):5.2f} (mean {statistics.mean(cols[2]):.2f})"
          f" vol {med(cols[3]):4.1f} (main {med(cols[4]):.0f}) invol {med(cols[5]):.0f} steal-ticks/call {statistics.mean(cols[6]):.2f}"
          f" idle-ticks/call {statistics.mean(cols[7]):.2f}")
    byprev = collections.defaultdict(list)
    for row in rows:
        byprev[row[8]].append(row[0])
    print("      after: " + ", ".join(f"{k} {med(v):.1f} (n={len(v)})" for k, v in byprev.items()))
