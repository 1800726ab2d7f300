/*
 * test_log.c — internal/log: every JSON record parses (jansson) with the
 * right types, escaping of quotes, backslashes, control characters, UTF-8
 * and invalid bytes, truncation of huge records (still valid JSON, marked),
 * the text format, level filtering, log_reopen after a rename (logrotate),
 * and no interleaving between threads writing at once.
 */
#include "rt_test.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <regex.h>
#include <sys/stat.h>

#include "log.h"

static char dir[PATH_MAX];
static char path[PATH_MAX + 32];

/* Every line of the log file written since the last call. */
static char *read_new(void) {
    static long offset;
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    long end = ftell(f);
    if (end < offset) offset = 0;   /* a new file */
    fseek(f, offset, SEEK_SET);
    char *buf = calloc(1, (size_t)(end - offset) + 1);
    CHECK(buf != NULL);
    CHECK_EQ(fread(buf, 1, (size_t)(end - offset), f), end - offset);
    fclose(f);
    offset = end;
    return buf;
}

static json_t *one_record(void) {
    char *s = read_new();
    size_t n = strlen(s);
    CHECK(n > 0 && s[n - 1] == '\n');
    CHECK(strchr(s, '\n') == s + n - 1);   /* exactly one line */
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (j == NULL) fprintf(stderr, "not JSON (%s): %s\n", e.text, s);
    CHECK(j != NULL && json_is_object(j));
    free(s);
    return j;
}

static void test_json_fields(void) {
    log_set_format(LOG_FORMAT_JSON);
    log_info("listening", LOG_STR("addr", "127.0.0.1"), LOG_INT("port", 8080),
             LOG_FLOAT("ratio", 0.25), LOG_BOOL("ok", true), LOG_INT("neg", INT64_MIN),
             LOG_STR("nullstr", NULL), LOG_FLOAT("nan", 0.0 / 0.0));
    json_t *j = one_record();
    regex_t re;
    CHECK_EQ(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                     REG_EXTENDED), 0);
    CHECK_EQ(regexec(&re, json_string_value(json_object_get(j, "ts")), 0, NULL, 0), 0);
    regfree(&re);
    CHECK(strcmp(json_string_value(json_object_get(j, "level")), "info") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "msg")), "listening") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "addr")), "127.0.0.1") == 0);
    CHECK_EQ(json_integer_value(json_object_get(j, "port")), 8080);
    CHECK(json_real_value(json_object_get(j, "ratio")) == 0.25);
    CHECK(json_is_true(json_object_get(j, "ok")));
    CHECK_EQ(json_integer_value(json_object_get(j, "neg")), INT64_MIN);
    CHECK(json_is_null(json_object_get(j, "nullstr")));
    CHECK(json_is_null(json_object_get(j, "nan")));
    CHECK(json_object_get(j, "truncated") == NULL);
    json_decref(j);

    log_msg(LOG_ERROR, "no fields");
    j = one_record();
    CHECK(strcmp(json_string_value(json_object_get(j, "level")), "error") == 0);
    CHECK_EQ(json_object_size(j), 3);
    json_decref(j);
}

static void test_json_escaping(void) {
    log_set_format(LOG_FORMAT_JSON);
    const char *nasty = "q\"b\\n\nr\rt\tc\x01\x1f del\x7f é€😀";
    log_warn("esc \"msg\"", LOG_STR("s", nasty), LOG_STR("k\"ey", "v"));
    json_t *j = one_record();
    CHECK(strcmp(json_string_value(json_object_get(j, "s")), nasty) == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "msg")), "esc \"msg\"") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "k\"ey")), "v") == 0);
    json_decref(j);

    /* invalid UTF-8: lone continuation, truncated sequence, overlong,
     * surrogate, > U+10FFFF: each bad byte becomes \u00XX */
    log_info("bad", LOG_STR("s", "a\x80" "b\xc3" "c\xc0\xaf" "d\xed\xa0\x80" "e\xf4\x90\x80\x80" "\xff"));
    char *raw = read_new();
    CHECK(strstr(raw, "\"a\\u0080b\\u00c3c\\u00c0\\u00afd\\u00ed\\u00a0\\u0080e\\u00f4\\u0090\\u0080\\u0080\\u00ff\"") != NULL);
    json_t *k = json_loads(raw, 0, NULL);
    CHECK(k != NULL);
    json_decref(k);
    free(raw);
}

