/* modelcheck: the model file checked whole on world rank 0 before the job starts, so that a bad
 * file ends every rank alike with one line and no MPI abort (docs/DRIVER.md, "Start-up order").
 * What the load would find before it reads a weight is found here first: the superblock against
 * the file's size, the format and version, every config attribute, the stored layers, every
 * tensor's shape and type, the tokenizer (built, and against the vocabulary). */
#ifndef MPILLAMA_MODELCHECK_H
#define MPILLAMA_MODELCHECK_H

/* opens path alone (MPI_COMM_SELF) and checks it; 0, or -1 after one line naming the file and
 * the fault. Touches no other rank. */
int modelcheck_file(const char *path);

#endif
