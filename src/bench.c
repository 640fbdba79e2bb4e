/* bench: `mpillama bench`, the forward pass against this machine's limits.
 *
 * Every rank first measures its limits at the same time as the others (so that each sees its
 * share of the node): a multi-threaded read of memory (kern_read_gbs) and the peak of a
 * register-only loop of each type's widest multiply-add (kern_peak_gops: f32 FMA, bf16
 * vdpbf16ps, int8 vpdpbusd); the node's limits are their sums. Then it makes (synth) or takes
 * (--model) a model, loads its share through the real model code, and times steps of the
 * forward pass (model_embed, model_layers, model_logits; tp all-reduces included) on synthetic
 * tokens:
 *   decode B:   B sequences, one token each at position --context (the KV cache as if a prompt
 *               of that length had been read), logits for all B;
 *   prefill N:  one prompt's N tokens at positions 0..N-1, logits for the last.
 * Every stage of a pipeline runs its layers at the same time on its own activations, so the
 * step time is the slowest stage's and tok/s the pipeline's throughput with enough micro-batches
 * in flight (the runner's steady state). Reported per step (median of the repetitions, the
 * slowest rank): tok/s, GB/s of weights streamed (each rank's matrices once a step; the
 * embedding table is not streamed) and its fraction of the read bandwidth of the same moment
 * (every step follows a read pass of every rank at once, summed: GB/s_rd; the fraction is the
 * median of the steps' own), and GFLOP/s of matrix work (2 per weight per token) and its
 * fraction of the summed peak of the weights' type;
 * then the matrix work's own share of the step (the time inside kern_matmul_w, activation
 * preparation included: kern_matmul_seconds) and its rate over that time, against the same peak.
 * The last line: decode_bw_fraction (decode B=1), gemm_fraction (the whole step's: the smaller of
 * decode B=32 and prefill 128, the workloads of the targets) and matmul_fraction (the
 * same two, over the matrix work's own time). */
#include "bench.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "affinity.h"
#include "dist.h"
#include "kernels.h"
#include "mfile.h"
#include "model.h"
#include "plan.h"
#include "synth.h"
#include "util.h"

#define BENCH_MAXB 16

typedef struct {
    const char *model, *shape, *dtype, *dir;
    int layers, context, pp, tp;
    int decode[BENCH_MAXB], n_decode;
    int prefill[BENCH_MAXB], n_prefill;
    double seconds; /* per measurement */
} bench_opts;

static void bench_usage(FILE *out) {
    fprintf(out,
            "usage: [mpirun -n N] mpillama bench [--model M.h5 | --shape NAME [--layers N] [--dtype f32|bf16|q8]\n"
            "                                    [--dir DIR]] [--decode B,B,...] [--prefill N,N,...]\n"
            "                                    [--context P] [--pp P --tp T] [--time S]\n"
            "  the forward pass against this machine's measured limits (memory read bandwidth, peak of\n"
            "  each type's multiply-add): tok/s, GB/s of weights, GFLOP/s and fractions of the limits\n"
            "  --model M.h5     a model to time (its weights' type is the one it stores)\n"
            "  --shape NAME     else a synthetic one (synth's shapes or a config.json; default llama-1.1b),\n"
            "  --layers N       its first N layers (default: all), --dtype its type (default f32),\n"
            "  --dir DIR        made once in DIR (default $TMPDIR or /tmp) as bench-SHAPE-LLAYERS-DTYPE.h5\n"
            "  --decode LIST    decode batches of B sequences (default 1,4,16,32,64)\n"
            "  --prefill LIST   prompt lengths prefilled in one step (default 16,128)\n"
            "  --context P      the decode tokens' position (default 128)\n"
            "  --pp P --tp T    the grid (default: tp over the ranks)\n"
            "  --time S         seconds per measurement, at least 3 steps (default 1)\n"
            "  columns: GB/s_w weights streamed, GB/s_rd a read pass just before each step, %%bw their\n"
            "  ratio; GFLOP/s and %%peak over the step; %%mm the matrix work's share of the step, GF/s_mm\n"
            "  and %%pk_mm over its own time. Last line: decode_bw_fraction (B=1), gemm_fraction and\n"
            "  matmul_fraction (the smaller of B=32 and prefill 128, over the step / the matrix work)\n");
}

