/* runner: the subcommands that run a model over the grid (generate, score). World rank 0 reads
 * prompts (intake), schedules and samples (sched) and writes records (writer); every rank runs its
 * share of each forward pass (stage). */
#ifndef MPILLAMA_RUNNER_H
#define MPILLAMA_RUNNER_H

/* exit codes of generate and score besides 0 (every request completed), 1 (the job failed) and 2
 * (usage): the job finished but some requests have error records; interrupted by a signal
 * (rerun with --resume). docs/FAILURES.md lists them all. */
enum { RUN_EXIT_SOME_FAILED = 3, RUN_EXIT_INTERRUPTED = 75 };

int runner_generate_main(int argc, char **argv);
int runner_score_main(int argc, char **argv);

#endif
