/* runner: generate and score, wired together. Every rank parses the options and loads its share
 * of the model; world rank 0 runs the intake (prompt file to requests), the scheduler of the one
 * replica and the writer (records); the other ranks follow the micro-batches (stage.c). See
 * docs/DRIVER.md for the module map. */
#include "runner.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "affinity.h"
#include "dist.h"
#include "dtype.h"
#include "intake.h"
#include "mfile.h"
#include "model.h"
#include "modelcheck.h"
#include "plan.h"
#include "replica.h"
#include "report.h"
#include "run_opts.h"
#include "scheduler.h"
#include "stage.h"
#include "tokenizer.h"
#include "trace.h"
#include "util.h"
#include "writer.h"

/* ------------------------------------------------------------------ grid */

/* this node's memory in bytes (0 when unknown) */
static int64_t node_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size : 0;
}

/* fills dp/pp/tp from the options or the default (plan_default: the smallest replica that fits
 * a node, as many replicas as the ranks allow); rank 0 decides, every rank gets its answer.
 * Returns 0, or -1 after rank 0 printed why */
static int choose_layout(const model_config *c, dist_ctx *d, run_opts *o, int seq_len) {
    int v[4] = {0, 0, 0, 0}; /* dp, pp, tp, ok */
    if (d->world_rank == 0) {
        int world = d->world_size, dp = o->dp, pp = o->pp, tp = o->tp;
        char why[256] = "", valid[1024];
        if (!dp && !pp && !tp) {
            int64_t mem = node_memory();
            if (plan_default(c, world, d->node_size, mem ? mem : INT64_MAX / 2, seq_len, o->batch, o->micro_batches, &dp,
                             &pp, &tp) != 0)
                warning("no replica of this model fits a node's memory (%.1f GiB) with --batch %d x --max-seq-len %d; "
                        "running one replica --pp %d --tp %d",
                        mem / 1073741824.0, o->batch, seq_len, pp, tp);
        } else if (!pp && !tp) { /* --dp D: replicas of world / D ranks, tp inside a node first */
            int r = world % dp ? 0 : world / dp;
            tp = r < d->node_size ? r : d->node_size;
            while (tp > 1 && (r % tp || plan_check_grid(c, r / tp, tp, why, sizeof(why)) != 0)) tp--;
            pp = tp ? r / tp : 0;
        } else {
            int given = (pp ? pp : 1) * (tp ? tp : 1) * (dp ? dp : 1), rest = world % given ? 0 : world / given;
            if (!pp && !tp) pp = tp = 1;
            if (!dp && pp && tp) dp = rest; /* --pp P --tp T on more ranks: replicas of P x T */
            else if (!dp) dp = 1, pp = pp ? pp : rest, tp = tp ? tp : rest;
            else if (!pp) pp = rest;
            else if (!tp) tp = rest;
        }
        why[0] = 0;
        if (dp < 1 || pp < 1 || tp < 1 || dp * pp * tp != world) { /* what was asked, as asked */
            char asked[96] = "";
            int n = 0, prod = 1, nflags = !!o->dp + !!o->pp + !!o->tp;
            const int given[3] = {o->dp, o->pp, o->tp};
            static const char *const flag[3] = {"dp", "pp", "tp"};
            for (int k = 0; k < 3; k++)
                if (given[k]) n += snprintf(asked + n, sizeof(asked) - (size_t)n, "%s--%s %d", n ? " " : "", flag[k], given[k]),
                              prod *= given[k];
            if (nflags == 1) snprintf(why, sizeof(why), "%s does not divide the %d ranks launched", asked, world);
            else if (nflags == 3 || prod > world) snprintf(why, sizeof(why), "%s makes %d ranks, not the %d launched", asked, prod, world);
            else snprintf(why, sizeof(why), "%s makes %d ranks, which do not divide the %d launched", asked, prod, world);
        } else {
            plan_check_grid(c, pp, tp, why, sizeof(why));
        }
        if (why[0]) {
            char layouts[1024];
            plan_list_valid(c, world, valid, sizeof(valid));
            plan_list_layouts(c, world, layouts, sizeof(layouts));
            error("impossible grid: %s; valid grids for this model on %d ranks: %s; with replicas: %s", why, world, valid,
                  layouts);
        } else {
            v[0] = dp, v[1] = pp, v[2] = tp, v[3] = 1;
        }
    }
    dist_bcast(d, v, sizeof(v), 0);
    if (!v[3]) return -1;
    o->dp = v[0];
    o->pp = v[1];
    o->tp = v[2];
    return 0;
}

