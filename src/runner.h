/* runner: the subcommands that run a model over the grid (generate, score) and info.
 * World rank 0 reads prompts, tokenizes, schedules, samples and writes; every rank runs
 * its share of each forward pass. */
#ifndef MPILLAMA_RUNNER_H
#define MPILLAMA_RUNNER_H

int runner_generate_main(int argc, char **argv);
int runner_score_main(int argc, char **argv);
int runner_info_main(int argc, char **argv);

#endif
