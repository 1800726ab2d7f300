package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

const (
	maxBatch = 1024 // operations per group commit
	queueCap = 8192 // admission queue; full means 503 overloaded
)

const schema = `
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS world (
  currency TEXT PRIMARY KEY, balance INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
  id TEXT PRIMARY KEY, currency TEXT NOT NULL, balance INTEGER NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
  seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, from_id TEXT NOT NULL,
  to_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
  memo TEXT, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transfers_from ON transfers(from_id, seq);
CREATE INDEX IF NOT EXISTS transfers_to ON transfers(to_id, seq);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, account TEXT NOT NULL, hash BLOB NOT NULL UNIQUE,
  created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
  scope TEXT NOT NULL, key TEXT NOT NULL, hash BLOB NOT NULL,
  status INTEGER NOT NULL, body BLOB NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (scope, key)) WITHOUT ROWID;
`

type account struct {
	id, currency, createdAt string
	bal                     int64 // committed: what GET shows
	proj                    int64 // committed + accepted into the queue
	committed               bool
}

type apiKey struct {
	id, account string
	admin       bool
}

type idemKey struct{ scope, key string }

type idemEntry struct {
	hash   [32]byte
	done   bool // false while the first request is in flight
	status int
	body   []byte
}

type transfer struct {
	seq       int64
	ID        string  `json:"id"`
	From      string  `json:"from"`
	To        string  `json:"to"`
	Amount    int64   `json:"amount"`
	Currency  string  `json:"currency"`
	Memo      *string `json:"memo"`
	Status    string  `json:"status"`
	CreatedAt string  `json:"created_at"`
}

type keyRec struct {
	id, account string
	hash        [32]byte
	createdAt   string
}

// op is one unit of the group commit.
type op struct {
	newWorld  *account // @world row for a currency seen for the first time
	newAcct   *account
	xfer      *transfer
	from, to  *account // the transfer's accounts (from may be a @world row)
	key       *keyRec
	idem      *idemEntry
	idemScope string
	idemKey   string
	done      chan struct{}
}

type store struct {
	w       *sql.Conn // the one writer connection (committer only)
	wdb     *sql.DB
	rdb     *sql.DB // readers
	stmts   map[string]*sql.Stmt
	getXfer *sql.Stmt
	history *sql.Stmt

	mu       sync.Mutex
	accounts map[string]*account
	world    map[string]*account // by currency
	idem     map[idemKey]*idemEntry
	seq      int64
	closed   bool
	queue    chan *op

	keysMu    sync.RWMutex
	keys      map[[32]byte]*apiKey
	adminHash [32]byte
	haveAdmin bool

	ready         atomic.Bool
	draining      atomic.Bool
	committerDone chan struct{}
	m             *metrics
}

func nowStamp() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

