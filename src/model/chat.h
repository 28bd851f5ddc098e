/* Chat prompts: recognise the template family named by a model's
 * tokenizer.chat_template metadata and format one system + user turn plus the
 * assistant header the model continues from. Not a Jinja interpreter: the
 * two families longattn knows are written out in chat.c. */
#ifndef LA_CHAT_H
#define LA_CHAT_H

#include "gguf.h"

typedef enum {
    LA_CHAT_CHATML = 1, /* <|im_start|>role\n...<|im_end|>\n   (SmolLM2, Qwen2) */
    LA_CHAT_LLAMA3 = 2, /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
} la_chat_style;

typedef struct {
    la_chat_style style;
    /* The system turn the template writes when the conversation has none
     * (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."), or NULL.
     * Owned; la_chat_template_free releases it. */
    char *default_system;
} la_chat_template;

/* Recognise a template's source text: "<|im_start|>" means ChatML,
 * "<|start_header_id|>" Llama-3. Anything else is LA_ERR_UNSUPPORTED. */
la_status la_chat_template_parse(const char *source, size_t len, la_chat_template *out);
/* The same, from the model's tokenizer.chat_template (LA_ERR_UNSUPPORTED
 * naming the key when it is absent). */
la_status la_chat_template_of_gguf(const la_gguf *g, la_chat_template *out);
void la_chat_template_free(la_chat_template *t);

/* Prompt text for one turn: system (NULL: the template's default, if any;
 * "" included as an empty turn), the user's message and the assistant header.
 * The BOS token is not written: tokenise with the tokenizer's add_bos, and
 * with parse_special so the markers become their special tokens.
 * *text is malloc'd and NUL-terminated; *len (may be NULL) excludes the NUL. */
la_status la_chat_format(const la_chat_template *t, const char *system, const char *user, char **text, size_t *len);

#endif
