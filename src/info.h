/* info: `mpillama info M.h5 [--plan --pp P --tp T]`: config, tokenizer, tensors, per-rank plan */
#ifndef MPILLAMA_INFO_H
#define MPILLAMA_INFO_H

int info_main(int argc, char **argv);

#endif
