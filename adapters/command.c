/*
 * Outbound commands (contract section 5): the validation of a command's JSON and the
 * splitting of a text over a channel's limit. Both are channel-neutral; what a channel
 * makes of a command is its adapter's plan / build_send.
 *
 * sb_command_parse is the one gate of both entries (XADD sb:out, and POST
 * /orgs/{org}/conversations/{id}/messages before it enqueues), so the engine and the
 * adapters rely on its rules instead of re-checking shapes. Every string is copied into the
 * caller's pool (NUL-terminated; jansson refuses \u0000, so none holds a NUL) and the jansson
 * document is freed before returning. Optional members given as JSON null count as absent
 * (callers serialize None/nil that way); an empty "reply_to" is absent too. Members of
 * "media" other than url, caption, file_name and the gateway's own upload and mime_type (a
 * file sent through the API, kept under that id) are ignored: only top-level members are
 * refused, as the contract's field list is about the command. Buttons are accepted with
 * every type but only a text sends them (on its last part). A "template" goes only with
 * type template; its components are checked for shape here (objects with a "type", their
 * "parameters" arrays) and against the synced template by the gateway before a send.
 *
 * sb_text_split walks whole UTF-8 sequences (jansson guarantees valid UTF-8; a malformed
 * sequence still counts as one character and is never cut), and cuts each chunk at the start
 * of the last whitespace run that begins within the limit, dropping that run; a chunk with
 * no such run (one long word) is cut at the last character that fits.
 */
#include <strings.h>
#include "meta.h"

#define COMMAND_ID_MAX 256

static const char *const command_types[] = {"text",     "image",    "audio",  "video",
                                            "document", "template", "typing", "read"};
static const char *const command_members[] = {"id",    "conversation_id", "type",    "text",
                                              "media", "reply_to",        "buttons", "template"};
#define TYPES_TEXT "text, image, audio, video, document, template, typing, read"
/* A template's name and language code are short words at Meta (512 and 15 bytes). */
#define TEMPLATE_NAME_MAX     512
#define TEMPLATE_LANGUAGE_MAX 32

/* Copies the JSON string 'v' into '*out' (pool). Absent and null leave '*out' absent.
 * Returns 0, or -1 when 'v' is of another type. */
static int get_str(h2o_mem_pool_t *pool, json_t *v, h2o_iovec_t *out)
{
    *out = h2o_iovec_init(NULL, 0);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = sb_pool_strdup(pool, json_string_value(v), json_string_length(v));
    return 0;
}

static int is_member_of(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; ++i) {
        if (strcmp(s, list[i]) == 0)
            return 1;
    }
    return 0;
}