static void test_truncation(void) {
    log_set_format(LOG_FORMAT_JSON);
    size_t n = 100000;
    char *big = malloc(n + 1);
    CHECK(big != NULL);
    /* multi-byte characters and escapes all the way, so the cut lands
     * inside one unless it is careful */
    for (size_t i = 0; i < n;) {
        const char *piece = (i / 3) % 2 ? "€" : "\"\n\x01";
        size_t pl = strlen(piece);
        if (i + pl > n) break;
        memcpy(big + i, piece, pl);
        i += pl;
        big[i] = '\0';
    }
    log_info("big", LOG_STR("first", "kept"), LOG_STR("huge", big), LOG_INT("after", 1));
    char *raw = read_new();
    CHECK(strlen(raw) <= 4096);
    json_error_t e;
    json_t *j = json_loads(raw, 0, &e);
    if (j == NULL) fprintf(stderr, "truncated record not JSON (%s): %.200s\n", e.text, raw);
    CHECK(j != NULL);
    CHECK(json_is_true(json_object_get(j, "truncated")));
    CHECK(strcmp(json_string_value(json_object_get(j, "first")), "kept") == 0);
    const char *h = json_string_value(json_object_get(j, "huge"));
    CHECK(h != NULL && strlen(h) > 1000 && strncmp(big, h, strlen(h)) == 0);
    CHECK(json_object_get(j, "after") == NULL);
    json_decref(j);
    free(raw);

    /* a huge message */
    log_info(big, LOG_INT("x", 1));
    j = one_record();
    CHECK(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);

    /* many small fields: the ones that do not fit are dropped whole */
    log_field fields[600];
    char keys[600][16];
    for (int i = 0; i < 600; i++) {
        snprintf(keys[i], sizeof keys[i], "key%d", i);
        fields[i] = LOG_INT(keys[i], i);
    }
    log_write(LOG_INFO, "many", fields, 600);
    j = one_record();
    CHECK(json_is_true(json_object_get(j, "truncated")));
    CHECK(json_object_get(j, "key0") != NULL);
    CHECK(json_object_get(j, "key599") == NULL);
    json_decref(j);
    free(big);

    /* text format truncates too, with the marker */
    log_set_format(LOG_FORMAT_TEXT);
    char *text = malloc(20001);
    memset(text, 'x', 20000);
    text[20000] = '\0';
    log_info("t", LOG_STR("v", text));
    raw = read_new();
    CHECK(strlen(raw) <= 4096);
    CHECK(strstr(raw, " truncated=true\n") != NULL);
    free(raw);
    free(text);
    log_set_format(LOG_FORMAT_JSON);
}

