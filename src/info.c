/* info: the info subcommand (rank 0 only): what a model file holds in a few lines (with --config
 * every config field, with --tensors every tensor), and with --plan each rank's share of a grid */
#include "info.h"

#include <stdio.h>

#include "config.h"
#include "dist.h"
#include "dtype.h"
#include "mfile.h"
#include "plan.h"
#include "run_opts.h"
#include "util.h"

/* "260.1 K", "1.10 B": a count in thousands, millions or billions */
static void fmt_count(char *buf, size_t cap, double v) {
    if (v >= 1e9) snprintf(buf, cap, "%.2f B", v / 1e9);
    else if (v >= 1e6) snprintf(buf, cap, "%.1f M", v / 1e6);
    else if (v >= 1e3) snprintf(buf, cap, "%.1f K", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
}

/* the default view: what the model is, how big, how it reads text */
static void print_compact(const model_config *c, const mfile_tensor_totals *tot, const mfile_tokenizer *mt) {
    printf("architecture: %s\n", c->architecture);
    printf("shape: %d layers, dim %d, hidden %d, %d heads (%d KV, head size %d), vocab %d, context %d%s%s\n",
           c->n_layers, c->dim, c->hidden_dim, c->n_heads, c->n_kv_heads, c->head_size, c->vocab_size, c->max_seq_len,
           c->tied_classifier ? ", tied classifier" : "", c->sliding_window > 0 ? ", sliding window" : "");
    char n[32];
    fmt_count(n, sizeof(n), (double)tot->params);
    printf("parameters: %s (%lld)\n", n, (long long)tot->params);
    printf("weights: %s", kern_dtype_name(dtype_main(c)));
    int others = 0;
    for (int t = 0; t < 3; t++) /* the other types of a mixed file (q8 with bf16 tensors, f32 norms) */
        if (tot->type_count[t] && (kern_dtype)t != dtype_main(c))
            printf("%s%d %s", others++ ? " and " : " (also ", tot->type_count[t], kern_dtype_name((kern_dtype)t));
    double gib = tot->weight_bytes / 1073741824.0;
    if (gib >= 0.1) printf("%s, %.2f GiB (%lld bytes)\n", others ? " tensors)" : "", gib, (long long)tot->weight_bytes);
    else printf("%s, %.2f MiB (%lld bytes)\n", others ? " tensors)" : "", gib * 1024, (long long)tot->weight_bytes);
    if (mt) printf("tokenizer: %s, %d pieces\n", mt->type, mt->n);
    else printf("tokenizer: none (prompts must give prompt_ids)\n");
    printf("chat template: %s\n", mt && mt->chat_template[0] ? mt->chat_template : "none (--chat-template NAME for \"messages\")");
}

int info_main(int argc, char **argv) {
    run_opts o;
    int rc = run_opts_parse("info", argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (util_rank() != 0) return 0;
    mfile *f = mfile_open(o.model, dist_comm_self());
    model_config c;
    mfile_read_config(f, &c);
    if (o.kv_dtype >= 0) c.kv_dtype = o.kv_dtype;
    printf("model: %s\n", o.model);
    mfile_tokenizer mt;
    int has_tok = mfile_read_tokenizer(f, &mt);
    if (!o.plan || o.config || o.tensors) { /* --plan alone: the plan only */
        mfile_tensor_totals tot;
        mfile_print_tensors(f, NULL, &tot);
        print_compact(&c, &tot, has_tok ? &mt : NULL);
        if (o.config) {
            printf("config:\n");
            config_print(&c, stdout);
            if (mfile_has(f, "source/tokenizer.json")) printf("source tokenizer.json: stored\n");
        }
        if (o.tensors) mfile_print_tensors(f, stdout, NULL);
    }
    if (has_tok) mfile_tokenizer_free(&mt);
    if (o.plan) {
        int dp = o.dp ? o.dp : 1, pp = o.pp ? o.pp : 1, tp = o.tp ? o.tp : 1;
        char why[256], valid[1024];
        if (plan_check_grid(&c, pp, tp, why, sizeof(why)) != 0) {
            plan_list_valid(&c, pp * tp, valid, sizeof(valid));
            error("impossible grid: %s; valid grids for this model on %d ranks: %s", why, pp * tp, valid);
            mfile_close(f);
            return 1;
        }
        int seq = run_opts_seq_len(&o, c.max_seq_len);
        plan_grid g;
        plan_make_dp(&g, &c, dp, pp, tp);
        const int slots = plan_slots(o.batch, o.micro_batches, pp);
        printf("plan: --dp %d --pp %d --tp %d (%d replica%s of %d rank%s), %s weights, %s KV cache for %d slots (--batch %d "
               "x %d micro-batch%s) x --max-seq-len %d per replica\n", dp, pp, tp, dp, dp > 1 ? "s" : "", pp * tp,
               pp * tp > 1 ? "s" : "", kern_dtype_name(dtype_main(&c)), kern_dtype_name((kern_dtype)c.kv_dtype), slots,
               o.batch, slots / o.batch, slots / o.batch > 1 ? "es" : "", seq);
        printf("%5s %7s %5s %3s %9s %9s %9s %11s %14s %14s\n", "rank", "replica", "stage", "tp", "layers", "heads",
               "kv_heads", "ffn_cols", "weight_bytes", "kv_bytes");
        int64_t tw = 0, tk = 0;
        for (int r = 0; r < dp * pp * tp; r++) {
            plan_rank pr;
            plan_rank_share(&g, &c, r, &pr);
            int64_t kvb = plan_kv_bytes(&pr, &c, seq, slots);
            char lay[32], hd[32], kvh[32], ffn[32];
            snprintf(lay, sizeof(lay), "%d-%d", pr.layer0, pr.layer0 + pr.n_layers_local - 1);
            snprintf(hd, sizeof(hd), "%d-%d", pr.head0, pr.head0 + pr.n_heads_local - 1);
            snprintf(kvh, sizeof(kvh), "%d-%d", pr.kv_head0, pr.kv_head0 + pr.n_kv_local - 1);
            snprintf(ffn, sizeof(ffn), "%d-%d", pr.hidden0, pr.hidden0 + pr.hidden_local - 1);
            printf("%5d %7d %5d %3d %9s %9s %9s %11s %14lld %14lld\n", r, pr.replica, pr.stage, pr.tp_rank, lay, hd, kvh,
                   ffn, (long long)pr.weight_bytes, (long long)kvb);
            tw += pr.weight_bytes;
            tk += kvb;
        }
        printf("total: weights %lld bytes (%.2f MiB), KV cache %lld bytes (%.2f MiB)\n", (long long)tw, tw / 1048576.0,
               (long long)tk, tk / 1048576.0);
        if (dp > 1) { /* all ranks on one node: replicas share one copy of each slice */
            plan_node_mem shared, priv;
            plan_node_bytes(&g, &c, 0, dp * pp * tp, seq, o.batch, o.micro_batches, 1, &shared);
            plan_node_bytes(&g, &c, 0, dp * pp * tp, seq, o.batch, o.micro_batches, 0, &priv);
            printf("on one node: weights %.2f MiB shared by the replicas (%.2f MiB with a copy each), KV cache %.2f MiB\n",
                   shared.weight_bytes / 1048576.0, priv.weight_bytes / 1048576.0, shared.kv_bytes / 1048576.0);
        }
    }
    mfile_close(f);
    return 0;
}