static int parse_ints(const char *s, int *v, int max) {
    int k = 0;
    while (*s && k < max) {
        char *end;
        long x = strtol(s, &end, 10);
        if (end == s || x < 1 || x > 1 << 20) return -1;
        v[k++] = (int)x;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return k;
}

static int bench_parse(int argc, char **argv, bench_opts *o, int root) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"shape", required_argument, 0, 's'},
        {"layers", required_argument, 0, 'l'}, {"dtype", required_argument, 0, 'd'},
        {"dir", required_argument, 0, 'D'},    {"decode", required_argument, 0, 'B'},
        {"prefill", required_argument, 0, 'P'}, {"context", required_argument, 0, 'c'},
        {"pp", required_argument, 0, 'p'},     {"tp", required_argument, 0, 't'},
        {"time", required_argument, 0, 'T'},   {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof(*o));
    o->shape = "llama-1.1b", o->dtype = "f32", o->context = 128, o->seconds = 1.0;
    o->dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    const int dflt_decode[] = {1, 4, 16, 32, 64}, dflt_prefill[] = {16, 128};
    memcpy(o->decode, dflt_decode, sizeof(dflt_decode)), o->n_decode = 5;
    memcpy(o->prefill, dflt_prefill, sizeof(dflt_prefill)), o->n_prefill = 2;
    int c, bad = 0;
    opterr = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 's': o->shape = optarg; break;
        case 'd': o->dtype = optarg; break;
        case 'D': o->dir = optarg; break;
        case 'l':
        case 'c':
        case 'p':
        case 't': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < (c == 'c' ? 0 : 1) || v > 1 << 20) {
                if (root) error("bench: --%s '%s' is not a valid count", c == 'l' ? "layers" : c == 'c' ? "context" : c == 'p' ? "pp" : "tp", optarg);
                bad = 2;
            } else if (c == 'l') o->layers = (int)v;
            else if (c == 'c') o->context = (int)v;
            else if (c == 'p') o->pp = (int)v;
            else o->tp = (int)v;
            break;
        }
        case 'B':
        case 'P': {
            int *v = c == 'B' ? o->decode : o->prefill, *n = c == 'B' ? &o->n_decode : &o->n_prefill;
            *n = parse_ints(optarg, v, BENCH_MAXB);
            if (*n < 0) {
                if (root) error("bench: --%s '%s' is not a list of counts like 1,4,16", c == 'B' ? "decode" : "prefill", optarg);
                bad = 2;
            }
            break;
        }
        case 'T':
            o->seconds = strtod(optarg, &end);
            if (*end || end == optarg || !(o->seconds > 0)) {
                if (root) error("bench: --time '%s' is not a positive number of seconds", optarg);
                bad = 2;
            }
            break;
        case 'h':
            if (root) bench_usage(stdout);
            return 1;
        default:
            if (root) error("bench: unknown or incomplete option '%s' (see 'mpillama bench --help')", argv[optind - 1]);
            bad = 2;
        }
    }
    if (!bad && optind != argc) {
        if (root) error("bench: unexpected argument '%s' (see 'mpillama bench --help')", argv[optind]);
        bad = 2;
    }
    if (!bad && strcmp(o->dtype, "f32") && strcmp(o->dtype, "bf16") && strcmp(o->dtype, "q8")) {
        if (root) error("bench: --dtype '%s' is not f32, bf16 or q8", o->dtype);
        bad = 2;
    }
    return bad;
}

/* a synthetic model in o->dir, made by synth (collective) unless it is there; returns its path
 * (malloc'ed) or NULL after synth failed */
static char *bench_make_model(const bench_opts *o, dist_ctx *d) {
    const char *base = strrchr(o->shape, '/') ? strrchr(o->shape, '/') + 1 : o->shape;
    char layers[16] = "all";
    if (o->layers) snprintf(layers, sizeof(layers), "%d", o->layers);
    size_t len = strlen(o->dir) + strlen(base) + 64;
    char *path = xmalloc(len);
    snprintf(path, len, "%s/bench-%s-L%s-%s.h5", o->dir, base, layers, o->dtype);
    struct stat st;
    int have = d->world_rank == 0 ? stat(path, &st) == 0 : 0;
    dist_bcast(d, &have, sizeof(have), 0);
    if (have) {
        if (d->world_rank == 0) fprintf(stderr, "mpillama bench: using '%s' (delete it to make it anew)\n", path);
        return path;
    }
    if (d->world_rank == 0) fprintf(stderr, "mpillama bench: making '%s' with synth\n", path);
    char *args[12];
    int n = 0;
    args[n++] = "synth", args[n++] = "--shape", args[n++] = (char *)o->shape, args[n++] = "-o", args[n++] = path;
    if (o->layers) args[n++] = "--layers", args[n++] = layers;
    if (strcmp(o->dtype, "f32") != 0) args[n++] = "--dtype", args[n++] = (char *)o->dtype;
    args[n] = NULL;
    if (synth_main(n, args) != 0) {
        free(path);
        return NULL;
    }
    return path;
}

