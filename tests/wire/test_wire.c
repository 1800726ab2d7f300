/*
 * test_wire.c — internal/wire against API.md's field rules: every bad amount
 * form, duplicate keys, trailing garbage and NUL, top-level non-objects,
 * ids (charset, length, '@'), currency, memo length and NULs, the
 * Idempotency-Key charset, history query parsing, and the renderers (the
 * output is parsed back with jansson and compared field by field).
 */
#include "rt_test.h"
#include "wire.h"

#include <jansson.h>

static wire_error E;

/* The body with `amount` replaced by lit. */
static int transfer_with_amount(const char *lit, wire_transfer *t) {
    char body[512];
    snprintf(body, sizeof body, "{\"from\":\"alice\",\"to\":\"bob\",\"amount\":%s,\"currency\":\"USD\"}", lit);
    return wire_parse_transfer(body, strlen(body), t, &E);
}

static bool msg_names(const char *field) { return strstr(E.message, field) != NULL; }

#define CHECK_ERR(call, code_, field)                                             \
    do {                                                                          \
        memset(&E, 0, sizeof E);                                                  \
        CHECK((call) == -1);                                                      \
        CHECK_EQ(E.status, 400);                                                  \
        if (strcmp(E.code, (code_)) != 0) {                                       \
            fprintf(stderr, "%s:%d: code %s, want %s (%s)\n", __FILE__, __LINE__, \
                    E.code, (code_), E.message);                                  \
            _exit(1);                                                             \
        }                                                                         \
        if ((field) != NULL) CHECK(msg_names(field));                             \
    } while (0)

static void test_transfer_ok(void) {
    wire_transfer t;
    const char *b = " {\"from\":\"alice\",\"to\":\"b-o_B9\",\"amount\":1250,\"currency\":\"USD\",\"x\":[1,{}]} \r\n\t";
    CHECK_EQ(wire_parse_transfer(b, strlen(b), &t, &E), 0);
    CHECK(strcmp(t.from, "alice") == 0 && strcmp(t.to, "b-o_B9") == 0);
    CHECK_EQ(t.amount, 1250);
    CHECK(strcmp(t.currency, "USD") == 0);
    CHECK(!t.has_memo);
    b = "{\"from\":\"a\",\"to\":\"b\",\"amount\":9007199254740991,\"currency\":\"EUR\",\"memo\":\"caf\\u00e9\"}";
    CHECK_EQ(wire_parse_transfer(b, strlen(b), &t, &E), 0);
    CHECK_EQ(t.amount, INT64_C(9007199254740991));
    CHECK(t.has_memo && t.memo_len == 5 && memcmp(t.memo, "caf\xc3\xa9", 5) == 0);
    /* null memo is no memo */
    b = "{\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"currency\":\"EUR\",\"memo\":null}";
    CHECK_EQ(wire_parse_transfer(b, strlen(b), &t, &E), 0);
    CHECK(!t.has_memo);
    /* escapes decode before validation */
    b = "{\"from\":\"\\u0061b\",\"to\":\"b\",\"amount\":1,\"currency\":\"\\u0055SD\"}";
    CHECK_EQ(wire_parse_transfer(b, strlen(b), &t, &E), 0);
    CHECK(strcmp(t.from, "ab") == 0 && strcmp(t.currency, "USD") == 0);
    /* from == to is the ledger's 422, not a field error */
    b = "{\"from\":\"a\",\"to\":\"a\",\"amount\":1,\"currency\":\"EUR\"}";
    CHECK_EQ(wire_parse_transfer(b, strlen(b), &t, &E), 0);
}

