/* Chat templates: recognition by marker tokens, formatting by string
 * concatenation. */
#include "longattn_model.h"

#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>

static const char CHATML_MARK[] = "<|im_start|>";
static const char LLAMA3_MARK[] = "<|start_header_id|>";
static const char CHATML_SYSTEM_OPEN[] = "<|im_start|>system";
static const char CHATML_END[] = "<|im_end|>";

/* memmem without relying on _GNU_SOURCE. */
static const char *find_bytes(const char *hay, size_t hay_len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; n <= hay_len && i <= hay_len - n; i++)
        if (!memcmp(hay + i, needle, n)) return hay + i;
    return NULL;
}

/* A ChatML template that writes a fixed system turn when none is given
 * carries it as a literal: <|im_start|>system, a newline (a real one, or the
 * two characters \n inside a Jinja string), the text, <|im_end|>. The text is
 * taken only when it is plain (no Jinja expression or quote inside), so a
 * template that prints message['content'] there yields no default. */
static la_status chatml_default_system(const char *src, size_t len, char **out) {
    *out = NULL;
    const char *p = find_bytes(src, len, CHATML_SYSTEM_OPEN);
    if (!p) return LA_OK;
    p += strlen(CHATML_SYSTEM_OPEN);
    const char *end = src + len;
    if (p < end && *p == '\n') p++;
    else if (end - p >= 2 && p[0] == '\\' && p[1] == 'n') p += 2;
    else return LA_OK;
    const char *stop = find_bytes(p, (size_t)(end - p), CHATML_END);
    if (!stop || stop == p) return LA_OK;
    for (const char *c = p; c < stop; c++)
        if (*c == '{' || *c == '}' || *c == '\'' || *c == '"' || *c == '\\' || *c == '\n') return LA_OK;
    size_t n = (size_t)(stop - p);
    char *text = malloc(n + 1);
    if (!text) return la_fail(LA_ERR_NOMEM, "chat template: no memory for the default system prompt");
    memcpy(text, p, n);
    text[n] = 0;
    *out = text;
    return LA_OK;
}

la_status la_chat_template_parse(const char *source, size_t len, la_chat_template *out) {
    if (!out) return la_fail(LA_ERR_NULL, "la_chat_template_parse: out is NULL");
    *out = (la_chat_template){0};
    if (!source) return la_fail(LA_ERR_NULL, "la_chat_template_parse: source is NULL");
    if (find_bytes(source, len, CHATML_MARK)) {
        out->style = LA_CHAT_CHATML;
        la_status st = chatml_default_system(source, len, &out->default_system);
        if (st) return st;
    } else if (find_bytes(source, len, LLAMA3_MARK)) {
        out->style = LA_CHAT_LLAMA3;
    } else {
        return la_fail(LA_ERR_UNSUPPORTED,
                       "chat template is neither ChatML (%s) nor Llama-3 (%s); use raw prompts", CHATML_MARK,
                       LLAMA3_MARK);
    }
    return la_succeed();
}

la_status la_chat_template_of_gguf(const la_gguf *g, la_chat_template *out) {
    if (!out) return la_fail(LA_ERR_NULL, "la_chat_template_of_gguf: out is NULL");
    *out = (la_chat_template){0};
    if (!g) return la_fail(LA_ERR_NULL, "la_chat_template_of_gguf: g is NULL");
    la_gguf_str s;
    if (la_gguf_get_str(g, "tokenizer.chat_template", &s) != LA_OK)
        return la_fail(LA_ERR_UNSUPPORTED, "the model has no string tokenizer.chat_template; use raw prompts");
    return la_chat_template_parse(s.data, (size_t)s.len, out);
}

void la_chat_template_free(la_chat_template *t) {
    if (!t) return;
    free(t->default_system);
    t->default_system = NULL;
}

la_status la_chat_format(const la_chat_template *t, const char *system, const char *user, char **text, size_t *len) {
    if (!text) return la_fail(LA_ERR_NULL, "la_chat_format: text is NULL");
    *text = NULL;
    if (!t || !user) return la_fail(LA_ERR_NULL, "la_chat_format: %s is NULL", !t ? "template t" : "user");
    if (!system) system = t->default_system;
    const char *sys_open, *sys_close, *user_open, *user_close, *assistant_open;
    switch (t->style) {
    case LA_CHAT_CHATML:
        sys_open = "<|im_start|>system\n";
        sys_close = user_close = "<|im_end|>\n";
        user_open = "<|im_start|>user\n";
        assistant_open = "<|im_start|>assistant\n";
        break;
    case LA_CHAT_LLAMA3:
        sys_open = "<|start_header_id|>system<|end_header_id|>\n\n";
        sys_close = user_close = "<|eot_id|>";
        user_open = "<|start_header_id|>user<|end_header_id|>\n\n";
        assistant_open = "<|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    default: return la_fail(LA_ERR_ARGUMENT, "la_chat_format: unknown chat style %d", (int)t->style);
    }
    const char *parts[] = {system ? sys_open : "", system ? system : "", system ? sys_close : "",
                           user_open, user, user_close, assistant_open};
    size_t total = 1;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]);
        if (total + n < total) return la_fail(LA_ERR_OVERFLOW, "la_chat_format: prompt length overflows size_t");
        total += n;
    }
    char *buf = malloc(total), *p = buf;
    if (!buf) return la_fail(LA_ERR_NOMEM, "la_chat_format: no memory for a %zu-byte prompt", total);
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]);
        memcpy(p, parts[i], n);
        p += n;
    }
    *p = 0;
    *text = buf;
    if (len) *len = (size_t)(p - buf);
    return la_succeed();
}
