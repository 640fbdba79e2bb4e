#!/usr/bin/python3
"""Writes the benchmark prompt set data/bench_prompts.jsonl, deterministically.

    /usr/bin/python3 data/make_bench_prompts.py            # (re)writes data/bench_prompts.jsonl
    /usr/bin/python3 data/make_bench_prompts.py --check    # exit 1 if the file differs

Each line: {"custom_id": "bench-NNN", "prompt_ids": [1, ...]}. Prompt i has length L_i tokens
(BOS included), L_i = round(exp(U(ln MIN, ln MAX))) (log-uniform), the first token is 1 (BOS) and
the others are uniform in [LO, HI). Every draw comes from splitmix64 seeded with --seed, so the
file depends on nothing but the arguments (no Python version, no library). The ids [3, 500) are
valid in every model's vocabulary (stories260K's 512 tokens included) and avoid llama2.c's
specials (0 unk, 1 bos, 2 eos); prompt_ids are used as given, so the Llama 3 shapes (BOS 128000)
also see token 1 first, which does not matter for timing."""
import argparse
import json
import math
import os
import sys

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def uniform(self):
        """[0, 1) with 53 random bits"""
        return (self.next() >> 11) * (1.0 / (1 << 53))

    def below(self, n):
        """uniform integer in [0, n) (n small: the modulo bias is below 2^-50)"""
        return self.next() % n


def make(n, min_len, max_len, lo, hi, seed):
    rng = SplitMix64(seed)
    rows = []
    a, b = math.log(min_len), math.log(max_len)
    for i in range(n):
        length = int(round(math.exp(a + (b - a) * rng.uniform())))
        length = max(min_len, min(max_len, length))
        ids = [1] + [lo + rng.below(hi - lo) for _ in range(length - 1)]
        rows.append({"custom_id": "bench-%03d" % i, "prompt_ids": ids})
    return rows


def render(rows):
    return "".join(json.dumps(r, separators=(", ", ": ")) + "\n" for r in rows)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", default=os.path.join(here, "bench_prompts.jsonl"))
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--lo", type=int, default=3, help="smallest token id after BOS")
    p.add_argument("--hi", type=int, default=500, help="token ids are < HI")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--check", action="store_true", help="compare with OUTPUT instead of writing it")
    a = p.parse_args()
    if not (1 <= a.min_len <= a.max_len and 0 <= a.lo < a.hi and a.n >= 0):
        p.error("need 1 <= min-len <= max-len, 0 <= lo < hi, n >= 0")
    rows = make(a.n, a.min_len, a.max_len, a.lo, a.hi, a.seed)
    text = render(rows)
    lens = sorted(len(r["prompt_ids"]) for r in rows)
    stats = "%d prompts, %d tokens; length min %d, median %d, mean %.1f, max %d" % (
        len(rows), sum(lens), lens[0] if lens else 0, lens[len(lens) // 2] if lens else 0,
        sum(lens) / max(1, len(lens)), lens[-1] if lens else 0)
    if a.check:
        try:
            with open(a.output) as f:
                same = f.read() == text
        except OSError as e:
            print("make_bench_prompts: %s" % e)
            return 1
        print("%s: %s (%s)" % (a.output, "up to date" if same else "DIFFERS from the generator", stats))
        return 0 if same else 1
    with open(a.output, "w") as f:
        f.write(text)
    print("wrote %s: %s" % (a.output, stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