static void test_amounts(void) {
    wire_transfer t;
    const char *bad[] = { "12.5", "1e3", "1E3", "100.0", "1.0e2", "\"100\"", "\"1\"", "-5", "-1", "0",
                          "-0", "true", "false", "null", "[]", "{}", "[1]", "9007199254740992",
                          "4611686018427387904", "9223372036854775807", "9007199254740991.0", "1e-2",
                          "-9223372036854775808" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK_ERR(transfer_with_amount(bad[i], &t), "invalid_field", "amount");
    /* beyond int64, or not JSON numbers at all: jansson refuses the parse */
    const char *unparsable[] = { "9223372036854775808", "18446744073709551617", "-18446744073709551616",
                                 "1e400", "0x10", "+5", "05", ".5" };
    for (size_t i = 0; i < sizeof unparsable / sizeof *unparsable; i++)
        CHECK_ERR(transfer_with_amount(unparsable[i], &t), "invalid_json", NULL);
    CHECK_EQ(transfer_with_amount("1", &t), 0);
    CHECK_EQ(t.amount, 1);
    const char *missing = "{\"from\":\"a\",\"to\":\"b\",\"currency\":\"USD\"}";
    CHECK_ERR(wire_parse_transfer(missing, strlen(missing), &t, &E), "invalid_field", "amount");
}

static void test_invalid_json(void) {
    wire_transfer t;
    const char *good = "{\"from\":\"a\",\"to\":\"b\",\"amount\":5,\"currency\":\"USD\"}";
    char buf[512];
    const char *bad[] = { "", " ", "{", "}", "nul", "{from:1}", "{'from':'a'}", "{\"from\":\"a\",}",
                          "\xff\xfe{}", "{\"from\":\"\xc3\x28\",\"to\":\"x\",\"amount\":5,\"currency\":\"USD\"}",
                          "[]", "[1,2]", "\"str\"", "5", "null", "true" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_ERR(wire_parse_transfer(bad[i], strlen(bad[i]), &t, &E), "invalid_json", NULL);
    /* trailing garbage, a second object, a trailing NUL, a BOM */
    const char *suffix[] = { " x", "}", ",", "{}" };
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        snprintf(buf, sizeof buf, "%s%s", good, suffix[i]);
        CHECK_ERR(wire_parse_transfer(buf, strlen(buf), &t, &E), "invalid_json", NULL);
    }
    size_t n = (size_t)snprintf(buf, sizeof buf, "%s", good);
    buf[n] = 0;
    CHECK_ERR(wire_parse_transfer(buf, n + 1, &t, &E), "invalid_json", NULL);   /* "...}\0" */
    n = (size_t)snprintf(buf, sizeof buf, "\xef\xbb\xbf%s", good);
    CHECK_ERR(wire_parse_transfer(buf, n, &t, &E), "invalid_json", NULL);
    CHECK_ERR(wire_parse_transfer(good, strlen(good) - 1, &t, &E), "invalid_json", NULL);
    CHECK_ERR(wire_parse_transfer(NULL, 0, &t, &E), "invalid_json", NULL);
    /* duplicate keys, even with equal values */
    const char *dups[] = { "{\"from\":\"a\",\"to\":\"b\",\"to\":\"c\",\"amount\":5,\"currency\":\"USD\"}",
                           "{\"from\":\"a\",\"to\":\"b\",\"amount\":5,\"amount\":500,\"currency\":\"USD\"}",
                           "{\"from\":\"a\",\"to\":\"b\",\"amount\":5,\"amount\":5,\"currency\":\"USD\"}" };
    for (size_t i = 0; i < 3; i++) CHECK_ERR(wire_parse_transfer(dups[i], strlen(dups[i]), &t, &E), "invalid_json", NULL);
}

static void test_ids_and_currency(void) {
    wire_transfer t;
    char body[512];
    const char *bad_ids[] = { "\"\"", "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"",
                              "\"a b\"", "\"a/b\"", "\"a.b\"", "\"caf\\u00e9\"", "\"@world\"", "\"@alice\"",
                              "\"a\\u0000b\"", "5", "null", "true", "[\"x\"]", "{\"id\":\"a\"}" };
    for (int f = 0; f < 2; f++)
        for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
            if (f == 0)
                snprintf(body, sizeof body, "{\"from\":%s,\"to\":\"b\",\"amount\":1,\"currency\":\"USD\"}", bad_ids[i]);
            else
                snprintf(body, sizeof body, "{\"from\":\"a\",\"to\":%s,\"amount\":1,\"currency\":\"USD\"}", bad_ids[i]);
            CHECK_ERR(wire_parse_transfer(body, strlen(body), &t, &E), "invalid_field", f == 0 ? "from" : "to");
        }
    /* 64 characters is the longest id */
    snprintf(body, sizeof body, "{\"from\":\"%s\",\"to\":\"b\",\"amount\":1,\"currency\":\"USD\"}",
             "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    CHECK_EQ(wire_parse_transfer(body, strlen(body), &t, &E), 0);
    CHECK_EQ(strlen(t.from), 64);
    const char *bad_cur[] = { "\"usd\"", "\"US\"", "\"USDX\"", "\"\"", "\"1SD\"", "\"U5D\"", "\"\\u00dcSD\"",
                              "840", "null", "false", "\"US\\u0000\"" };
    for (size_t i = 0; i < sizeof bad_cur / sizeof *bad_cur; i++) {
        snprintf(body, sizeof body, "{\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"currency\":%s}", bad_cur[i]);
        CHECK_ERR(wire_parse_transfer(body, strlen(body), &t, &E), "invalid_field", "currency");
    }
    const char *missing[] = { "{\"to\":\"b\",\"amount\":1,\"currency\":\"USD\"}", "{\"from\":\"a\",\"amount\":1,\"currency\":\"USD\"}",
                              "{\"from\":\"a\",\"to\":\"b\",\"amount\":1}" };
    const char *fields[] = { "from", "to", "currency" };
    for (int i = 0; i < 3; i++) CHECK_ERR(wire_parse_transfer(missing[i], strlen(missing[i]), &t, &E), "invalid_field", fields[i]);
    CHECK(wire_valid_account_id("A-z_0", 5));
    CHECK(!wire_valid_account_id("A-z_0", 0));
    CHECK(!wire_valid_account_id(NULL, 3));
    CHECK(wire_valid_currency("XYZ", 3));
    CHECK(!wire_valid_currency("XYZ", 2));
}

static void test_memo(void) {
    wire_transfer t;
    char body[8192], memo[6000];
    /* 256 bytes pass, 257 fail; multi-byte characters count in bytes */
    struct { const char *unit; int count; bool ok; } cases[] = {
        { "x", 256, true }, { "x", 257, false }, { "\\u00e9", 128, true }, { "\\u00e9", 129, false },
        { "\\u2615", 85, true }, { "\\u2615", 86, false }, { "y", 5000, false }, { "", 0, true },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t off = 0;
        for (int i = 0; i < cases[c].count; i++) off += (size_t)sprintf(memo + off, "%s", cases[c].unit);
        memo[off] = 0;
        snprintf(body, sizeof body, "{\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"currency\":\"USD\",\"memo\":\"%s\"}", memo);
        if (cases[c].ok) {
            CHECK_EQ(wire_parse_transfer(body, strlen(body), &t, &E), 0);
            CHECK(t.has_memo);
        } else {
            CHECK_ERR(wire_parse_transfer(body, strlen(body), &t, &E), "invalid_field", "memo");
        }
    }
    const char *bad[] = { "5", "true", "{\"x\":1}", "[\"x\"]" };
    for (size_t i = 0; i < 4; i++) {
        snprintf(body, sizeof body, "{\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"currency\":\"USD\",\"memo\":%s}", bad[i]);
        CHECK_ERR(wire_parse_transfer(body, strlen(body), &t, &E), "invalid_field", "memo");
    }
    /* \u0000 is kept, by length */
    const char *nul = "{\"from\":\"a\",\"to\":\"b\",\"amount\":1,\"currency\":\"USD\",\"memo\":\"a\\u0000b\"}";
    CHECK_EQ(wire_parse_transfer(nul, strlen(nul), &t, &E), 0);
    CHECK(t.has_memo && t.memo_len == 3 && memcmp(t.memo, "a\0b", 3) == 0);
}

static void test_account_and_key(void) {
    wire_account a;
    const char *b = "{\"id\":\"alice\",\"currency\":\"USD\",\"initial_balance\":10000}";
    CHECK_EQ(wire_parse_account(b, strlen(b), &a, &E), 0);
    CHECK(strcmp(a.id, "alice") == 0 && a.initial_balance == 10000);
    b = "{\"id\":\"alice\",\"currency\":\"USD\"}";
    CHECK_EQ(wire_parse_account(b, strlen(b), &a, &E), 0);
    CHECK_EQ(a.initial_balance, 0);
    b = "{\"id\":\"alice\",\"currency\":\"USD\",\"initial_balance\":0}";
    CHECK_EQ(wire_parse_account(b, strlen(b), &a, &E), 0);
    const char *bad_bal[] = { "-1", "12.5", "\"100\"", "true", "[1]", "9007199254740992", "4611686018427387904",
                              "1e3", "100.0", "null" };
    char body[256];
    for (size_t i = 0; i < sizeof bad_bal / sizeof *bad_bal; i++) {
        snprintf(body, sizeof body, "{\"id\":\"a\",\"currency\":\"USD\",\"initial_balance\":%s}", bad_bal[i]);
        CHECK_ERR(wire_parse_account(body, strlen(body), &a, &E), "invalid_field", "initial_balance");
    }
    b = "{\"id\":\"a\",\"currency\":\"USD\",\"initial_balance\":18446744073709551616}";
    CHECK_ERR(wire_parse_account(b, strlen(b), &a, &E), "invalid_json", NULL);
    b = "{\"currency\":\"USD\"}";
    CHECK_ERR(wire_parse_account(b, strlen(b), &a, &E), "invalid_field", "id");
    b = "{\"id\":\"@world\",\"currency\":\"USD\"}";
    CHECK_ERR(wire_parse_account(b, strlen(b), &a, &E), "invalid_field", "id");
    b = "{\"id\":\"x\",\"currency\":\"usd\"}";
    CHECK_ERR(wire_parse_account(b, strlen(b), &a, &E), "invalid_field", "currency");
    b = "{\"id\":\"x\",\"id\":\"y\",\"currency\":\"USD\"}";
    CHECK_ERR(wire_parse_account(b, strlen(b), &a, &E), "invalid_json", NULL);

    wire_key k;
    b = "{\"account\":\"alice\"}";
    CHECK_EQ(wire_parse_key(b, strlen(b), &k, &E), 0);
    CHECK(strcmp(k.account, "alice") == 0);
    const char *bad_keys[] = { "{}", "{\"account\":5}", "{\"account\":null}", "{\"account\":\"@world\"}",
                               "{\"account\":\"a b\"}", "{\"account\":\"\"}" };
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++)
        CHECK_ERR(wire_parse_key(bad_keys[i], strlen(bad_keys[i]), &k, &E), "invalid_field", "account");
    const char *bad_json[] = { "", "{", "[]", "{\"account\":\"a\"} x", "null" };
    for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++)
        CHECK_ERR(wire_parse_key(bad_json[i], strlen(bad_json[i]), &k, &E), "invalid_json", NULL);
}

