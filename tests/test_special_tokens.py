"""Special tokens written in prompt text: by default `generate` parses them to their ids (as
Hugging Face tokenizers and vLLM do for prompts), a text that starts with BOS gets no second BOS,
and --special-as-text keeps them as plain text."""
import os

import common

args = common.parse_args()
common.need_shared(args, "models/stories260K.bin", "models/tok512.bin")
w = args.work
model = os.path.join(w, "m.h5")
common.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"),
            "--tokenizer", os.path.join(args.shared, "models/tok512.bin"), "-o", model])
rows = [{"custom_id": "text", "prompt": "<s>Once upon", "max_tokens": 20, "temperature": 0},
        {"custom_id": "ids", "prompt_ids": [1, 403, 407], "max_tokens": 20, "temperature": 0},
        {"custom_id": "mid", "prompt": "Once</s> upon", "max_tokens": 5, "temperature": 0}]
common.write_jsonl(os.path.join(w, "p.jsonl"), rows)


def gen(out, *extra):
    common.mpirun(args, 1, ["generate", "--model", model, "--prompts", os.path.join(w, "p.jsonl"),
                            "--output", os.path.join(w, out)] + list(extra))
    return {r["custom_id"]: r for r in common.read_jsonl(os.path.join(w, out))}


parsed = gen("parsed.jsonl")
if parsed["text"]["prompt_tokens"] != 3:
    common.fail("'<s>Once upon' is %d prompt tokens, expected 3 (BOS parsed, not doubled)" % parsed["text"]["prompt_tokens"])
if parsed["text"]["completion_ids"] != parsed["ids"]["completion_ids"]:
    common.fail("'<s>Once upon' and prompt_ids [1, 403, 407] differ: %s vs %s"
                % (parsed["text"]["completion_ids"], parsed["ids"]["completion_ids"]))
plain = gen("plain.jsonl", "--special-as-text")
if plain["text"]["prompt_tokens"] <= 3:
    common.fail("--special-as-text: '<s>Once upon' is %d tokens, expected '<s>' spelled as text" % plain["text"]["prompt_tokens"])
if plain["mid"]["prompt_tokens"] <= parsed["mid"]["prompt_tokens"]:
    common.fail("--special-as-text: 'Once</s> upon' should take more tokens as text (%d) than parsed (%d)"
                % (plain["mid"]["prompt_tokens"], parsed["mid"]["prompt_tokens"]))
print("PASS: special tokens parsed by default (3 tokens, same completion as the ids), text with --special-as-text (%d tokens)"
      % plain["text"]["prompt_tokens"])
