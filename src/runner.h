/* runner: the subcommands that run a model over the grid (generate, score). World rank 0 reads
 * prompts (intake), schedules and samples (sched) and writes records (writer); every rank runs its
 * share of each forward pass (stage). */
#ifndef MPILLAMA_RUNNER_H
#define MPILLAMA_RUNNER_H

int runner_generate_main(int argc, char **argv);
int runner_score_main(int argc, char **argv);

#endif