static void test_idem_key(void) {
    char k[300];
    memset(k, 'k', sizeof k);
    CHECK_EQ(wire_check_idem_key(k, 255, &E), 0);
    CHECK_EQ(wire_check_idem_key("A", 1, &E), 0);
    CHECK_EQ(wire_check_idem_key("~!#$%&'*+-.^_`| {}", 18, &E), 0);
    CHECK_ERR(wire_check_idem_key(k, 256, &E), "invalid_field", "Idempotency-Key");
    CHECK_ERR(wire_check_idem_key("", 0, &E), "invalid_field", "Idempotency-Key");
    CHECK_ERR(wire_check_idem_key(NULL, 0, &E), "invalid_field", "Idempotency-Key");
    CHECK_ERR(wire_check_idem_key("caf\xc3\xa9", 5, &E), "invalid_field", "Idempotency-Key");
    CHECK_ERR(wire_check_idem_key("a\x7f" "b", 3, &E), "invalid_field", "Idempotency-Key");
    CHECK_ERR(wire_check_idem_key("a\x01" "b", 3, &E), "invalid_field", "Idempotency-Key");
    CHECK_ERR(wire_check_idem_key("a\tb", 3, &E), "invalid_field", "Idempotency-Key");
}

static int page_q(const char *q, wire_page_query *out) {
    return wire_parse_page_query(q, q ? strlen(q) : 0, out, &E);
}