typedef struct {
    int64_t matrix_params;   /* this rank's matrix weights (layers, and the classifier on the last stage) */
    int64_t layer_params;    /* ... of its layers only */
    int64_t streamed_bytes;  /* bytes of those read once a step */
} bench_share;

/* what a step reads and computes on this rank, from the plan; bytes from the bytes this rank
 * loaded, scaled from all its weights to the streamed ones (one type throughout) */
static bench_share bench_rank_share(const model *m) {
    const model_config *c = &m->cfg;
    const plan_rank *r = &m->share;
    const int64_t dim = c->dim, hs = c->head_size;
    const int64_t qd = (int64_t)r->n_heads_local * hs, kvd = (int64_t)r->n_kv_local * hs, hl = r->hidden_local;
    bench_share s;
    s.layer_params = r->n_layers_local * (qd * dim + 2 * kvd * dim + dim * qd + 3 * hl * dim);
    const int last = m->norm != NULL;
    const int64_t cls = last ? (int64_t)r->vocab_local * dim : 0;
    s.matrix_params = s.layer_params + cls;
    /* all this rank holds: its matrices, its norms, and the embedding (untied, first stage) */
    int64_t held = s.matrix_params + r->n_layers_local * 2 * dim + (last ? dim : 0);
    if (m->tok_embeddings.data && m->tok_embeddings.data != m->classifier.data) held += (int64_t)r->vocab_local * dim;
    s.streamed_bytes = held > 0 ? (int64_t)((double)m->bytes_read * s.matrix_params / held) : 0;
    return s;
}