/* ------------------------------------------------------------------ signals */

/* SIGTERM (Slurm's warning before the time limit) and SIGUSR1 (what mpirun forwards): stop
 * taking new prompts, finish in-flight ones within --grace, record the rest as interrupted */
static volatile sig_atomic_t g_stop_signal = 0;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

/* the model file can be read and is an HDF5 file: checked on rank 0 first, so that the common
 * mistakes end every rank alike, without an abort */
static int check_model_file(const char *path) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    struct stat st;
    if (stat(path, &st) != 0 || access(path, R_OK) != 0) return error("cannot open model '%s': %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return error("cannot open model '%s': it is a folder (convert it with 'mpillama convert')", path);
    FILE *f = fopen(path, "rb");
    if (!f) return error("cannot open model '%s': %s", path, strerror(errno));
    int found = 0;
    for (long at = 0; at <= (1L << 20) && !found; at = at ? at * 2 : 512) { /* the superblock follows a user block */
        unsigned char b[8];
        found = fseek(f, at, SEEK_SET) == 0 && fread(b, 1, 8, f) == 8 && !memcmp(b, sig, 8);
    }
    fclose(f);
    if (!found) return error("'%s' is not an HDF5 file (convert a checkpoint with 'mpillama convert')", path);
    return 0;
}

/* the --trace folder exists or is made now (its parent must exist); 0 or -1 after printing why */
static int check_trace_dir(const char *dir) {
    struct stat st;
    if (!dir) return 0;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return error("--trace '%s' is not a folder", dir);
        if (access(dir, W_OK | X_OK) != 0) return error("--trace folder '%s' is not writable", dir);
        return 0;
    }
    if (mkdir(dir, 0777) != 0) return error("cannot create trace folder '%s': %s", dir, strerror(errno));
    return 0;
}

/* ------------------------------------------------------------------ the local job (world rank 0) */

/* world rank 0's side of a job: the intake feeds the scheduler, the writer takes its results */
typedef struct {
    intake in;
    writer w;
    replica_hub hub;  /* dp > 1: the other replicas' requests and results */
    int has_hub;
} job;

static int job_next(void *ctx, intake_request *rq) {
    job *j = ctx;
    char why[256];
    int item;
    for (;;) {
        intake_status st = intake_next(&j->in, rq, &item, why, sizeof(why));
        if (st != INTAKE_ERROR) return st == INTAKE_READY;
        writer_error(&j->w, item, why);
    }
}

static int job_more(void *ctx) { return intake_more(&((job *)ctx)->in); }

static void job_result(void *ctx, const sched_result *r) { writer_result(&((job *)ctx)->w, r); }

static void job_tick(void *ctx, const sched_stats *st) {
    job *j = ctx;
    sched_stats all = *st;
    if (j->has_hub) {
        replica_hub_poll(&j->hub);
        replica_hub_total(&j->hub, st, &all);
    }
    writer_progress(&j->w, intake_total(&j->in), &all, 0);
}

/* ------------------------------------------------------------------ setup */

typedef struct {
    dist_ctx d;
    mfile *f;
    model_config cfg;
    plan_grid grid;
    model m;
    tokenizer *tok; /* world rank 0, when the file has one */
    int threads;    /* BLAS threads of this rank */
    double load_gbs; /* weight bytes of all ranks / the slowest rank's load time */
} run_setup;

/* once, on rank 0: ranks the launcher bound to fewer cores than their share of the node */
static void warn_narrow_binding(dist_ctx *d, const affinity_info *aff) {
    int narrow = affinity_narrow(aff);
    int n = (int)dist_sum_int64(d, narrow);
    int fewest = (int)-dist_max_double(d, narrow ? -aff->cores : -1e9);
    int fair = (int)dist_max_double(d, aff->fair_cores);
    if (n == 0 || d->world_rank != 0) return;
    char hint[640];
    affinity_narrow_hint(hint, sizeof(hint), n, d->world_size, fair, fewest);
    warning("%s", hint);
}