static void test_query(void) {
    wire_page_query q;
    CHECK_EQ(page_q(NULL, &q), 0);
    CHECK(q.limit == 50 && !q.has_before);
    CHECK_EQ(page_q("", &q), 0);
    CHECK_EQ(q.limit, 50);
    CHECK_EQ(page_q("limit=1", &q), 0);
    CHECK_EQ(q.limit, 1);
    CHECK_EQ(page_q("x=y&limit=1000&before=1a2b", &q), 0);
    CHECK(q.limit == 1000 && q.has_before && strcmp(q.before, "1a2b") == 0);
    CHECK_EQ(page_q("before=%31%61", &q), 0);
    CHECK(strcmp(q.before, "1a") == 0);
    CHECK_EQ(page_q("limit=0010", &q), 0);
    CHECK_EQ(q.limit, 10);
    const char *bad_limit[] = { "limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=1.5", "limit=10x",
                                "limit=99999999999999999999", "limit=", "limit", "limit=+5", "limit=%zz",
                                "limit=1e2", "limit=%201" };
    for (size_t i = 0; i < sizeof bad_limit / sizeof *bad_limit; i++) CHECK_ERR(page_q(bad_limit[i], &q), "invalid_field", "limit");
    const char *bad_before[] = { "before=%00", "before=", "before=a%2", "before=a%",
                                 "before=xxxxxxxxxxxxxxxxxxxxxxxx", "before=a+b" };
    for (size_t i = 0; i < sizeof bad_before / sizeof *bad_before; i++) CHECK_ERR(page_q(bad_before[i], &q), "invalid_field", "before");
    /* "!!!" is printable: the ledger refuses the cursor (EINVAL -> 400 before) */
    CHECK_EQ(page_q("before=!!!", &q), 0);
    CHECK_EQ(page_q("before=%22%27", &q), 0);
    CHECK(strcmp(q.before, "\"'") == 0);

    char v[16];
    size_t n;
    CHECK_EQ(wire_query_param("currency=USD", 12, "currency", v, sizeof v, &n), 1);
    CHECK(n == 3 && strcmp(v, "USD") == 0);
    CHECK_EQ(wire_query_param("cur=USD", 7, "currency", v, sizeof v, &n), 0);
    CHECK_EQ(wire_query_param("currency=", 9, "currency", v, sizeof v, &n), 1);
    CHECK_EQ(n, 0);
    CHECK_EQ(wire_query_param("a=1&&currency=U%53D", 19, "currency", v, sizeof v, &n), 1);
    CHECK(strcmp(v, "USD") == 0);
    CHECK_EQ(wire_query_param(NULL, 0, "currency", v, sizeof v, &n), 0);
}

