/* Tokenizers read from GGUF metadata: byte-level BPE (tokenizer.ggml.model =
 * "gpt2", pre-tokenised with PCRE2 by the regex tokenizer.ggml.pre names) and
 * SentencePiece-style ("llama", with scores). */
#ifndef LA_TOKENIZER_H
#define LA_TOKENIZER_H

#include "gguf.h"

typedef struct la_tokenizer la_tokenizer;

la_status la_tokenizer_from_gguf(const la_gguf *g, la_tokenizer **out);
void la_tokenizer_free(la_tokenizer *t);

int32_t la_tokenizer_vocab_size(const la_tokenizer *t);
int32_t la_tokenizer_bos(const la_tokenizer *t);   /* -1 if none */
int32_t la_tokenizer_eos(const la_tokenizer *t);   /* -1 if none */
bool la_tokenizer_add_bos(const la_tokenizer *t);  /* tokenizer.ggml.add_bos_token, or the model's default */
/* True for tokens that end generation (eos, eot, <|im_end|>, <|eot_id|> ...). */
bool la_tokenizer_is_eog(const la_tokenizer *t, int32_t id);
/* Id of a token by its exact text (e.g. "<|im_start|>"), or -1. */
int32_t la_tokenizer_find(const la_tokenizer *t, const char *text);

/* Encode UTF-8 (or arbitrary bytes) into *ids (malloc'd, caller frees).
 * parse_special: text like "<|im_start|>" becomes its special token. */
la_status la_tokenize(const la_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                      int32_t **ids, int64_t *n);

/* Bytes one token decodes to (for streaming); special tokens give their text
 * only when render_special. Returns the length written (<= cap), or the
 * length needed if larger than cap. */
int64_t la_token_to_bytes(const la_tokenizer *t, int32_t id, bool render_special, char *buf, int64_t cap);
/* Whole sequence to bytes (malloc'd, NUL-terminated, caller frees). */
la_status la_detokenize(const la_tokenizer *t, const int32_t *ids, int64_t n, bool render_special, char **text,
                        size_t *len);

#endif