/* opens the model, picks the grid, loads every rank's share; -1 when the grid is impossible */
static int setup(run_setup *su, run_opts *o) {
    dist_ctx_init(&su->d);
    affinity_info aff;
    affinity_bind(su->d.node_rank, su->d.node_size, &aff);
    su->threads = aff.threads;
    warn_narrow_binding(&su->d, &aff);
    if (o->verbose) /* the binding map, one line per rank, in rank order */
        for (int r = 0; r < su->d.world_size; r++) {
            if (r == su->d.world_rank)
                fprintf(stderr, "mpillama: rank %d (node rank %d of %d): cores %s (%d), %d BLAS threads%s\n", r,
                        su->d.node_rank, su->d.node_size, aff.cpuset, aff.cores, aff.threads,
                        aff.kept_existing ? ", binding kept from the launcher" : "");
            dist_barrier(&su->d);
        }
    su->f = mfile_open(o->model, su->d.world);
    mfile_read_config(su->f, &su->cfg);
    if (o->kv_dtype >= 0) su->cfg.kv_dtype = o->kv_dtype;
    int seq_len = run_opts_seq_len(o, su->cfg.max_seq_len);
    if (seq_len > su->cfg.max_seq_len) seq_len = su->cfg.max_seq_len;
    su->tok = NULL;
    mfile_tokenizer mt;
    int has_tok = mfile_read_tokenizer(su->f, &mt); /* collective */
    if (has_tok && mt.n != su->cfg.vocab_size)
        die("'%s': tokenizer has %d pieces, vocab_size is %d", o->model, mt.n, su->cfg.vocab_size);
    if (choose_layout(&su->cfg, &su->d, o, seq_len) != 0) {
        if (has_tok) mfile_tokenizer_free(&mt);
        mfile_close(su->f);
        dist_ctx_free(&su->d);
        return -1;
    }
    dist_grid_init_dp(&su->d, o->dp, o->pp, o->tp);
    plan_make_dp(&su->grid, &su->cfg, o->dp, o->pp, o->tp);
    if (has_tok) { /* rank 0 (the intake) and every replica's scheduler (stop strings, text) */
        if (su->d.world_rank == 0 || (su->d.stage == 0 && su->d.tp_rank == 0)) su->tok = tok_init(&mt);
        mfile_tokenizer_free(&mt);
    }
    double t0 = util_now();
    model_load(&su->m, su->f, &su->cfg, &su->grid, &su->d);
    double t_load = dist_max_double(&su->d, util_now() - t0);
    int64_t *bytes = su->d.world_rank == 0 ? xmalloc(sizeof(int64_t) * su->d.world_size) : NULL;
    dist_gather_int64(&su->d, su->m.bytes_read, bytes, 0);
    int64_t in_place = dist_sum_int64(&su->d, su->m.bytes_in_place), copied = dist_sum_int64(&su->d, su->m.bytes_copied);
    su->load_gbs = 0;
    if (su->d.world_rank == 0) {
        int64_t total = 0;
        for (int r = 0; r < su->d.world_size; r++) total += bytes[r];
        su->load_gbs = t_load > 0 ? total / t_load / 1e9 : 0;
        fprintf(stderr, "mpillama: %d ranks on %d node(s), layout --dp %d --pp %d --tp %d; loaded %.2f MiB of weights in %.2f s "
                        "(%.2f GB/s, %.2f GB/s per rank, %.0f%% used in place, %.0f%% copied to own memory)\n",
                su->d.world_size, su->d.n_nodes, o->dp, o->pp, o->tp, total / 1048576.0, t_load, su->load_gbs,
                su->load_gbs / su->d.world_size, total ? 100.0 * in_place / total : 0.0,
                total ? 100.0 * copied / total : 0.0);
        if (o->verbose)
            for (int r = 0; r < su->d.world_size; r++) {
                plan_rank pr;
                plan_rank_share(&su->grid, &su->cfg, r, &pr);
                fprintf(stderr, "mpillama: rank %d stage %d tp %d: layers %d-%d, heads %d-%d, kv heads %d-%d, ffn %d-%d, "
                                "bytes read %lld (plan %lld)\n",
                        r, pr.stage, pr.tp_rank, pr.layer0, pr.layer0 + pr.n_layers_local - 1, pr.head0,
                        pr.head0 + pr.n_heads_local - 1, pr.kv_head0, pr.kv_head0 + pr.n_kv_local - 1, pr.hidden0,
                        pr.hidden0 + pr.hidden_local - 1, (long long)bytes[r], (long long)pr.weight_bytes);
            }
    }
    free(bytes);
    return 0;
}

