// Command refserver is the Go reference implementation of the ledgerd HTTP
// API (../../../../shared/API.md, the wire contract), built only to be
// benchmarked against the C daemon (bench/run-http.sh) and to validate the
// black-box suite in tests/e2e/ before the C daemon exists.
//
//	refserver --listen 127.0.0.1:8080 --db ledger.db [--admin-key SECRET]
//	          [--log-format json|text] [--log-requests true|false]
//
// The admin key may also come from LEDGERD_ADMIN_KEY.  With neither, the
// first start generates one, stores only its SHA-256, writes the secret to
// DB.admin-key (mode 0600) and logs that path; later starts keep the stored
// hash.
//
// Design (the same as the C daemon's, so the comparison is fair):
//   - SQLite in WAL mode with synchronous=FULL; one writer connection owned
//     by a committer goroutine, a small pool of reader connections;
//   - every transfer, both balance changes and its idempotency record are
//     written in one transaction;
//   - group commit: operations arriving while a commit is in flight queue up
//     and go into the next transaction together; each request is answered
//     only once its group is durable;
//   - balances live in memory behind one mutex: a "projected" balance
//     (committed plus everything accepted into the queue, used for the funds
//     check; groups commit in acceptance order, so a debit can never become
//     durable before the credits it relied on) and the committed balance
//     that GET returns;
//   - API key secrets are stored only as SHA-256 hashes.
//
// Where API.md is silent (see README.md): only 201 responses are recorded
// for idempotency (an error leaves the key unused); "same body" means the
// same parsed request; unknown JSON fields are ignored; there is no
// per-request deadline, so this server never answers 504.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ---- logging ---------------------------------------------------------------

type logger struct {
	mu   sync.Mutex
	json bool
	w    io.Writer
}

var lg = &logger{json: true, w: os.Stderr}

// logRequests: one log line per request (--log-requests true).  Set once in
// main before serving, read-only afterwards.
var logRequests bool

// boolArg is a flag that takes its value as a separate argument
// ("--log-requests false"), as the C daemon's parser does; Go's own bool
// flags accept only "--flag=false".
type boolArg struct{ v *bool }

func (b boolArg) String() string {
	if b.v != nil && *b.v {
		return "true"
	}
	return "false"
}

func (b boolArg) Set(s string) error {
	switch s {
	case "true", "1", "yes", "on":
		*b.v = true
	case "false", "0", "no", "off":
		*b.v = false
	default:
		return fmt.Errorf("want true or false, not %q", s)
	}
	return nil
}

// log writes one line: a JSON object {"ts","level","msg",k:v...} or, with
// --log-format text, "ts level msg k=v ...".
func (l *logger) log(level, msg string, kv ...interface{}) {
	ts := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	var b strings.Builder
	if l.json {
		b.WriteString(`{"ts":"` + ts + `","level":"` + level + `","msg":`)
		m, _ := json.Marshal(msg)
		b.Write(m)
		for i := 0; i+1 < len(kv); i += 2 {
			k, _ := json.Marshal(fmt.Sprint(kv[i]))
			v, err := json.Marshal(kv[i+1])
			if err != nil {
				v, _ = json.Marshal(fmt.Sprint(kv[i+1]))
			}
			b.WriteByte(',')
			b.Write(k)
			b.WriteByte(':')
			b.Write(v)
		}
		b.WriteString("}\n")
	} else {
		b.WriteString(ts + " " + level + " " + msg)
		for i := 0; i+1 < len(kv); i += 2 {
			fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
		}
		b.WriteByte('\n')
	}
	l.mu.Lock()
	io.WriteString(l.w, b.String())
	l.mu.Unlock()
}

// errorLogWriter turns net/http's own error log lines into log records.
type errorLogWriter struct{}

func (errorLogWriter) Write(p []byte) (int, error) {
	lg.log("warn", strings.TrimSpace(string(p)), "source", "net/http")
	return len(p), nil
}

func fatal(msg string, kv ...interface{}) {
	lg.log("fatal", msg, kv...)
	os.Exit(1)
}

// ---- main ------------------------------------------------------------------

func randomSecret(prefix string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		fatal("crypto/rand failed", "error", err.Error())
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	dbPath := flag.String("db", "ledgerd.db", "SQLite database path")
	adminKey := flag.String("admin-key", "", "admin API key (else $LEDGERD_ADMIN_KEY, else generated on first start)")
	logFormat := flag.String("log-format", "json", "json or text")
	flag.Var(boolArg{&logRequests}, "log-requests", "true: one log line per request (default false)")
	flag.Parse()
	switch *logFormat {
	case "json":
	case "text":
		lg.json = false
	default:
		fmt.Fprintln(os.Stderr, "refserver: --log-format must be json or text")
		os.Exit(2)
	}
	if *adminKey == "" {
		*adminKey = os.Getenv("LEDGERD_ADMIN_KEY")
	}

	st, err := openStore(*dbPath)
	if err != nil {
		fatal("cannot open store", "db", *dbPath, "error", err.Error())
	}
	if *adminKey != "" {
		if err := st.setAdminHash(sha256.Sum256([]byte(*adminKey))); err != nil {
			fatal("cannot store admin key hash", "error", err.Error())
		}
	} else if !st.haveAdmin {
		secret := randomSecret("ldga_")
		path, _ := filepath.Abs(*dbPath + ".admin-key")
		if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
			fatal("cannot write admin key file", "path", path, "error", err.Error())
		}
		if err := os.Chmod(path, 0o600); err != nil {
			fatal("cannot chmod admin key file", "path", path, "error", err.Error())
		}
		if err := st.setAdminHash(sha256.Sum256([]byte(secret))); err != nil {
			fatal("cannot store admin key hash", "error", err.Error())
		}
		lg.log("warn", "generated a new admin key; the secret is in the file (shown once)", "admin_key_file", path)
	}
	go st.committer()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fatal("cannot listen", "addr", *listen, "error", err.Error())
	}
	s := newServer(st)
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    1 << 20, // our own 16 KiB limit answers 431 in JSON
		ErrorLog:          log.New(errorLogWriter{}, "", 0),
	}
	st.ready.Store(true)
	lg.log("info", "listening", "addr", ln.Addr().String(), "db", *dbPath,
		"accounts", len(st.accounts), "transfers", st.seq)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case sig := <-sigs:
		lg.log("info", "draining", "signal", sig.String())
	case err := <-served:
		fatal("serve failed", "error", err.Error())
	}
	st.draining.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		lg.log("warn", "shutdown timed out", "error", err.Error())
	}
	cancel()
	st.close()
	lg.log("info", "stopped")
}