func openStore(path string) (*store, error) {
	// The C ledger's settings (internal/ledger/store.c): WAL,
	// synchronous=FULL on every connection, a 10 s busy timeout,
	// SQLITE_OPEN_NOMUTEX (database/sql hands a connection to one goroutine
	// at a time), foreign keys off; temp_store=MEMORY on the writer below.
	// Page cache and wal_autocheckpoint stay at SQLite's defaults, as there.
	dsn := "file:" + url.PathEscape(path) +
		"?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=10000&_mutex=no&_foreign_keys=0"
	wdb, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	wdb.SetMaxOpenConns(1)
	ctx := context.Background()
	w, err := wdb.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, err
	}
	if mode != "wal" {
		return nil, fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	if _, err := w.ExecContext(ctx, "PRAGMA temp_store=MEMORY"); err != nil {
		return nil, err
	}
	if _, err := w.ExecContext(ctx, schema); err != nil {
		return nil, err
	}
	rdb, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	rdb.SetMaxOpenConns(4)
	rdb.SetMaxIdleConns(4)

	s := &store{
		w: w, wdb: wdb, rdb: rdb, stmts: map[string]*sql.Stmt{},
		accounts: map[string]*account{}, world: map[string]*account{},
		idem: map[idemKey]*idemEntry{}, keys: map[[32]byte]*apiKey{},
		queue: make(chan *op, queueCap), committerDone: make(chan struct{}),
		m: newMetrics(),
	}
	for name, q := range map[string]string{
		"world":    `INSERT INTO world(currency, balance, created_at) VALUES (?, 0, ?)`,
		"acct":     `INSERT INTO accounts(id, currency, balance, created_at) VALUES (?, ?, 0, ?)`,
		"xfer":     `INSERT INTO transfers(seq, id, from_id, to_id, amount, currency, memo, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		"key":      `INSERT INTO api_keys(id, account, hash, created_at) VALUES (?, ?, ?, ?)`,
		"idem":     `INSERT INTO idempotency(scope, key, hash, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		"bal":      `UPDATE accounts SET balance = balance + ? WHERE id = ?`,
		"worldbal": `UPDATE world SET balance = balance + ? WHERE currency = ?`,
		"begin":    `BEGIN IMMEDIATE`,
		"commit":   `COMMIT`,
	} {
		st, err := w.PrepareContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("prepare %s: %w", name, err)
		}
		s.stmts[name] = st
	}
	const cols = `seq, id, from_id, to_id, amount, currency, memo, created_at`
	if s.getXfer, err = rdb.Prepare(`SELECT ` + cols + ` FROM transfers WHERE id = ?`); err != nil {
		return nil, err
	}
	// Newest first, both directions, each side using its (account, seq) index.
	if s.history, err = rdb.Prepare(`SELECT ` + cols + ` FROM transfers WHERE seq IN (
		  SELECT seq FROM (SELECT seq FROM transfers WHERE from_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3)
		  UNION ALL
		  SELECT seq FROM (SELECT seq FROM transfers WHERE to_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3))
		ORDER BY seq DESC LIMIT ?3`); err != nil {
		return nil, err
	}
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *store) load(ctx context.Context) error {
	var h []byte
	err := s.w.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'admin_hash'`).Scan(&h)
	if err == nil && len(h) == 32 {
		copy(s.adminHash[:], h)
		s.haveAdmin = true
	} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	rows, err := s.w.QueryContext(ctx, `SELECT currency, balance, created_at FROM world`)
	if err != nil {
		return err
	}
	sums := map[string]int64{}
	for rows.Next() {
		a := &account{id: "@world", committed: true}
		if err := rows.Scan(&a.currency, &a.bal, &a.createdAt); err != nil {
			return err
		}
		a.proj = a.bal
		s.world[a.currency] = a
		sums[a.currency] += a.bal
	}
	rows.Close()
	rows, err = s.w.QueryContext(ctx, `SELECT id, currency, balance, created_at FROM accounts`)
	if err != nil {
		return err
	}
	for rows.Next() {
		a := &account{committed: true}
		if err := rows.Scan(&a.id, &a.currency, &a.bal, &a.createdAt); err != nil {
			return err
		}
		a.proj = a.bal
		s.accounts[a.id] = a
		sums[a.currency] += a.bal
	}
	rows.Close()
	for cur, sum := range sums {
		if sum != 0 {
			return fmt.Errorf("invariant broken on load: balances in %s sum to %d", cur, sum)
		}
	}
	rows, err = s.w.QueryContext(ctx, `SELECT id, account, hash FROM api_keys`)
	if err != nil {
		return err
	}
	for rows.Next() {
		k := &apiKey{}
		var hb []byte
		if err := rows.Scan(&k.id, &k.account, &hb); err != nil {
			return err
		}
		var hh [32]byte
		copy(hh[:], hb)
		s.keys[hh] = k
	}
	rows.Close()
	rows, err = s.w.QueryContext(ctx, `SELECT scope, key, hash, status, body FROM idempotency`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var k idemKey
		e := &idemEntry{done: true}
		var hb []byte
		if err := rows.Scan(&k.scope, &k.key, &hb, &e.status, &e.body); err != nil {
			return err
		}
		copy(e.hash[:], hb)
		s.idem[k] = e
	}
	rows.Close()
	return s.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM transfers`).Scan(&s.seq)
}

func (s *store) setAdminHash(h [32]byte) error {
	_, err := s.w.ExecContext(context.Background(),
		`INSERT INTO meta(k, v) VALUES ('admin_hash', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`, h[:])
	if err == nil {
		s.adminHash, s.haveAdmin = h, true
	}
	return err
}