static void teardown(run_setup *su) {
    if (su->tok) tok_free(su->tok);
    model_free(&su->m);
    mfile_close(su->f);
    dist_ctx_free(&su->d);
}

/* gathers every rank's totals (and spans) to rank 0 and writes summary.json / trace.json */
static void write_reports(run_setup *su, const run_opts *o, const report_run *run, int threads, double wall) {
    report_rank me;
    memset(&me, 0, sizeof(me));
    me.wall_s = wall;
    me.rank = su->d.world_rank;
    me.stage = su->d.stage;
    me.tp_rank = su->d.tp_rank;
    me.replica = su->d.replica;
    me.bytes_sampling = su->d.bytes_sampling;
    me.bytes_ctrl = su->d.bytes_ctrl;
    me.weight_share = su->m.share.weight_bytes;
    me.threads = threads;
    me.bytes_allreduce = su->d.bytes_allreduce;
    me.bytes_p2p = su->d.bytes_p2p;
    me.bytes_gather = su->d.bytes_gather;
    me.weight_bytes = su->m.bytes_read;
    me.kv_bytes = su->m.kv_bytes;
    report_rank_fill(&me);
    int nsp, dropped;
    const trace_span *sp = trace_spans(&nsp, &dropped);
    me.n_spans = nsp;
    me.dropped = dropped;
    int W = su->d.world_size;
    char *all = NULL, *spans = NULL;
    int64_t *sizes = xmalloc(sizeof(int64_t) * W);
    dist_gather_bytes(&su->d, &me, sizeof(me), &all, sizes);
    dist_gather_bytes(&su->d, sp, (int64_t)sizeof(trace_span) * nsp, &spans, sizes);
    if (su->d.world_rank == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/summary.json", o->trace_dir);
        report_write_summary(path, run, (report_rank *)all, W);
        if (o->trace_level != TRACE_LEVEL_SUMMARY) {
            snprintf(path, sizeof(path), "%s/trace.json", o->trace_dir);
            report_write_trace(path, (report_rank *)all, W, (trace_span *)spans);
        }
        fprintf(stderr, "mpillama: wrote %s/summary.json%s\n", o->trace_dir,
                o->trace_level != TRACE_LEVEL_SUMMARY ? " and trace.json" : "");
    }
    free(all);
    free(spans);
    free(sizes);
}