/* the smaller of two fractions, of those measured (>= 0); -1 when neither was */
static double bench_smaller(double a, double b) {
    if (a < 0) return b;
    if (b < 0) return a;
    return a < b ? a : b;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* one step of n tokens on this rank: embed (first stage), layers, logits (last stage) */
static void bench_step(model *m, dist_ctx *d, const model_batch *b, float *logits) {
    if (d->stage == 0) model_embed(m, d, b);
    model_layers(m, d, b);
    if (d->stage == d->pp - 1) model_logits(m, d, b, logits);
}

/* a measurement: medians over the steps */
typedef struct {
    double step;    /* seconds of a step (the slowest rank's) */
    double mm;      /* seconds in matrix work (the rank with the most) */
    double mm_frac; /* that over the step's seconds */
    double read;    /* GB/s of the read pass just before a step (all ranks at once, summed) */
    double bw_frac; /* GB/s of weights streamed over that pass's GB/s */
} bench_meas;

static double bench_median(double *v, int k) {
    qsort(v, k, sizeof(double), cmp_double);
    return v[k / 2];
}

/* after one warm-up, steps until `seconds` (at least 3, at most 64), each just after a pass of
 * reading memory (rd) that gives the read limit of the same moment: on a shared host the share
 * of memory bandwidth moves by up to 2x from one second to the next (rd NULL: the limit bw
 * measured at the start) */
static bench_meas bench_time(model *m, dist_ctx *d, const model_batch *b, float *logits, double seconds,
                             kern_reader *rd, double bw, int threads, double streamed) {
    double t[64], tm[64], tr[64], tf[64], tq[64];
    int k = 0;
    bench_step(m, d, b, logits);
    dist_barrier(d);
    const double start = util_now();
    for (;;) {
        dist_barrier(d);
        tr[k] = rd ? dist_sum_double(d, kern_reader_pass(rd, threads)) : bw;
        dist_barrier(d);
        const double t0 = util_now(), m0 = kern_matmul_seconds();
        bench_step(m, d, b, logits);
        const double dt = util_now() - t0;
        tm[k] = dist_max_double(d, kern_matmul_seconds() - m0);
        t[k] = dist_max_double(d, dt);
        tf[k] = tr[k] > 0 ? streamed / t[k] / 1e9 / tr[k] : 0;
        tq[k] = t[k] > 0 ? tm[k] / t[k] : 0;
        k++;
        int more = k < 3 || (k < 64 && util_now() - start < seconds);
        dist_bcast(d, &more, sizeof(more), 0);
        if (!more) break;
    }
    bench_meas r = {bench_median(t, k), bench_median(tm, k), bench_median(tq, k), bench_median(tr, k), bench_median(tf, k)};
    return r;
}

int bench_main(int argc, char **argv) {
    dist_ctx d;
    dist_ctx_init(&d);
    const int root = d.world_rank == 0;
    bench_opts o;
    int rc = bench_parse(argc, argv, &o, root);
    if (rc) {
        dist_ctx_free(&d);
        return rc == 1 ? 0 : rc;
    }
    affinity_info aff;
    affinity_bind(d.node_rank, d.node_size, &aff);
    const int threads = aff.threads;

    /* the limits, every rank at once */
    dist_barrier(&d);
    const double bw = dist_sum_double(&d, kern_read_gbs((size_t)512 << 20, threads));
    double peak[3];
    for (int t = 0; t < 3; t++) {
        dist_barrier(&d);
        peak[t] = dist_sum_double(&d, kern_peak_gops((kern_dtype)t, threads));
    }

    char *path = o.model ? xstrdup(o.model) : bench_make_model(&o, &d);
    if (!path) {
        dist_ctx_free(&d);
        return 2;
    }
    mfile *f = mfile_open(path, d.world);
    model_config cfg;
    mfile_read_config(f, &cfg);
    int pp = o.pp, tp = o.tp;
    if (!pp && !tp) tp = d.world_size, pp = 1;
    else if (!pp) pp = d.world_size / tp;
    else if (!tp) tp = d.world_size / pp;
    char why[256] = "";
    if (pp * tp != d.world_size) snprintf(why, sizeof(why), "--pp %d x --tp %d is not the %d ranks launched", pp, tp, d.world_size);
    else plan_check_grid(&cfg, pp, tp, why, sizeof(why));
    if (why[0]) {
        if (root) error("bench: impossible grid: %s", why);
        mfile_close(f);
        free(path);
        dist_ctx_free(&d);
        return 2;
    }
    dist_grid_init(&d, pp, tp);
    plan_grid grid;
    plan_make(&grid, &cfg, pp, tp);
    model m;
    model_load(&m, f, &cfg, &grid, &d); /* weights may be views of the file: closed at the end */

    int maxb = 1, maxp = 1;
    for (int k = 0; k < o.n_decode; k++) maxb = o.decode[k] > maxb ? o.decode[k] : maxb;
    for (int k = 0; k < o.n_prefill; k++) maxp = o.prefill[k] > maxp ? o.prefill[k] : maxp;
    int seq = (o.context + 1 > maxp ? o.context + 1 : maxp);
    if (seq > cfg.max_seq_len) {
        if (root) error("bench: --context %d or --prefill %d exceeds the model's %d positions", o.context, maxp, cfg.max_seq_len);
        model_free(&m);
        mfile_close(f);
        free(path);
        dist_ctx_free(&d);
        return 2;
    }
    const int maxt = maxb > maxp ? maxb : maxp;
    model_alloc_state(&m, maxb, seq, maxt);
    float *logits = xmalloc(sizeof(float) * (size_t)maxt * cfg.vocab_size);
    int *tok = xmalloc(sizeof(int) * maxt), *pos = xmalloc(sizeof(int) * maxt);
    int *slot = xmalloc(sizeof(int) * maxt), *want = xmalloc(sizeof(int) * maxt);
    uint64_t r = 0x2545F4914F6CDD1DULL;
    for (int t = 0; t < maxt; t++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        tok[t] = (int)(r % (uint64_t)cfg.vocab_size);
    }

    /* this rank's share; the weights' type from its bytes per weight */
    const bench_share sh = bench_rank_share(&m);
    const double bpw = sh.matrix_params ? (double)sh.streamed_bytes / sh.matrix_params : 4;
    const kern_dtype wt = bpw > 3 ? KERN_F32 : bpw > 1.5 ? KERN_BF16 : KERN_Q8;
    const double streamed = (double)dist_sum_int64(&d, sh.streamed_bytes);
    const double params = (double)dist_sum_int64(&d, sh.matrix_params);
    const double layer_params = (double)dist_sum_int64(&d, sh.layer_params);
    const double limit_flops = peak[wt];
    /* every step's read limit, from a pass just before it (4x the last-level cache of this machine
     * and most others: memory's rate, not the cache's); where none could be allocated, the limits
     * line's read */
    kern_reader *rd = kern_reader_init((size_t)128 << 20);
    if (dist_sum_int64(&d, rd != NULL) != d.world_size) { /* every rank reads, or none (the same collectives) */
        kern_reader_free(rd);
        rd = NULL;
    }
    if (root) {
        printf("# mpillama bench: %s (%d layers, dim %d, hidden %d, heads %d/%d, vocab %d), weights %s (%.2f GB streamed a "
               "step), grid --pp %d --tp %d, %d thread(s) a rank\n", path, cfg.n_layers, cfg.dim, cfg.hidden_dim,
               cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size, kern_dtype_name(wt), streamed / 1e9, pp, tp, threads);
        printf("# kernels: matmul %s, attention %s\n", kern_matmul_impl_w(wt), kern_attention_impl());
        printf("# limits (all ranks at once, summed): read %.1f GB/s; peak f32 %.0f GFLOP/s, bf16 %.0f, int8 %.0f GOP/s\n",
               bw, peak[0], peak[1], peak[2]);
        printf("%-12s %6s | %9s %9s | %8s %8s %6s | %8s %6s | %5s %8s %6s\n", "work", "tokens", "ms/step", "tok/s",
               "GB/s_w", "GB/s_rd", "%bw", "GFLOP/s", "%peak", "%mm", "GF/s_mm", "%pk_mm");
    }
    double decode1_bw = -1, decode32_gemm = -1, prefill128_gemm = -1, decode32_mm = -1, prefill128_mm = -1;
    for (int phase = 0; phase < 2; phase++) {
        const int nlist = phase == 0 ? o.n_decode : o.n_prefill;
        for (int k = 0; k < nlist; k++) {
            const int n = phase == 0 ? o.decode[k] : o.prefill[k];
            for (int t = 0; t < n; t++) {
                pos[t] = phase == 0 ? o.context : t;
                slot[t] = phase == 0 ? t : 0;
                want[t] = phase == 0 || t == n - 1;
            }
            model_batch b = {n, tok, pos, slot, want};
            const bench_meas me = bench_time(&m, &d, &b, logits, o.seconds, rd, bw, threads, streamed);
            const double s = me.step, smm = me.mm;
            const int n_logits = phase == 0 ? n : 1;
            const double flops = 2.0 * (layer_params * n + (params - layer_params) * n_logits);
            const double gbs = streamed / s / 1e9, gf = flops / s / 1e9;
            const double fbw = me.bw_frac, fpk = limit_flops > 0 ? gf / limit_flops : 0;
            const double gfm = smm > 0 ? flops / smm / 1e9 : 0, fpm = limit_flops > 0 ? gfm / limit_flops : 0;
            if (phase == 0 && n == 1) decode1_bw = fbw;
            if (phase == 0 && n == 32) decode32_gemm = fpk, decode32_mm = fpm;
            if (phase == 1 && n == 128) prefill128_gemm = fpk, prefill128_mm = fpm;
            if (root) {
                char work[32];
                snprintf(work, sizeof(work), phase == 0 ? "decode B=%d" : "prefill %d", n);
                printf("%-12s %6d | %9.2f %9.1f | %8.1f %8.1f %6.1f | %8.1f %6.1f | %5.1f %8.1f %6.1f\n", work, n,
                       s * 1e3, n / s, gbs, me.read, 100 * fbw, gf, 100 * fpk, 100 * me.mm_frac, gfm, 100 * fpm);
                fflush(stdout);
            }
        }
    }
    if (root) {
        printf("decode_bw_fraction=%.3f gemm_fraction=%.3f matmul_fraction=%.3f\n", decode1_bw,
               bench_smaller(decode32_gemm, prefill128_gemm), bench_smaller(decode32_mm, prefill128_mm));
    }
    free(logits), free(tok), free(pos), free(slot), free(want);
    kern_reader_free(rd);
    model_free(&m);
    mfile_close(f);
    free(path);
    dist_ctx_free(&d);
    return 0;
}