/* Render, then parse back with jansson. */
static json_t *reparse(const char *buf, int n) {
    CHECK(n > 0);
    json_error_t err;
    json_t *j = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!j) fprintf(stderr, "reparse: %s in %.*s\n", err.text, n, buf);
    CHECK(j != NULL && json_is_object(j));
    return j;
}

static void test_render(void) {
    char buf[WIRE_TRANSFER_JSON_MAX];
    ledger_account a = { .id = "alice", .currency = "USD", .balance = -9007199254740991,
                         .created_at = "2026-11-22T10:00:00.000Z" };
    int n = wire_render_account(buf, sizeof buf, &a);
    json_t *j = reparse(buf, n);
    CHECK(strcmp(json_string_value(json_object_get(j, "id")), "alice") == 0);
    CHECK_EQ(json_integer_value(json_object_get(j, "balance")), -9007199254740991LL);
    CHECK(strcmp(json_string_value(json_object_get(j, "created_at")), a.created_at) == 0);
    json_decref(j);
    CHECK_EQ(wire_render_account(buf, 10, &a), -1);

    ledger_transfer_rec t = { .id = "01JDQ0000000000000000000AB", .from = "alice", .to = "bob", .amount = 1250,
                              .currency = "USD", .created_at = "2026-11-22T10:00:00.000Z" };
    n = wire_render_transfer(buf, sizeof buf, &t);
    j = reparse(buf, n);
    CHECK(json_is_null(json_object_get(j, "memo")));
    CHECK(strcmp(json_string_value(json_object_get(j, "status")), "committed") == 0);
    CHECK_EQ(json_integer_value(json_object_get(j, "amount")), 1250);
    json_decref(j);
    /* memos come back byte for byte: quotes, backslashes, controls, UTF-8, NUL */
    const char *memos[] = { "", "rent", "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80",
                            "quo\"te \\ back\nslash\t<b>&amp;/", "\x01\x1f\x7f" };
    for (size_t i = 0; i < sizeof memos / sizeof *memos; i++) {
        t.has_memo = true;
        t.memo_len = strlen(memos[i]);
        memcpy(t.memo, memos[i], t.memo_len + 1);
        n = wire_render_transfer(buf, sizeof buf, &t);
        j = reparse(buf, n);
        json_t *m = json_object_get(j, "memo");
        CHECK(json_is_string(m) && json_string_length(m) == t.memo_len);
        CHECK(memcmp(json_string_value(m), memos[i], t.memo_len) == 0);
        json_decref(j);
    }
    /* worst case: 256 NULs, each \u0000 */
    t.memo_len = LEDGER_MEMO_MAX;
    memset(t.memo, 0, sizeof t.memo);
    n = wire_render_transfer(buf, sizeof buf, &t);
    j = reparse(buf, n);
    CHECK_EQ(json_string_length(json_object_get(j, "memo")), LEDGER_MEMO_MAX);
    json_decref(j);

    ledger_key k = { .id = "0123456789abcdef01234567", .account = "alice", .secret = "s3cr3t",
                     .created_at = "2026-11-22T10:00:00.000Z" };
    n = wire_render_key(buf, sizeof buf, &k);
    j = reparse(buf, n);
    CHECK(strcmp(json_string_value(json_object_get(j, "secret")), "s3cr3t") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "account")), "alice") == 0);
    json_decref(j);
}