static int run_main(const char *cmd, int argc, char **argv) {
    run_opts o;
    int rc = run_opts_parse(cmd, argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART; /* a write blocked when the signal comes goes on; the stop is graceful */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    /* rank 0 checks its inputs and outputs before any weight is read; nothing is written yet,
     * and every rank ends with the same code */
    job j;
    memset(&j, 0, sizeof(j));
    int bad = 0;
    if (util_rank() == 0) {
        double t0 = trace_now();
        bad = check_model_file(o.model) != 0 || modelcheck_file(o.model) != 0 || intake_init(&j.in, &o) != 0 ||
              outfile_check(o.output, o.resume, o.overwrite) != 0 ||
              check_trace_dir(o.trace_dir) != 0;
        trace_end(TN_IO, TRACE_IO, t0, -1);
    }
    dist_world_bcast_int(&bad);
    if (bad) {
        intake_free(&j.in);
        return 1;
    }

    run_setup su;
    double t_load0 = util_now();
    if (setup(&su, &o) != 0) {
        intake_free(&j.in);
        return 1;
    }
    const model_config *c = &su.cfg;
    int seq_len = run_opts_seq_len(&o, c->max_seq_len);
    if (seq_len > c->max_seq_len) {
        if (su.d.world_rank == 0) warning("--max-seq-len %d exceeds the model's context %d; using %d", seq_len, c->max_seq_len, c->max_seq_len);
        seq_len = c->max_seq_len;
    }
    const int T = o.prefill_chunk + o.batch; /* tokens per micro-batch */
    int requests = su.d.world_rank == 0 ? j.in.n_items / su.d.dp : 0; /* about a replica's share */
    dist_world_bcast_int(&requests);
    int M = o.micro_batches ? o.micro_batches : plan_micro_batches(su.d.pp, o.batch, requests);
    if (M > DIST_RING - 1) M = DIST_RING - 1;
    /* --batch sequences in each micro-batch: with pp > 1 every stage still computes --batch rows
     * at once (kernels slow down on fewer), and M x --batch are in flight (KV slots) */
    const int slots = plan_slots(o.batch, M, su.d.pp);
    check(slots > 0, "--batch %d x %d micro-batches: more KV slots than can be addressed; lower --batch", o.batch, M);
    model_alloc_state(&su.m, slots, seq_len, T);
    double load_s = util_now() - t_load0;
    int64_t kv = dist_sum_int64(&su.d, su.m.kv_bytes);
    if (su.d.world_rank == 0 && o.verbose)
        fprintf(stderr, "mpillama: %s weights; %s KV cache %.2f MiB in all (%d slots x %d positions); %d micro-batch(es) "
                        "of up to %d tokens\n", kern_dtype_name(dtype_main(c)), kern_dtype_name((kern_dtype)c->kv_dtype),
                kv / 1048576.0, slots, seq_len, M, T);

    /* buffers: a message in, per micro-batch a message out and the sampled tokens (or log-probs) */
    const int per_group = o.batch; /* sequences of a micro-batch at most */
    const int rows = o.mode == RUN_SCORE ? T : per_group;
    const int is_scheduler = su.d.stage == 0 && su.d.tp_rank == 0, is_hub = su.d.world_rank == 0;
    stage_bufs bufs;
    stage_bufs_init(&bufs, &su.d, &su.m, T, per_group, M, rows, o.mode == RUN_SCORE, is_scheduler);
    /* everything else checked: the output opens, under its lock (and may change) */
    if (su.d.world_rank == 0) {
        intake_set_model(&j.in, &su.cfg, su.tok, su.m.seq_len, o.resume ? &j.w.out : NULL);
        bad = writer_open(&j.w, &o, &j.in) != 0;
    }
    dist_bcast(&su.d, &bad, sizeof(int), 0);
    if (bad) {
        if (su.d.world_rank == 0) writer_close(&j.w);
        intake_free(&j.in);
        stage_bufs_free(&bufs);
        teardown(&su);
        return 1;
    }
    dist_barrier(&su.d);
    trace_start(o.trace_dir ? (trace_level)o.trace_level : TRACE_LEVEL_SUMMARY); /* spans and totals from here */
    double t_start = util_now();
    int interrupted = 0;
    sched s;
    memset(&s, 0, sizeof(s));
    sched_stats total = {0};
    replica_remote rem;
    memset(&rem, 0, sizeof(rem));
    if (!is_scheduler) {
        stage_follow(&su.d, &su.m, &bufs, &g_stop_signal);
    } else if (is_hub) { /* the intake and the writer, replica 0's scheduler, the other replicas' hub */
        writer_start(&j.w, j.in.items, t_start);
        if (su.d.dp > 1) {
            replica_hub_init(&j.hub, &su.d, &j.in, &j.w, &g_stop_signal);
            j.has_hub = 1;
            replica_hub_start(&j.hub);
        }
        sched_source src = {job_next, job_more, &j};
        sched_sink sink = {job_result, job_tick, &j};
        sched_init(&s, &o, &su.d, &su.m, su.tok, &bufs, M, T, t_start, src, sink, &g_stop_signal);
        interrupted = sched_run(&s);
        total = s.st;
        if (j.has_hub) {
            replica_hub_finish(&j.hub, &s.st);
            replica_hub_total(&j.hub, &s.st, &total);
            interrupted = interrupted || j.hub.interrupted || (g_stop_signal && intake_more(&j.in));
        }
        writer_progress(&j.w, intake_total(&j.in), &total, 1);
    } else { /* another replica's scheduler: requests from rank 0, results to it */
        replica_remote_init(&rem, &su.d, slots, &g_stop_signal);
        sched_init(&s, &o, &su.d, &su.m, su.tok, &bufs, M, T, t_start, replica_remote_source(&rem),
                   replica_remote_sink(&rem), &rem.stop);
        int cut = sched_run(&s);
        replica_remote_done(&rem, &s.st, cut);
    }
    double wall = util_now() - t_start, wall_rank = trace_now(); /* every span of this rank ended */
    /* the exit code every rank returns (runner.h); the last line: the counts and where they are */
    int code = 0;
    if (su.d.world_rank == 0) {
        code = interrupted ? RUN_EXIT_INTERRUPTED : j.w.out.errors > 0 ? RUN_EXIT_SOME_FAILED : 0;
        fprintf(stderr, "mpillama: %lld tokens in, %lld out in %.2f s; prefill %.1f tok/s, decode %.1f tok/s\n",
                (long long)total.tokens_in, (long long)total.tokens_out, wall,
                total.t_prefill > 0 ? total.tokens_in / total.t_prefill * su.d.dp : 0.0,
                total.t_decode > 0 ? total.tokens_out / total.t_decode * su.d.dp : 0.0);
        char where[4200]; /* where the records are: OpenAI's output keeps its errors in a file of their own */
        snprintf(where, sizeof(where), "'%s'", o.output);
        if (j.w.has_err) snprintf(where + strlen(where), sizeof(where) - strlen(where), " (errors in '%s')", j.w.err.path);
        fprintf(stderr, "mpillama: %d prompts: %d completed, %d error records, %d skipped (resume), %d interrupted, in %s; %s\n",
                j.in.n_items, j.w.completed, j.w.out.errors, j.in.skipped, j.w.out.interrupted, where,
                code == RUN_EXIT_INTERRUPTED ? "exit 75: interrupted, rerun with --resume to finish the rest"
                : code == RUN_EXIT_SOME_FAILED ? "exit 3: some requests failed, their error records say why (fix those "
                                                 "lines and rerun with --resume)"
                                               : "exit 0");
    }
    dist_bcast(&su.d, &code, sizeof(int), 0);
    if (o.trace_dir) {
        report_run run = {0};
        run.command = cmd;
        run.model_path = o.model;
        run.cfg = su.cfg;
        run.dp = su.d.dp;
        run.pp = su.d.pp;
        run.tp = su.d.tp;
        run.ranks = su.d.world_size;
        run.nodes = su.d.n_nodes;
        run.batch = slots;
        run.max_seq_len = seq_len;
        run.prefill_chunk = o.prefill_chunk;
        run.micro_batches = M;
        run.kv_dtype = c->kv_dtype;
        run.prompts_total = j.in.n_items;
        run.completed = j.w.completed;
        run.errors = j.w.out.errors;
        run.skipped = j.in.skipped;
        run.interrupted = j.w.out.interrupted;
        run.tokens_prompt = total.tokens_in;
        run.tokens_completion = total.tokens_out;
        run.wall_s = wall;
        run.load_s = load_s;
        run.load_gbs = su.load_gbs;
        run.first_token_s = s.st.t_first_token > 0 ? s.st.t_first_token - t_load0 : 0;
        run.prefill_s = total.t_prefill / su.d.dp; /* the replicas' times overlap: their mean */
        run.decode_s = total.t_decode / su.d.dp;
        write_reports(&su, &o, &run, su.threads, wall_rank);
    }
    if (is_hub) {
        writer_close(&j.w);
        intake_free(&j.in);
        if (j.has_hub) replica_hub_free(&j.hub);
    }
    if (is_scheduler) sched_free(&s);
    if (rem.d) replica_remote_free(&rem);
    stage_bufs_free(&bufs);
    teardown(&su);
    return code;
}

int runner_generate_main(int argc, char **argv) { return run_main("generate", argc, argv); }
int runner_score_main(int argc, char **argv) { return run_main("score", argc, argv); }
