/* plan: grid validity rules, byte-balanced contiguous layer ranges, shares that tile the model */
#include <stdio.h>
#include <string.h>

#include "plan.h"

static int failures = 0, passes = 0;
#define EXPECT(cond, ...)                          \
    do {                                           \
        if (cond) passes++;                        \
        else {                                     \
            failures++;                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__); \
            printf(__VA_ARGS__);                   \
            printf("\n");                          \
        }                                          \
    } while (0)

static model_config cfg(int dim, int hidden, int layers, int heads, int kv, int vocab, int tied) {
    model_config c;
    config_init_defaults(&c);
    c.dim = dim, c.hidden_dim = hidden, c.n_layers = layers, c.n_heads = heads, c.n_kv_heads = kv;
    c.head_size = dim / heads, c.vocab_size = vocab, c.max_seq_len = 512, c.tied_classifier = tied;
    return c;
}

static void check_tiling(const model_config *c, int pp, int tp) {
    plan_grid g;
    plan_make(&g, c, pp, tp);
    int layers_seen = 0, ok = 1;
    for (int s = 0; s < pp; s++) {
        EXPECT(g.layer_start[s + 1] > g.layer_start[s], "pp %d: stage %d has no layers", pp, s);
        layers_seen += g.layer_start[s + 1] - g.layer_start[s];
    }
    EXPECT(layers_seen == c->n_layers && g.layer_start[0] == 0, "pp %d: layers don't tile", pp);
    for (int s = 0; s < pp; s++) {
        int heads = 0, hidden = 0, vocab = 0;
        for (int t = 0; t < tp; t++) {
            plan_rank r;
            plan_rank_share(&g, c, s * tp + t, &r);
            if (r.head0 != heads || r.hidden0 != hidden || r.vocab0 != vocab) ok = 0;
            heads += r.n_heads_local, hidden += r.hidden_local, vocab += r.vocab_local;
            /* every local query head maps to a local KV head */
            int mul = c->n_heads / c->n_kv_heads;
            for (int h = 0; h < r.n_heads_local; h++) {
                int kv = (r.head0 + h) / mul - r.kv_head0;
                if (kv < 0 || kv >= r.n_kv_local) ok = 0;
            }
        }
        if (heads != c->n_heads || hidden != c->hidden_dim || vocab != c->vocab_size) ok = 0;
    }
    EXPECT(ok, "grid %dx%d: shares do not tile heads / FFN columns / vocab", pp, tp);
}