typedef struct sbuf { char *p; size_t n, cap; } sbuf;
static int sbuf_append(void *ud, const void *data, size_t len) {
    sbuf *s = ud;
    if (s->n + len > s->cap) {
        size_t cap = (s->cap + len) * 2;
        char *p = realloc(s->p, cap);
        if (!p) return -1;
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, len);
    s->n += len;
    return 0;
}

static void test_render_page(void) {
    ledger_transfer_rec items[3];
    memset(items, 0, sizeof items);
    for (int i = 0; i < 3; i++) {
        snprintf(items[i].id, sizeof items[i].id, "T%d", i);
        strcpy(items[i].from, "a");
        strcpy(items[i].to, "b");
        items[i].amount = i + 1;
        strcpy(items[i].currency, "USD");
        strcpy(items[i].created_at, "2026-11-22T10:00:00.000Z");
    }
    items[1].has_memo = true;
    items[1].memo_len = 2;
    strcpy(items[1].memo, "hi");
    ledger_page p = { .items = items, .count = 3, .has_next = true, .next = "3f" };
    sbuf s = { 0 };
    CHECK_EQ(wire_render_page(&p, sbuf_append, &s), 0);
    json_t *j = reparse(s.p, (int)s.n);
    CHECK_EQ(json_array_size(json_object_get(j, "transfers")), 3);
    CHECK(strcmp(json_string_value(json_object_get(j, "next")), "3f") == 0);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "transfers"), 1), "memo")), "hi") == 0);
    json_decref(j);
    s.n = 0;
    ledger_page empty = { 0 };
    CHECK_EQ(wire_render_page(&empty, sbuf_append, &s), 0);
    j = reparse(s.p, (int)s.n);
    CHECK_EQ(json_array_size(json_object_get(j, "transfers")), 0);
    CHECK(json_is_null(json_object_get(j, "next")));
    json_decref(j);
    free(s.p);
}

static int run(void *arg) {
    (void)arg;
    RUN(test_transfer_ok);
    RUN(test_amounts);
    RUN(test_invalid_json);
    RUN(test_ids_and_currency);
    RUN(test_memo);
    RUN(test_account_and_key);
    RUN(test_idem_key);
    RUN(test_query);
    RUN(test_render);
    RUN(test_render_page);
    return rt_test_done();
}

int main(int argc, char **argv) { return rt_test_main(argc, argv, run); }
