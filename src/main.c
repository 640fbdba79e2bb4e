/* mpillama: Llama inference as an MPI batch job. One binary, subcommands. */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "convert.h"
#include "dist.h"
#include "machine.h"
#include "info.h"
#include "runner.h"
#include "synth.h"
#include "tokenize_cmd.h"
#include "util.h"

static void usage(FILE *out) {
    fprintf(out,
            "mpillama %s: Llama inference as an MPI batch job\n"
            "usage: mpillama COMMAND [options]   (mpirun -n N mpillama COMMAND ... for N ranks)\n"
            "commands:\n"
            "  convert SRC -o M.h5 [--tokenizer FILE]   llama2.c .bin or Hugging Face dir -> model file\n"
            "  generate --model M.h5 --prompts IN --output OUT.jsonl [options]   completions\n"
            "  score --model M.h5 --prompts IN --output OUT.jsonl [options]      teacher-forced log-probs\n"
            "  info M.h5 [--plan --pp P --tp T]        config, tensors, per-rank plan\n"
            "  synth --shape NAME -o M.h5 [--layers N] [--seed S]   random weights in a model's shapes\n"
            "  machine                                 this node's memory bandwidth and sgemm GFLOP/s (JSON)\n"
            "  bench [--shape NAME | --model M.h5] [--dtype T]   forward pass against the machine's limits\n"
            "  tokenize (--model M.h5 | --tokenizer FILE) [options]   JSON lines: text <-> ids\n"
            "  version\n"
            "'mpillama COMMAND --help' lists a command's options.\n",
            MPILLAMA_VERSION);
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int rc;
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "convert")) { /* serial: rank 0 converts, the others wait for its status */
        rc = util_rank() == 0 ? convert_main(argc - 1, argv + 1) : 0;
        dist_world_bcast_int(&rc);
    }
    else if (!strcmp(cmd, "generate")) rc = runner_generate_main(argc - 1, argv + 1);
    else if (!strcmp(cmd, "score")) rc = runner_score_main(argc - 1, argv + 1);
    else if (!strcmp(cmd, "info")) rc = info_main(argc - 1, argv + 1);
    else if (!strcmp(cmd, "machine")) rc = machine_main(argc - 1, argv + 1);
    else if (!strcmp(cmd, "tokenize")) rc = tokenize_main(argc - 1, argv + 1); /* serial: rank 0 only */
    else if (!strcmp(cmd, "synth")) rc = synth_main(argc - 1, argv + 1); /* collective: every rank writes */
    else if (!strcmp(cmd, "bench")) rc = bench_main(argc - 1, argv + 1); /* collective */
    else if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("mpillama %s\n", MPILLAMA_VERSION);
        rc = 0;
    } else if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        rc = 0;
    } else {
        if (util_rank() == 0) {
            if (*cmd) error("unknown command '%s'", cmd);
            usage(stderr);
        }
        rc = 2;
    }
    dist_finalize();
    return rc;
}