/* True when 'url' is an absolute http(s) URL with a host and no space or control byte. */
static int url_valid(h2o_iovec_t url)
{
    size_t skip;

    if (url.len > 7 && strncasecmp(url.base, "http://", 7) == 0)
        skip = 7;
    else if (url.len > 8 && strncasecmp(url.base, "https://", 8) == 0)
        skip = 8;
    else
        return 0;
    if (url.base[skip] == '/' || url.base[skip] == '?' || url.base[skip] == '#')
        return 0;
    for (size_t i = 0; i < url.len; ++i) {
        unsigned char c = (unsigned char)url.base[i];
        if (c <= 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Reads "media" into 'cmd'. Returns NULL or the reason. */
static const char *parse_media(h2o_mem_pool_t *pool, json_t *media, sb_command_t *cmd)
{
    if (media == NULL || json_is_null(media))
        return NULL;
    if (!json_is_object(media))
        return "\"media\" must be an object";
    if (get_str(pool, json_object_get(media, "url"), &cmd->media.url) != 0)
        return "\"media.url\" must be a string";
    if (get_str(pool, json_object_get(media, "caption"), &cmd->media.caption) != 0)
        return "\"media.caption\" must be a string";
    if (get_str(pool, json_object_get(media, "file_name"), &cmd->media.file_name) != 0)
        return "\"media.file_name\" must be a string";
    if (get_str(pool, json_object_get(media, "upload"), &cmd->media.upload) != 0 ||
        (cmd->media.upload.base != NULL &&
         !sb_id_valid(cmd->media.upload.base, cmd->media.upload.len)))
        return "\"media.upload\" must be an upload id";
    if (get_str(pool, json_object_get(media, "mime_type"), &cmd->media.mime_type) != 0)
        return "\"media.mime_type\" must be a string";
    return NULL;
}

/* Reads "buttons" into 'cmd'. Returns NULL or the reason. */
static const char *parse_buttons(h2o_mem_pool_t *pool, json_t *buttons, sb_command_t *cmd)
{
    if (buttons == NULL || json_is_null(buttons))
        return NULL;
    if (!json_is_array(buttons))
        return "\"buttons\" must be an array";
    if (json_array_size(buttons) > SB_MAX_BUTTONS)
        return "\"buttons\" holds at most 13 buttons";
    for (size_t i = 0; i < json_array_size(buttons); ++i) {
        json_t *b = json_array_get(buttons, i);
        if (!json_is_object(b))
            return "every button must be an object";
        if (get_str(pool, json_object_get(b, "id"), &cmd->buttons[i].id) != 0 ||
            cmd->buttons[i].id.len == 0)
            return "every button needs a non-empty string \"id\"";
        if (get_str(pool, json_object_get(b, "title"), &cmd->buttons[i].title) != 0 ||
            cmd->buttons[i].title.len == 0)
            return "every button needs a non-empty string \"title\"";
    }
    cmd->nbuttons = json_array_size(buttons);
    return NULL;
}

/* Reads "template" into 'cmd': {"name", "language", "components"?}; the components array is
 * kept as compact JSON text for the adapter, which sends it as it came. Returns NULL or the
 * reason. */
static const char *parse_template(h2o_mem_pool_t *pool, json_t *tpl, sb_command_t *cmd)
{
    const char *key;
    json_t *value, *components;

    if (tpl == NULL || json_is_null(tpl))
        return NULL;
    if (!json_is_object(tpl))
        return "\"template\" must be an object";
    json_object_foreach(tpl, key, value)
    {
        if (strcmp(key, "name") != 0 && strcmp(key, "language") != 0 &&
            strcmp(key, "components") != 0)
            return "\"template\" takes only name, language and components";
    }
    if (get_str(pool, json_object_get(tpl, "name"), &cmd->template.name) != 0 ||
        cmd->template.name.len == 0 || cmd->template.name.len > TEMPLATE_NAME_MAX)
        return "\"template.name\" must be a non-empty string";
    if (get_str(pool, json_object_get(tpl, "language"), &cmd->template.language) != 0 ||
        cmd->template.language.len == 0 || cmd->template.language.len > TEMPLATE_LANGUAGE_MAX)
        return "\"template.language\" must be a language code such as en_US";
    components = json_object_get(tpl, "components");
    if (components == NULL || json_is_null(components))
        return NULL;
    if (!json_is_array(components))
        return "\"template.components\" must be an array";
    for (size_t i = 0; i < json_array_size(components); ++i) {
        json_t *c = json_array_get(components, i);
        if (!json_is_object(c) || !json_is_string(json_object_get(c, "type")))
            return "every template component must be an object with a string \"type\"";
        json_t *params = json_object_get(c, "parameters");
        if (params != NULL && !json_is_array(params))
            return "\"parameters\" of a template component must be an array";
    }
    char *text = json_dumps(components, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL)
        return "\"template.components\" cannot be encoded";
    cmd->template.components = sb_pool_strdup(pool, text, strlen(text));
    free(text);
    return NULL;
}

/* Validates the parsed document 'root' into 'cmd'. Returns NULL or the reason. */
static const char *parse_command(h2o_mem_pool_t *pool, json_t *root, sb_command_t *cmd)
{
    const char *key, *reason;
    json_t *value;

    if (!json_is_object(root))
        return "the command must be a JSON object";
    json_object_foreach(root, key, value)
    {
        if (!is_member_of(key, command_members,
                          sizeof(command_members) / sizeof(command_members[0]))) {
            /* Long names are not echoed (a cut could split a UTF-8 sequence). */
            if (strlen(key) > 64)
                return "unknown member";
            return sb_pool_printf(pool, "unknown member \"%s\"", key).base;
        }
    }

    if (get_str(pool, json_object_get(root, "id"), &cmd->id) != 0 || cmd->id.base == NULL ||
        cmd->id.len == 0 || cmd->id.len > COMMAND_ID_MAX)
        return "\"id\" must be a string of 1 to 256 bytes";
    if (get_str(pool, json_object_get(root, "conversation_id"), &cmd->conversation_id) != 0 ||
        (cmd->conversation_id.base != NULL && cmd->conversation_id.len == 0))
        return "\"conversation_id\" must be a non-empty string";
    if (get_str(pool, json_object_get(root, "type"), &cmd->type) != 0 || cmd->type.base == NULL)
        return "\"type\" must be one of " TYPES_TEXT;
    if (!is_member_of(cmd->type.base, command_types,
                      sizeof(command_types) / sizeof(command_types[0])))
        return "\"type\" must be one of " TYPES_TEXT;
    if (get_str(pool, json_object_get(root, "text"), &cmd->text) != 0)
        return "\"text\" must be a string";
    if (get_str(pool, json_object_get(root, "reply_to"), &cmd->reply_to) != 0)
        return "\"reply_to\" must be a string";
    if (cmd->reply_to.len == 0)
        cmd->reply_to = h2o_iovec_init(NULL, 0);
    if ((reason = parse_media(pool, json_object_get(root, "media"), cmd)) != NULL)
        return reason;
    if ((reason = parse_buttons(pool, json_object_get(root, "buttons"), cmd)) != NULL)
        return reason;
    if ((reason = parse_template(pool, json_object_get(root, "template"), cmd)) != NULL)
        return reason;

    if (sb_iov_eq(cmd->type, "text")) {
        if (cmd->text.len == 0)
            return "a text command needs a non-empty \"text\"";
    } else if (sb_iov_eq(cmd->type, "image") || sb_iov_eq(cmd->type, "audio") ||
               sb_iov_eq(cmd->type, "video") || sb_iov_eq(cmd->type, "document")) {
        if (cmd->media.url.base == NULL && cmd->media.upload.base == NULL)
            return "a media command needs \"media.url\"";
        if (cmd->media.url.base != NULL && cmd->media.upload.base != NULL)
            return "a media command has either \"media.url\" or a file, not both";
        if (cmd->media.url.base != NULL && !url_valid(cmd->media.url))
            return "\"media.url\" must be an http or https URL";
    } else if (sb_iov_eq(cmd->type, "template")) {
        if (cmd->template.name.base == NULL)
            return "a template command needs \"template\" with name and language";
    }
    if (!sb_iov_eq(cmd->type, "template") && cmd->template.name.base != NULL)
        return "\"template\" goes only with type template";
    return NULL;
}

sb_err_t sb_command_parse(h2o_iovec_t json, h2o_mem_pool_t *pool, sb_command_t *cmd,
                          const char **reason)
{
    json_error_t error;
    json_t *root;
    const char *why;

    memset(cmd, 0, sizeof(*cmd));
    *reason = NULL;
    if (json.base == NULL ||
        (root = json_loadb(json.base, json.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                           &error)) == NULL) {
        *reason = "the command is not valid JSON";
        return SB_ERR_BAD_REQUEST;
    }
    why = parse_command(pool, root, cmd);
    json_decref(root);
    if (why != NULL) {
        memset(cmd, 0, sizeof(*cmd));
        *reason = why;
        return SB_ERR_BAD_REQUEST;
    }
    return SB_OK;
}

/* ---- Text splitting ---- */

static int is_space(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

size_t sb__utf8_char_len(const char *s, size_t i, size_t n)
{
    unsigned char c = (unsigned char)s[i];
    size_t len = c < 0xc0 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf8 ? 4 : 1;
    for (size_t k = 1; k < len; ++k) {
        if (i + k >= n || ((unsigned char)s[i + k] & 0xc0) != 0x80)
            return k;
    }
    return len;
}

size_t sb__utf8_count(h2o_iovec_t text)
{
    size_t count = 0;
    for (size_t i = 0; i < text.len; i += sb__utf8_char_len(text.base, i, text.len))
        ++count;
    return count;
}

static void push_chunk(h2o_mem_pool_t *pool, sb_iovec_vector_t *out, const char *s, size_t len)
{
    h2o_vector_reserve(pool, out, out->size + 1);
    out->entries[out->size++] = sb_pool_strdup(pool, s, len);
}

void sb_text_split(h2o_iovec_t text, size_t limit, int bytes, h2o_mem_pool_t *pool,
                   sb_iovec_vector_t *out)
{
    const char *s = text.base;
    size_t n = text.len, start = 0;

    if (s == NULL || n == 0)
        return;
    if (limit == 0)
        limit = SIZE_MAX;
    while (start < n) {
        /* 'end': the end of the longest run of whole characters from 'start' within the
         * limit; 'cut': the start of the last whitespace run beginning in (start, end]. */
        size_t end = start, units = 0, cut = start;
        while (end < n) {
            size_t cl = sb__utf8_char_len(s, end, n), w = bytes ? cl : 1;
            if (units + w > limit)
                break;
            if (end > start && is_space(s[end]) && !is_space(s[end - 1]))
                cut = end;
            units += w;
            end += cl;
        }
        if (end == n) {
            push_chunk(pool, out, s + start, n - start);
            return;
        }
        if (end > start && is_space(s[end]) && !is_space(s[end - 1]))
            cut = end;
        if (cut > start) {
            push_chunk(pool, out, s + start, cut - start);
            for (start = cut; start < n && is_space(s[start]); ++start)
                ;
        } else {
            /* One word over the limit: cut at the last whole character that fits (a
             * character wider than a byte limit goes whole: a chunk is never empty). */
            if (end == start)
                end += sb__utf8_char_len(s, start, n);
            push_chunk(pool, out, s + start, end - start);
            start = end;
        }
    }
}
