/* tokenize_cmd: `mpillama tokenize`, the tokenizer as a filter over JSON lines. */
#ifndef MPILLAMA_TOKENIZE_CMD_H
#define MPILLAMA_TOKENIZE_CMD_H

/* `mpillama tokenize (--model M.h5 | --tokenizer FILE) [--no-bos] [--decode] [--allow-special]
 * [--chat-template NAME] [--bench FILE]`: reads JSON lines from stdin and writes each with
 * "ids" added ({"text": ...}, or {"messages": [...]} rendered with the chat template), or with
 * --decode "text" added ({"ids": [...]}). Runs on world rank 0 only; other ranks return 0. */
int tokenize_main(int argc, char **argv);

#endif
