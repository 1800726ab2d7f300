/*
 * test_config.c — cmd/ledgerd/config.c: defaults, precedence (flag > env >
 * file > default), every value type, and the error messages naming their
 * source (file:line: key 'k' / --flag / LEDGERD_VAR).  config_parse is a
 * pure function of argv, envp and the file, so no process state is needed.
 */
#include "rt_test.h"

#include <limits.h>
#include <sys/stat.h>

#include "config.h"

static char tmpdir[PATH_MAX];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static const char *conf_path(const char *name) {
    static char p[PATH_MAX + 64];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* Parse with argv given as a NULL-terminated list (argv[0] added). */
static int parse(config *c, char *err, char *const *env, const char *const *args) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = "ledgerd";
    for (; args && *args; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    err[0] = '\0';
    return config_parse(argc, argv, env, c, err, 1024);
}

#define ARGS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define ENV(...) ((char *const[]){ __VA_ARGS__, NULL })
#define CHECK_ERR(err, needle)                                                  \
    do {                                                                        \
        if (strstr((err), (needle)) == NULL) {                                  \
            fprintf(stderr, "error %s lacks %s\n", (err), (needle));            \
            CHECK(strstr((err), (needle)) != NULL);                             \
        }                                                                       \
    } while (0)

static void test_defaults(void) {
    config c;
    char err[1024];
    CHECK_EQ(parse(&c, err, NULL, NULL), 0);
    CHECK_EQ(c.action, CONFIG_RUN);
    CHECK(strcmp(c.host, "127.0.0.1") == 0);
    CHECK_EQ(c.port, 8080);
    CHECK(strcmp(c.db, "./ledgerd.db") == 0);
    CHECK_EQ(c.log_format, LOG_FORMAT_JSON);
    CHECK_EQ(c.log_level, LOG_INFO);
    CHECK_EQ(c.sync, LEDGER_SYNC_FULL);
    CHECK_EQ(c.request_timeout_ns, 5 * RT_SECOND);
    CHECK_EQ(c.shutdown_timeout_ns, 10 * RT_SECOND);
    CHECK(c.log_requests);
    CHECK(!c.daemon);
    CHECK_EQ(c.admin_key[0], '\0');
    for (int i = 0; i < CONFIG_KEY_COUNT; i++) CHECK_EQ(c.src[i], CONFIG_SRC_DEFAULT);
}

static void test_precedence(void) {
    const char *file = conf_path("prec.conf");
    write_file(file,
               "# a comment\n"
               "\n"
               "max_conns = 11\n"
               "  max_batch=12   # trailing comment\n"
               "pipeline_queue = 13\n"
               "log_level = debug\n"
               "db = \"/tmp/with space # not a comment.db\"\n");
    config c;
    char err[1024];
    char envconf[PATH_MAX + 128];
    snprintf(envconf, sizeof envconf, "LEDGERD_CONFIG=%s", file);

    /* file only */
    CHECK_EQ(parse(&c, err, ENV(envconf), NULL), 0);
    CHECK_EQ(c.max_conns, 11);
    CHECK_EQ(c.max_batch, 12);
    CHECK_EQ(c.pipeline_queue, 13);
    CHECK_EQ(c.log_level, LOG_DEBUG);
    CHECK(strcmp(c.db, "/tmp/with space # not a comment.db") == 0);
    CHECK_EQ(c.src[CK_MAX_CONNS], CONFIG_SRC_FILE);
    CHECK(strcmp(c.config_file, file) == 0);

    /* env beats file; flag beats env; defaults stay for the rest */
    CHECK_EQ(parse(&c, err, ENV(envconf, "LEDGERD_MAX_CONNS=21", "LEDGERD_MAX_BATCH=22",
                                "LEDGERD_BIN=/whatever", "LEDGERD_E2E_SCALE=5"),
                   ARGS("--max-conns", "31")), 0);
    CHECK_EQ(c.max_conns, 31);
    CHECK_EQ(c.src[CK_MAX_CONNS], CONFIG_SRC_FLAG);
    CHECK_EQ(c.max_batch, 22);
    CHECK_EQ(c.src[CK_MAX_BATCH], CONFIG_SRC_ENV);
    CHECK_EQ(c.pipeline_queue, 13);
    CHECK_EQ(c.src[CK_PIPELINE_QUEUE], CONFIG_SRC_FILE);
    CHECK_EQ(c.auth_workers, 4);
    CHECK_EQ(c.src[CK_PIPELINE_AUTH_WORKERS], CONFIG_SRC_DEFAULT);

    /* --config beats LEDGERD_CONFIG; --key=value form */
    const char *other = conf_path("other.conf");
    write_file(other, "max_conns = 41\n");
    CHECK_EQ(parse(&c, err, ENV(envconf), ARGS("--config", other, "--max-batch=7")), 0);
    CHECK_EQ(c.max_conns, 41);
    CHECK_EQ(c.max_batch, 7);
    CHECK_EQ(c.pipeline_queue, 1024);   /* prec.conf not read */
    char confeq[PATH_MAX + 128];
    snprintf(confeq, sizeof confeq, "--config=%s", other);
    CHECK_EQ(parse(&c, err, NULL, ARGS(confeq)), 0);
    CHECK_EQ(c.max_conns, 41);

    /* the last flag wins */
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max-conns", "1", "--max-conns", "2")), 0);
    CHECK_EQ(c.max_conns, 2);
}

static void test_values(void) {
    config c;
    char err[1024];
    CHECK_EQ(parse(&c, err, NULL,
                   ARGS("--listen", "[::1]:9090", "--log-format", "text", "--sync", "normal",
                        "--daemon", "--no-log-requests", "--request-timeout", "250ms",
                        "--shutdown-timeout", "2m", "--idle-timeout=1m30s",
                        "--header-timeout", "1.5s", "--pidfile", "/run/x.pid",
                        "--admin-key", "s3cret", "--gomaxprocs", "3")), 0);
    CHECK(strcmp(c.host, "::1") == 0);
    CHECK_EQ(c.port, 9090);
    CHECK_EQ(c.log_format, LOG_FORMAT_TEXT);
    CHECK_EQ(c.sync, LEDGER_SYNC_NORMAL);
    CHECK(c.daemon);
    CHECK(!c.log_requests);
    CHECK_EQ(c.request_timeout_ns, 250 * RT_MILLISECOND);
    CHECK_EQ(c.shutdown_timeout_ns, 120 * RT_SECOND);
    CHECK_EQ(c.idle_timeout_ns, 90 * RT_SECOND);
    CHECK_EQ(c.header_timeout_ns, 1500 * RT_MILLISECOND);
    CHECK(strcmp(c.pidfile, "/run/x.pid") == 0);
    CHECK(strcmp(c.admin_key, "s3cret") == 0);
    CHECK_EQ(c.gomaxprocs, 3);

    CHECK_EQ(parse(&c, err, ENV("LEDGERD_LOG_REQUESTS=off", "LEDGERD_DAEMON=yes"),
                   ARGS("--listen", ":0")), 0);
    CHECK(!c.log_requests);
    CHECK(c.daemon);
    CHECK(strcmp(c.host, "0.0.0.0") == 0);
    CHECK_EQ(c.port, 0);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--listen", "localhost:1", "--log-requests=false")), 0);
    CHECK(strcmp(c.host, "127.0.0.1") == 0);
    CHECK(!c.log_requests);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--listen=0.0.0.0:8080")), 0);
    CHECK(strcmp(c.host, "0.0.0.0") == 0);

    int64_t ns;
    CHECK_EQ(config_parse_duration("5s", &ns), 0);
    CHECK_EQ(ns, 5 * RT_SECOND);
    CHECK_EQ(config_parse_duration("100us", &ns), 0);
    CHECK_EQ(ns, 100 * RT_MICROSECOND);
    CHECK_EQ(config_parse_duration("1h2m3s4ms", &ns), 0);
    CHECK_EQ(ns, 3723 * RT_SECOND + 4 * RT_MILLISECOND);
    CHECK_EQ(config_parse_duration("0", &ns), 0);
    CHECK_EQ(ns, 0);
    CHECK_EQ(config_parse_duration("5", &ns), -1);       /* no unit */
    CHECK_EQ(config_parse_duration("5 s", &ns), -1);
    CHECK_EQ(config_parse_duration("s", &ns), -1);
    CHECK_EQ(config_parse_duration("-5s", &ns), -1);
    CHECK_EQ(config_parse_duration("5d", &ns), -1);
    CHECK_EQ(config_parse_duration("", &ns), -1);
    CHECK_EQ(config_parse_duration("99999999999h", &ns), -1);   /* overflow */
}

static void test_actions(void) {
    config c;
    char err[1024];
    CHECK_EQ(parse(&c, err, NULL, ARGS("--help")), 0);
    CHECK_EQ(c.action, CONFIG_HELP);
    /* --help wins even over bad flags */
    CHECK_EQ(parse(&c, err, NULL, ARGS("--bogus", "-h")), 0);
    CHECK_EQ(c.action, CONFIG_HELP);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--version")), 0);
    CHECK_EQ(c.action, CONFIG_VERSION);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--check-config", "--max-conns", "5")), 0);
    CHECK_EQ(c.action, CONFIG_CHECK);
    CHECK_EQ(c.max_conns, 5);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--healthcheck")), 0);
    CHECK_EQ(c.action, CONFIG_HEALTHCHECK);
}

static void test_file_errors(void) {
    config c;
    char err[1024];
    const char *file = conf_path("bad.conf");
    char want[PATH_MAX + 128];

    write_file(file, "# ok\nmax_batch = 5\n\n\n\n\n\n\n\n\n\nmax_conns = ten\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file)), -1);
    snprintf(want, sizeof want, "%s:12: key 'max_conns': not an integer: \"ten\"", file);
    CHECK(strcmp(err, want) == 0);

    write_file(file, "max_connz = 5\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file)), -1);
    snprintf(want, sizeof want, "%s:1: unknown key 'max_connz'", file);
    CHECK(strcmp(err, want) == 0);

    write_file(file, "\nmax_conns\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file)), -1);
    snprintf(want, sizeof want, "%s:2: expected key = value", file);
    CHECK_ERR(err, want);

    write_file(file, "request_timeout = 5\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file)), -1);
    snprintf(want, sizeof want, "%s:1: key 'request_timeout': not a duration", file);
    CHECK_ERR(err, want);

    write_file(file, "db = \"unterminated\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file)), -1);
    CHECK_ERR(err, ":1: key 'db': unterminated quote");

    write_file(file, "listen = 1.2.3.4\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file)), -1);
    CHECK_ERR(err, ":1: key 'listen': expected host:port: \"1.2.3.4\"");

    /* a bad file is an error even when a flag would override the key */
    write_file(file, "sync = sometimes\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", file, "--sync", "full")), -1);
    CHECK_ERR(err, ":1: key 'sync': must be full or normal: \"sometimes\"");

    CHECK_EQ(parse(&c, err, NULL, ARGS("--config", conf_path("missing.conf"))), -1);
    CHECK_ERR(err, "missing.conf: No such file or directory");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--config")), -1);
    CHECK_ERR(err, "--config: needs a file name");
}

static void test_flag_env_errors(void) {
    config c;
    char err[1024];
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max-conns", "ten")), -1);
    CHECK(strcmp(err, "--max-conns: not an integer: \"ten\"") == 0);
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_MAX_CONNS=ten"), NULL), -1);
    CHECK(strcmp(err, "LEDGERD_MAX_CONNS: not an integer: \"ten\"") == 0);
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_MAX_CONNS=0"), NULL), -1);
    CHECK_ERR(err, "LEDGERD_MAX_CONNS: out of range 1..1000000: \"0\"");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max-conns", "99999999999999999999")), -1);
    CHECK_ERR(err, "--max-conns: not an integer");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max-conns", "5x")), -1);
    CHECK_ERR(err, "--max-conns: not an integer");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max-conns")), -1);
    CHECK(strcmp(err, "--max-conns: needs a value") == 0);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max-connz", "5")), -1);
    CHECK_ERR(err, "unknown flag --max-connz");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--max_conns", "5")), -1);   /* dashes only */
    CHECK_ERR(err, "unknown flag --max_conns");
    CHECK_EQ(parse(&c, err, NULL, ARGS("stray")), -1);
    CHECK_ERR(err, "unexpected argument \"stray\"");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--no-max-conns")), -1);
    CHECK_ERR(err, "unknown flag --no-max-conns");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--daemon=maybe")), -1);
    CHECK_ERR(err, "--daemon: not a boolean");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--log-format", "xml")), -1);
    CHECK_ERR(err, "--log-format: must be json or text: \"xml\"");
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_LOG_LEVEL=loud"), NULL), -1);
    CHECK_ERR(err, "LEDGERD_LOG_LEVEL: must be debug, info, warn or error");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--request-timeout", "0s")), -1);
    CHECK_ERR(err, "--request-timeout: out of range");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--request-timeout", "2h")), -1);
    CHECK_ERR(err, "--request-timeout: out of range");
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_SHUTDOWN_TIMEOUT=soon"), NULL), -1);
    CHECK_ERR(err, "LEDGERD_SHUTDOWN_TIMEOUT: not a duration");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--listen", "[::1]8080")), -1);
    CHECK_ERR(err, "--listen: expected [ipv6]:port");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--listen", "::1:8080")), -1);
    CHECK_ERR(err, "--listen: an IPv6 address needs brackets");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--listen", "example.com:80")), -1);
    CHECK_ERR(err, "--listen: host must be an IP address");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--listen", "127.0.0.1:65536")), -1);
    CHECK_ERR(err, "--listen: port must be 0..65535");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--db", "")), -1);
    CHECK_ERR(err, "db: must not be empty");
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_ADMIN_KEY=", "LEDGERD_MAX_CONNS="), NULL), 0);
    CHECK_EQ(c.admin_key[0], '\0');   /* empty variables are unset */
    CHECK_EQ(c.src[CK_ADMIN_KEY], CONFIG_SRC_DEFAULT);
    CHECK_EQ(c.max_conns, 10000);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--admin-key", "")), -1);
    CHECK_ERR(err, "--admin-key: must not be empty");

    /* a secret that is too long is refused without being echoed */
    char longkey[400];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    CHECK_EQ(parse(&c, err, NULL, ARGS("--admin-key", longkey)), -1);
    CHECK_ERR(err, "--admin-key: longer than");
    CHECK(strstr(err, "kkkkkkkk") == NULL);
}

static void test_admin_key_file(void) {
    config c;
    char err[1024];
    const char *kf = conf_path("admin.key");
    unlink(kf);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--admin-key-file", kf)), 0);
    CHECK_EQ(config_load_admin_key(&c, err, 1024), 0);   /* missing: generated later */
    CHECK_EQ(c.admin_key[0], '\0');
    write_file(kf, "  from-file-secret \n");
    CHECK_EQ(config_load_admin_key(&c, err, 1024), 0);
    CHECK(strcmp(c.admin_key, "from-file-secret") == 0);
    /* an explicit key wins over the file */
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_ADMIN_KEY=env-secret"), ARGS("--admin-key-file", kf)), 0);
    CHECK_EQ(config_load_admin_key(&c, err, 1024), 0);
    CHECK(strcmp(c.admin_key, "env-secret") == 0);
    write_file(kf, "\n");
    CHECK_EQ(parse(&c, err, NULL, ARGS("--admin-key-file", kf)), 0);
    CHECK_EQ(config_load_admin_key(&c, err, 1024), -1);
    CHECK_ERR(err, "empty");
}

static void test_absolutize(void) {
    config c;
    char err[1024];
    char cwd[PATH_MAX], want[PATH_MAX + 32];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_EQ(parse(&c, err, NULL, ARGS("--db", "./x.db", "--pidfile", "run/p.pid",
                                       "--log-file", "/abs/log")), 0);
    CHECK_EQ(config_absolutize(&c, err, 1024), 0);
    snprintf(want, sizeof want, "%s/x.db", cwd);
    CHECK(strcmp(c.db, want) == 0);
    snprintf(want, sizeof want, "%s/run/p.pid", cwd);
    CHECK(strcmp(c.pidfile, want) == 0);
    CHECK(strcmp(c.log_file, "/abs/log") == 0);
    CHECK_EQ(c.admin_key_file[0], '\0');
}

static void test_print(void) {
    config c;
    char err[1024];
    CHECK_EQ(parse(&c, err, ENV("LEDGERD_ADMIN_KEY=topsecret"), ARGS("--max-conns", "77")), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    config_print(f, &c);
    fclose(f);
    CHECK(strstr(buf, "max_conns = 77  # flag\n") != NULL);
    CHECK(strstr(buf, "admin_key = (set)  # env\n") != NULL);
    CHECK(strstr(buf, "request_timeout = 5s  # default\n") != NULL);
    CHECK(strstr(buf, "topsecret") == NULL);
    free(buf);

    f = open_memstream(&buf, &len);
    config_print_help(f, "ledgerd");
    fclose(f);
    /* every key appears in the help, as a flag and as a variable */
    const char *names[] = { "--listen", "LEDGERD_LISTEN", "--pipeline-transfer-workers",
                            "LEDGERD_PIPELINE_TRANSFER_WORKERS", "--shutdown-timeout",
                            "--gomaxprocs", "--pidfile", "--log-requests", "--admin-key-file" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) CHECK(strstr(buf, names[i]) != NULL);
    free(buf);
}

int main(void) {
    rt_test_program = "test_config";
    const char *base = getenv("LEDGERD_TEST_DIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/config-XXXXXX", base ? base : "/tmp");
    if (base) mkdir(base, 0755);
    CHECK(mkdtemp(tmpdir) != NULL);
    RUN(test_defaults);
    RUN(test_precedence);
    RUN(test_values);
    RUN(test_actions);
    RUN(test_file_errors);
    RUN(test_flag_env_errors);
    RUN(test_admin_key_file);
    RUN(test_absolutize);
    RUN(test_print);
    return rt_test_done();
}