// committer is the only writer: it takes whatever has queued up (at least
// one op, at most maxBatch), commits it in one transaction, publishes the
// committed state and wakes the waiting handlers.
func (s *store) committer() {
	defer close(s.committerDone)
	batch := make([]*op, 0, maxBatch)
	for {
		first, ok := <-s.queue
		if !ok {
			return
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxBatch {
			select {
			case o, ok := <-s.queue:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		t0 := time.Now()
		deltas, err := s.commit(batch)
		if err != nil {
			// A failed durable write leaves memory and disk disagreeing: stop.
			fatal("group commit failed", "error", err.Error(), "ops", len(batch))
		}
		s.m.commitSeconds.observe(time.Since(t0).Seconds())
		s.m.groupSize.observe(float64(len(batch)))
		s.mu.Lock()
		for _, o := range batch {
			if o.newWorld != nil {
				o.newWorld.committed = true
			}
			if o.newAcct != nil {
				o.newAcct.committed = true
			}
			if o.idem != nil {
				o.idem.done = true
			}
		}
		for a, d := range deltas {
			a.bal += d
		}
		s.mu.Unlock()
		nx := 0
		for _, o := range batch {
			if o.key != nil {
				s.keysMu.Lock()
				s.keys[o.key.hash] = &apiKey{id: o.key.id, account: o.key.account}
				s.keysMu.Unlock()
			}
			if o.xfer != nil {
				nx++
			}
			close(o.done)
		}
		s.m.transfers.Add(uint64(nx))
	}
}

func (s *store) commit(batch []*op) (map[*account]int64, error) {
	ctx := context.Background()
	st := s.stmts
	if _, err := st["begin"].ExecContext(ctx); err != nil {
		return nil, err
	}
	deltas := map[*account]int64{}
	fail := func(err error) (map[*account]int64, error) {
		s.w.ExecContext(ctx, "ROLLBACK")
		return nil, err
	}
	for _, o := range batch {
		if w := o.newWorld; w != nil {
			if _, err := st["world"].ExecContext(ctx, w.currency, w.createdAt); err != nil {
				return fail(err)
			}
		}
		if a := o.newAcct; a != nil {
			if _, err := st["acct"].ExecContext(ctx, a.id, a.currency, a.createdAt); err != nil {
				return fail(err)
			}
		}
		if t := o.xfer; t != nil {
			var memo interface{}
			if t.Memo != nil {
				memo = *t.Memo
			}
			if _, err := st["xfer"].ExecContext(ctx, t.seq, t.ID, t.From, t.To, t.Amount,
				t.Currency, memo, t.CreatedAt); err != nil {
				return fail(err)
			}
			deltas[o.from] -= t.Amount
			deltas[o.to] += t.Amount
		}
		if k := o.key; k != nil {
			if _, err := st["key"].ExecContext(ctx, k.id, k.account, k.hash[:], k.createdAt); err != nil {
				return fail(err)
			}
		}
		if e := o.idem; e != nil {
			if _, err := st["idem"].ExecContext(ctx, o.idemScope, o.idemKey, e.hash[:], e.status,
				e.body, nowStamp()); err != nil {
				return fail(err)
			}
		}
	}
	for a, d := range deltas {
		if d == 0 {
			continue
		}
		var err error
		if a.id == "@world" {
			_, err = st["worldbal"].ExecContext(ctx, d, a.currency)
		} else {
			_, err = st["bal"].ExecContext(ctx, d, a.id)
		}
		if err != nil {
			return fail(err)
		}
	}
	if _, err := st["commit"].ExecContext(ctx); err != nil {
		return fail(err)
	}
	return deltas, nil
}

// enqueue hands an op to the committer; the caller holds s.mu, so queue
// order is acceptance order.  False when draining or the queue is full.
func (s *store) enqueueLocked(o *op) (ok bool, draining bool) {
	if s.closed {
		return false, true
	}
	select {
	case s.queue <- o:
		return true, false
	default:
		return false, false
	}
}

func (s *store) close() {
	s.ready.Store(false)
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	<-s.committerDone
	for _, st := range s.stmts {
		st.Close()
	}
	s.w.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
	s.w.Close()
	s.wdb.Close()
	s.rdb.Close()
}

func hashSecret(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

func scanTransfer(sc interface{ Scan(...interface{}) error }) (*transfer, error) {
	t := &transfer{Status: "committed"}
	var memo sql.NullString
	if err := sc.Scan(&t.seq, &t.ID, &t.From, &t.To, &t.Amount, &t.Currency, &memo, &t.CreatedAt); err != nil {
		return nil, err
	}
	if memo.Valid {
		m := memo.String
		t.Memo = &m
	}
	return t, nil
}