static void test_text_and_levels(void) {
    log_set_format(LOG_FORMAT_TEXT);
    log_info("listening", LOG_STR("addr", "127.0.0.1"), LOG_INT("port", 80),
             LOG_STR("note", "two words"), LOG_STR("q", "a\"b"), LOG_STR("empty", ""),
             LOG_BOOL("b", false));
    char *s = read_new();
    /* "2026-...Z info listening addr=127.0.0.1 port=80 note=\"two words\" ..." */
    char *sp = strchr(s, ' ');
    CHECK(sp != NULL && sp - s == 24 && s[23] == 'Z');
    CHECK(strcmp(sp, " info listening addr=127.0.0.1 port=80 note=\"two words\" q=\"a\\\"b\" "
                     "empty=\"\" b=false\n") == 0);
    free(s);
    log_info("two words");
    s = read_new();
    CHECK(strstr(s, " info \"two words\"\n") != NULL);
    free(s);

    log_set_format(LOG_FORMAT_JSON);
    CHECK_EQ(log_get_format(), LOG_FORMAT_JSON);
    log_set_level(LOG_WARN);
    log_info("dropped");
    log_debug("dropped");
    log_warn("kept");
    log_write(LOG_FATAL, "fatal kept", NULL, 0);
    s = read_new();
    CHECK(strstr(s, "dropped") == NULL);
    CHECK(strstr(s, "\"msg\":\"kept\"") != NULL);
    CHECK(strstr(s, "\"level\":\"fatal\"") != NULL);
    free(s);
    log_set_level(LOG_INFO);

    log_format f;
    log_level l;
    CHECK_EQ(log_parse_format("text", &f), 0);
    CHECK_EQ(f, LOG_FORMAT_TEXT);
    CHECK_EQ(log_parse_format("JSON", &f), -EINVAL);
    CHECK_EQ(log_parse_level("warn", &l), 0);
    CHECK_EQ(l, LOG_WARN);
    CHECK_EQ(log_parse_level("fatal", &l), -EINVAL);
    CHECK_EQ(log_parse_level(NULL, &l), -EINVAL);
}

static void test_reopen(void) {
    int fd_before = log_fd();
    log_info("before rotate");
    char rotated[PATH_MAX + 64];
    snprintf(rotated, sizeof rotated, "%s.1", path);
    CHECK_EQ(rename(path, rotated), 0);
    log_info("still old file");
    CHECK_EQ(log_reopen(), 0);
    CHECK_EQ(log_fd(), fd_before);   /* same descriptor number, new file */
    log_info("after rotate");
    char *s = read_new();
    CHECK(strstr(s, "after rotate") != NULL);
    CHECK(strstr(s, "before rotate") == NULL);
    free(s);
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0640);
    FILE *f = fopen(rotated, "r");
    fseek(f, -200, SEEK_END);   /* its last records */
    char buf[4096] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECK(strstr(buf, "still old file") != NULL);

    CHECK_EQ(log_open_file(""), -EINVAL);
    char nodir[PATH_MAX + 64];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/log", dir);
    CHECK_EQ(log_open_file(nodir), -ENOENT);
    CHECK_EQ(log_fd(), fd_before);   /* the sink is unchanged */
}

#define THREADS 8
#define PER_THREAD 2000

static void *writer(void *arg) {
    long id = (long)arg;
    char pad[600];
    memset(pad, 'a' + (int)id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++)
        log_info("concurrent", LOG_INT("thread", id), LOG_INT("i", i), LOG_STR("pad", pad));
    return NULL;
}

static void test_concurrent(void) {
    read_new();
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) CHECK_EQ(pthread_create(&t[i], NULL, writer, (void *)i), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    char *s = read_new();
    int lines = 0;
    for (char *save = NULL, *ln = strtok_r(s, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        json_t *j = json_loads(ln, 0, NULL);
        CHECK(j != NULL);
        json_decref(j);
        lines++;
    }
    CHECK_EQ(lines, THREADS * PER_THREAD);
    free(s);
}

int main(void) {
    rt_test_program = "test_log";
    const char *base = getenv("LEDGERD_TEST_DIR");
    if (base) mkdir(base, 0755);
    snprintf(dir, sizeof dir, "%s/log-XXXXXX", base ? base : "/tmp");
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/ledgerd.log", dir);
    CHECK_EQ(log_fd(), 2);
    CHECK_EQ(log_reopen(), 0);   /* stderr: no-op */
    CHECK_EQ(log_open_file(path), 0);
    CHECK(log_fd() != 2);
    RUN(test_json_fields);
    RUN(test_json_escaping);
    RUN(test_truncation);
    RUN(test_text_and_levels);
    RUN(test_reopen);
    RUN(test_concurrent);
    return rt_test_done();
}