int main(void) {
    char why[256], list[1024];
    model_config s = cfg(64, 172, 5, 8, 4, 512, 1); /* stories260K's shape */
    EXPECT(plan_check_grid(&s, 1, 1, why, sizeof why) == 0, "1x1 rejected: %s", why);
    EXPECT(plan_check_grid(&s, 1, 8, why, sizeof why) == 0, "1x8 (replicated kv) rejected: %s", why);
    EXPECT(plan_check_grid(&s, 1, 3, why, sizeof why) != 0 && strstr(why, "n_heads"), "1x3 accepted");
    EXPECT(plan_check_grid(&s, 6, 1, why, sizeof why) != 0 && strstr(why, "layers"), "6x1 accepted");
    model_config g6 = cfg(96, 256, 4, 12, 6, 100, 1);
    EXPECT(plan_check_grid(&g6, 1, 4, why, sizeof why) != 0, "tp 4 with 6 kv heads accepted");
    plan_list_valid(&s, 3, list, sizeof list);
    EXPECT(!strcmp(list, "--pp 3 --tp 1"), "valid list for 3 ranks: %s", list);
    plan_list_valid(&s, 8, list, sizeof list);
    EXPECT(!strcmp(list, "--pp 4 --tp 2, --pp 2 --tp 4, --pp 1 --tp 8"), "valid list for 8 ranks: %s", list);

    /* balance: a big embedding and classifier push layers off the first and last stages */
    model_config big = cfg(64, 172, 8, 8, 4, 20000, 0);
    plan_grid g;
    plan_make(&g, &big, 3, 1);
    EXPECT(g.layer_start[2] - g.layer_start[1] >= 5, "embedding-heavy model: middle stage got %d of 8 layers",
           g.layer_start[2] - g.layer_start[1]);
    plan_make(&g, &big, 2, 1);
    EXPECT(g.layer_start[1] == 4, "symmetric ends: first stage got %d of 8 layers", g.layer_start[1]);
    for (int pp = 1; pp <= 5; pp++)
        for (int tp = 1; tp <= 8; tp *= 2)
            if (plan_check_grid(&s, pp, tp, why, sizeof why) == 0) check_tiling(&s, pp, tp);
    model_config kv1 = cfg(64, 100, 7, 8, 1, 300, 0);
    for (int pp = 1; pp <= 7; pp += 3)
        for (int tp = 1; tp <= 8; tp *= 2) check_tiling(&kv1, pp, tp);

    /* bytes: the shares of all ranks add up to the model (tied embedding counted once per holder) */
    int64_t total = 0;
    plan_make(&g, &kv1, 1, 1);
    plan_rank r;
    plan_rank_share(&g, &kv1, 0, &r);
    total = r.weight_bytes;
    int64_t sum = 0;
    plan_make(&g, &kv1, 1, 4);
    for (int i = 0; i < 4; i++) {
        plan_rank_share(&g, &kv1, i, &r);
        sum += r.weight_bytes;
    }
    /* tp 4 replicates the single KV head (wk, wv), the layer norms and the final norm */
    int64_t repl = (3LL * 7 * (2 * 8 * 64 + 2 * 64) + 3 * 64) * 4;
    EXPECT(sum == total + repl, "1x4 bytes %lld, expected %lld", (long long)sum, (long long)(total + repl));

    /* dp: replica-major ranks; every replica holds the whole model */
    plan_make_dp(&g, &s, 3, 2, 2);
    for (int w = 0; w < 12; w++) {
        plan_rank_share(&g, &s, w, &r);
        EXPECT(r.replica == w / 4 && r.stage == w % 4 / 2 && r.tp_rank == w % 2, "dp rank %d: replica %d stage %d tp %d",
               w, r.replica, r.stage, r.tp_rank);
    }
    plan_list_layouts(&s, 4, list, sizeof list);
    EXPECT(!strcmp(list, "--dp 4 --pp 1 --tp 1, --dp 2 --pp 1 --tp 2, --dp 2 --pp 2 --tp 1, --dp 1 --pp 1 --tp 4, "
                         "--dp 1 --pp 2 --tp 2, --dp 1 --pp 4 --tp 1"),
           "layouts for 4 ranks: %s", list);
    /* memory per node: 4 replicas of 1 rank on one node hold one copy of the weights when shared */
    plan_make_dp(&g, &s, 4, 1, 1);
    plan_rank_share(&g, &s, 0, &r);
    plan_node_mem nm, nm_private;
    plan_node_bytes(&g, &s, 0, 4, 512, 8, 0, 1, &nm);
    plan_node_bytes(&g, &s, 0, 4, 512, 8, 0, 0, &nm_private);
    EXPECT(nm.weight_bytes == r.weight_bytes && nm_private.weight_bytes == 4 * r.weight_bytes &&
           nm.kv_bytes == 4 * plan_kv_bytes(&r, &s, 512, 8) && nm.kv_bytes == nm_private.kv_bytes,
           "node bytes: shared %lld, private %lld, one copy %lld", (long long)nm.weight_bytes,
           (long long)nm_private.weight_bytes, (long long)r.weight_bytes);
    /* the default layout: a small model on 64 ranks of one node -> 64 replicas of one rank */
    int dp, pp, tp;
    EXPECT(plan_default(&s, 64, 64, 1LL << 34, 512, 16, 0, &dp, &pp, &tp) == 0 && dp == 64 && pp == 1 && tp == 1,
           "default on 64 ranks: %d x %d x %d", dp, pp, tp);
    /* memory for one copy of the weights but not for 8 replicas' KV caches: replicas of 2 ranks */
    int64_t w1 = nm.weight_bytes, kvr = plan_kv_bytes(&r, &s, 512, 16);
    EXPECT(plan_default(&s, 8, 8, (int64_t)((w1 + 5 * kvr) / 0.85), 512, 16, 0, &dp, &pp, &tp) == 0 && dp * pp * tp == 8 &&
               dp < 8,
           "default with little memory: %d x %d x %d", dp, pp, tp);
    /* too big for a node's share: one replica across both nodes (pipeline across, tp inside) */
    EXPECT(plan_default(&s, 8, 4, (int64_t)(w1 / 4), 512, 16, 0, &dp, &pp, &tp) != 0 && dp == 1 && tp == 4 && pp == 2,
           "default when nothing fits: %d x %d x %d", dp, pp, tp);
    /* micro-batches: 1 without a pipeline; pp, and pp + 1 once the requests fill them all (or
     * when the requests are unknown); a replica's KV slots are --batch in each */
    EXPECT(plan_micro_batches(1, 8, 1000) == 1 && plan_micro_batches(2, 8, 23) == 2 && plan_micro_batches(2, 8, 24) == 3 &&
               plan_micro_batches(4, 8, -1) == 5,
           "micro-batches: pp 1 -> %d, pp 2 with 23 / 24 requests of batch 8 -> %d / %d, pp 4 unknown -> %d",
           plan_micro_batches(1, 8, 1000), plan_micro_batches(2, 8, 23), plan_micro_batches(2, 8, 24),
           plan_micro_batches(4, 8, -1));
    EXPECT(plan_slots(8, 2, 4) == 16 && plan_slots(8, 0, 2) == 24 && plan_slots(1 << 30, 4, 1) == -1,
           "slots: %d %d %d", plan_slots(8, 2, 4), plan_slots(8, 0, 2), plan_slots(1 << 30, 4, 1));
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
