package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

const (
	maxBody        = 64 << 10
	maxHeaderTotal = 16 << 10
	maxAmount      = 9007199254740991
	maxMemo        = 256
)

type server struct {
	st       *store
	ridBase  string
	ridCount atomic.Uint64
}

func newServer(st *store) *server {
	var b [6]byte
	rand.Read(b[:])
	return &server{st: st, ridBase: hex.EncodeToString(b[:]) + "-"}
}

type apiError struct {
	status int
	code   string
	msg    string
}

func errf(status int, code, format string, a ...interface{}) *apiError {
	return &apiError{status, code, fmt.Sprintf(format, a...)}
}

func badField(field, format string, a ...interface{}) *apiError {
	return &apiError{400, "invalid_field", field + ": " + fmt.Sprintf(format, a...)}
}

type reqCtx struct {
	w      http.ResponseWriter
	r      *http.Request
	rid    string
	route  string
	status int
}

func (c *reqCtx) send(status int, body []byte) {
	h := c.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	c.status = status
	c.w.WriteHeader(status)
	c.w.Write(body)
}

func (c *reqCtx) sendJSON(status int, v interface{}) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	c.send(status, bytes.TrimRight(buf.Bytes(), "\n"))
}

func (c *reqCtx) fail(e *apiError) {
	type body struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	}
	c.sendJSON(e.status, map[string]body{"error": {e.code, e.msg, c.rid}})
}

func validRequestID(s string) bool {
	if len(s) < 1 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			ch == '.' || ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

func validAccountID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			ch == '_' || ch == '-') {
			return false
		}
	}
	return true
}

func validCurrency(s string) bool {
	return len(s) == 3 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' && s[2] >= 'A' && s[2] <= 'Z'
}

func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	n += len("Host: ") + len(r.Host) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	rid := r.Header.Get("X-Request-Id")
	if !validRequestID(rid) {
		rid = s.ridBase + strconv.FormatUint(s.ridCount.Add(1), 36)
	}
	w.Header().Set("X-Request-Id", rid)
	c := &reqCtx{w: w, r: r, rid: rid, route: "other"}
	switch {
	case headerBytes(r) > maxHeaderTotal:
		w.Header().Set("Connection", "close")
		c.fail(errf(431, "headers_too_large", "request headers exceed %d bytes", maxHeaderTotal))
	case r.ContentLength > maxBody:
		c.fail(errf(413, "body_too_large", "request body exceeds %d bytes", maxBody))
	default:
		s.route(c)
	}
	d := time.Since(t0)
	s.st.m.countRequest(c.route, c.status)
	s.st.m.reqSeconds.observe(d.Seconds())
	if logRequests {
		// The C daemon's request line (issue 4): method, path, status,
		// duration, request id.  Off by default; bench/run-http.sh sets it
		// the same way for both servers.
		lg.log("info", "request", "method", c.r.Method, "path", c.r.URL.Path, "status", c.status,
			"duration_ms", float64(d.Microseconds())/1000, "request_id", rid)
	}
}

func (s *server) route(c *reqCtx) {
	p := c.r.URL.Path
	m := c.r.Method
	allow := func(method string, route string, h func(*reqCtx)) {
		c.route = route
		if m != method {
			c.w.Header().Set("Allow", method)
			c.fail(errf(405, "method_not_allowed", "%s is not allowed on %s", m, p))
			return
		}
		h(c)
	}
	switch p {
	case "/healthz":
		allow("GET", "healthz", func(c *reqCtx) { c.send(200, []byte(`{"status":"ok"}`)) })
		return
	case "/readyz":
		allow("GET", "readyz", s.readyz)
		return
	case "/metrics":
		allow("GET", "metrics", func(c *reqCtx) {
			b := []byte(s.st.renderMetrics())
			c.w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			c.w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			c.status = 200
			c.w.WriteHeader(200)
			c.w.Write(b)
		})
		return
	case "/v1/accounts":
		allow("POST", "accounts", s.createAccount)
		return
	case "/v1/keys":
		allow("POST", "keys", s.createKey)
		return
	case "/v1/transfers":
		allow("POST", "transfers", s.createTransfer)
		return
	}
	if rest := strings.TrimPrefix(p, "/v1/accounts/"); len(rest) < len(p) && rest != "" {
		id, sub, hasSub := strings.Cut(rest, "/")
		if !hasSub {
			allow("GET", "account", func(c *reqCtx) { s.getAccount(c, id) })
			return
		}
		if sub == "transfers" && id != "" {
			allow("GET", "history", func(c *reqCtx) { s.history(c, id) })
			return
		}
	}
	if id := strings.TrimPrefix(p, "/v1/transfers/"); len(id) < len(p) && id != "" && !strings.Contains(id, "/") {
		allow("GET", "transfer", func(c *reqCtx) { s.getTransfer(c, id) })
		return
	}
	c.fail(errf(404, "not_found", "no route for %s", p))
}

func (s *server) readyz(c *reqCtx) {
	switch {
	case s.st.draining.Load():
		c.fail(errf(503, "draining", "the server is draining"))
	case !s.st.ready.Load():
		c.fail(errf(503, "overloaded", "the store is not open"))
	default:
		c.send(200, []byte(`{"status":"ready"}`))
	}
}

// ---- auth ------------------------------------------------------------------

func (s *server) auth(c *reqCtx) *apiKey {
	h := c.r.Header.Get("Authorization")
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		c.fail(errf(401, "unauthorized", "missing or malformed bearer token"))
		return nil
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(h[7:])))
	if subtle.ConstantTimeCompare(sum[:], s.st.adminHash[:]) == 1 {
		return &apiKey{id: "admin", admin: true}
	}
	s.st.keysMu.RLock()
	k := s.st.keys[sum]
	s.st.keysMu.RUnlock()
	if k == nil {
		c.fail(errf(401, "unauthorized", "unknown API key"))
		return nil
	}
	return k
}

func (s *server) adminOnly(c *reqCtx) bool {
	k := s.auth(c)
	if k == nil {
		return false
	}
	if !k.admin {
		c.fail(errf(403, "forbidden", "this call needs the admin key"))
		return false
	}
	return true
}

func mayActFor(k *apiKey, acct string) bool { return k.admin || k.account == acct }

// ---- body parsing ----------------------------------------------------------

func (s *server) readBody(c *reqCtx) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			c.fail(errf(413, "body_too_large", "request body exceeds %d bytes", maxBody))
		} else {
			c.w.Header().Set("Connection", "close")
			c.fail(errf(400, "invalid_json", "cannot read the request body: %v", err))
		}
		return nil, false
	}
	return b, true
}

// parseObject parses a JSON object strictly: valid UTF-8, no duplicate
// keys, nothing after the closing brace.
func parseObject(b []byte) (map[string]json.RawMessage, *apiError) {
	if !utf8.Valid(b) {
		return nil, errf(400, "invalid_json", "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, errf(400, "invalid_json", "body is not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errf(400, "invalid_json", "body must be a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errf(400, "invalid_json", "body is not JSON: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errf(400, "invalid_json", "body is not JSON")
		}
		if _, dup := m[key]; dup {
			return nil, errf(400, "invalid_json", "duplicate key %q", key)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errf(400, "invalid_json", "body is not JSON: %v", err)
		}
		m[key] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, errf(400, "invalid_json", "body is not JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errf(400, "invalid_json", "unexpected data after the JSON object")
	}
	return m, nil
}

func getString(m map[string]json.RawMessage, field string, required bool) (string, bool, *apiError) {
	raw, ok := m[field]
	if !ok {
		if required {
			return "", false, badField(field, "is required")
		}
		return "", false, nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", false, badField(field, "must be a string")
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false, badField(field, "must be a string")
	}
	return v, true, nil
}

// getAmount: an integer literal (no fraction, no exponent) in [min, maxAmount].
func getAmount(m map[string]json.RawMessage, field string, required bool, min int64) (int64, *apiError) {
	raw, ok := m[field]
	if !ok {
		if required {
			return 0, badField(field, "is required")
		}
		return 0, nil
	}
	digits := string(raw)
	neg := strings.HasPrefix(digits, "-")
	if neg {
		digits = digits[1:]
	}
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, badField(field, "must be an integer number of minor units")
	}
	v, err := strconv.ParseInt(digits, 10, 64)
	if neg && err == nil {
		v = -v
	}
	if err != nil || v < min || v > maxAmount {
		return 0, badField(field, "must be between %d and %d", min, int64(maxAmount))
	}
	return v, nil
}

// ---- handlers --------------------------------------------------------------

type accountJSON struct {
	ID        string `json:"id"`
	Currency  string `json:"currency"`
	Balance   int64  `json:"balance"`
	CreatedAt string `json:"created_at"`
}

func randomID(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	// time-ordered prefix keeps ids roughly sortable, the rest is random
	binary.BigEndian.PutUint32(b[:4], uint32(time.Now().Unix()))
	return prefix + hex.EncodeToString(b[:])
}

func (s *server) createAccount(c *reqCtx) {
	if !s.adminOnly(c) {
		return
	}
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	m, e := parseObject(body)
	if e != nil {
		c.fail(e)
		return
	}
	id, _, e := getString(m, "id", true)
	if e == nil && !validAccountID(id) {
		e = badField("id", "must match [A-Za-z0-9_-]{1,64}")
	}
	var cur string
	if e == nil {
		cur, _, e = getString(m, "currency", true)
		if e == nil && !validCurrency(cur) {
			e = badField("currency", "must be a 3-letter upper-case code")
		}
	}
	var initial int64
	if e == nil {
		initial, e = getAmount(m, "initial_balance", false, 0)
	}
	if e != nil {
		c.fail(e)
		return
	}
	st := s.st
	now := nowStamp()
	st.mu.Lock()
	if st.accounts[id] != nil {
		st.mu.Unlock()
		c.fail(errf(409, "account_exists", "account %q already exists", id))
		return
	}
	a := &account{id: id, currency: cur, createdAt: now, proj: initial}
	o := &op{newAcct: a, done: make(chan struct{})}
	w := st.world[cur]
	if w == nil {
		w = &account{id: "@world", currency: cur, createdAt: now}
		o.newWorld = w
	}
	if initial > 0 {
		o.xfer = &transfer{seq: st.seq + 1, ID: randomID("tr_"), From: "@world", To: id,
			Amount: initial, Currency: cur, Status: "committed", CreatedAt: now}
		o.from, o.to = w, a
	}
	if ok, draining := st.enqueueLocked(o); !ok {
		st.mu.Unlock()
		s.unavailable(c, draining)
		return
	}
	if o.xfer != nil {
		st.seq++
		w.proj -= initial
	}
	if o.newWorld != nil {
		st.world[cur] = w
	}
	st.accounts[id] = a
	st.mu.Unlock()
	<-o.done
	c.sendJSON(201, accountJSON{id, cur, initial, now})
}

func (s *server) unavailable(c *reqCtx, draining bool) {
	if draining {
		c.fail(errf(503, "draining", "the server is draining"))
		return
	}
	c.w.Header().Set("Retry-After", "1")
	c.fail(errf(503, "overloaded", "admission queue full"))
}

func (s *server) getAccount(c *reqCtx, id string) {
	k := s.auth(c)
	if k == nil {
		return
	}
	st := s.st
	if id == "@world" {
		if !k.admin {
			c.fail(errf(403, "forbidden", "only the admin key may read @world"))
			return
		}
		cur := c.r.URL.Query().Get("currency")
		if !validCurrency(cur) {
			c.fail(badField("currency", "query parameter must be a 3-letter upper-case code"))
			return
		}
		st.mu.Lock()
		w := st.world[cur]
		var aj accountJSON
		if w != nil && w.committed {
			aj = accountJSON{"@world", cur, w.bal, w.createdAt}
		}
		st.mu.Unlock()
		if aj.ID == "" {
			c.fail(errf(404, "not_found", "no @world account for %s", cur))
			return
		}
		c.sendJSON(200, aj)
		return
	}
	if !mayActFor(k, id) {
		c.fail(errf(403, "forbidden", "this key may not act for account %q", id))
		return
	}
	st.mu.Lock()
	a := st.accounts[id]
	var aj accountJSON
	if a != nil && a.committed {
		aj = accountJSON{a.id, a.currency, a.bal, a.createdAt}
	}
	st.mu.Unlock()
	if aj.ID == "" {
		c.fail(errf(404, "not_found", "account %q not found", id))
		return
	}
	c.sendJSON(200, aj)
}

func (s *server) accountExists(id string) bool {
	s.st.mu.Lock()
	a := s.st.accounts[id]
	ok := a != nil && a.committed
	s.st.mu.Unlock()
	return ok
}

func (s *server) history(c *reqCtx, id string) {
	k := s.auth(c)
	if k == nil {
		return
	}
	if !mayActFor(k, id) {
		c.fail(errf(403, "forbidden", "this key may not act for account %q", id))
		return
	}
	q := c.r.URL.Query()
	limit := int64(50)
	if v, ok := q["limit"]; ok {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n < 1 || n > 1000 || strings.HasPrefix(v[0], "+") {
			c.fail(badField("limit", "must be an integer from 1 to 1000"))
			return
		}
		limit = n
	}
	before := int64(1<<63 - 1)
	if v, ok := q["before"]; ok {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n < 1 || strings.HasPrefix(v[0], "+") {
			c.fail(badField("before", "is not a cursor this server returned"))
			return
		}
		before = n
	}
	if !s.accountExists(id) {
		c.fail(errf(404, "not_found", "account %q not found", id))
		return
	}
	rows, err := s.st.history.Query(id, before, limit+1)
	if err != nil {
		c.fail(errf(503, "overloaded", "store read failed: %v", err))
		return
	}
	defer rows.Close()
	list := make([]*transfer, 0, limit)
	var next interface{}
	for rows.Next() {
		t, err := scanTransfer(rows)
		if err != nil {
			c.fail(errf(503, "overloaded", "store read failed: %v", err))
			return
		}
		if int64(len(list)) == limit {
			next = strconv.FormatInt(list[len(list)-1].seq, 10)
			break
		}
		list = append(list, t)
	}
	c.sendJSON(200, map[string]interface{}{"transfers": list, "next": next})
}

func (s *server) createKey(c *reqCtx) {
	if !s.adminOnly(c) {
		return
	}
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	m, e := parseObject(body)
	if e != nil {
		c.fail(e)
		return
	}
	acct, _, e := getString(m, "account", true)
	if e == nil && !validAccountID(acct) {
		e = badField("account", "must match [A-Za-z0-9_-]{1,64}")
	}
	if e != nil {
		c.fail(e)
		return
	}
	secret := randomSecret("ldgk_")
	kr := &keyRec{id: randomID("key_"), account: acct, hash: hashSecret(secret), createdAt: nowStamp()}
	o := &op{key: kr, done: make(chan struct{})}
	st := s.st
	st.mu.Lock()
	if a := st.accounts[acct]; a == nil || !a.committed {
		st.mu.Unlock()
		c.fail(errf(404, "not_found", "account %q not found", acct))
		return
	}
	ok, draining := st.enqueueLocked(o)
	st.mu.Unlock()
	if !ok {
		s.unavailable(c, draining)
		return
	}
	<-o.done
	c.sendJSON(201, map[string]string{"id": kr.id, "account": acct, "secret": secret})
}

func validIdempotencyKey(v string) bool {
	if len(v) < 1 || len(v) > 255 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *server) createTransfer(c *reqCtx) {
	k := s.auth(c)
	if k == nil {
		return
	}
	body, ok := s.readBody(c)
	if !ok {
		return
	}
	m, e := parseObject(body)
	if e != nil {
		c.fail(e)
		return
	}
	from, _, e := getString(m, "from", true)
	if e == nil && !validAccountID(from) {
		e = badField("from", "must be an account id, [A-Za-z0-9_-]{1,64}")
	}
	var to, cur, memo string
	var amount int64
	var hasMemo bool
	if e == nil {
		to, _, e = getString(m, "to", true)
		if e == nil && !validAccountID(to) {
			e = badField("to", "must be an account id, [A-Za-z0-9_-]{1,64}")
		}
	}
	if e == nil {
		amount, e = getAmount(m, "amount", true, 1)
	}
	if e == nil {
		cur, _, e = getString(m, "currency", true)
		if e == nil && !validCurrency(cur) {
			e = badField("currency", "must be a 3-letter upper-case code")
		}
	}
	if e == nil {
		memo, hasMemo, e = getString(m, "memo", false)
		if e == nil && len(memo) > maxMemo {
			e = badField("memo", "must be at most %d bytes", maxMemo)
		}
	}
	ikeyVals, hasIKey := c.r.Header["Idempotency-Key"]
	var ikey string
	if e == nil && hasIKey {
		ikey = ikeyVals[0]
		if len(ikeyVals) != 1 || !validIdempotencyKey(ikey) {
			e = badField("Idempotency-Key", "header must be 1 to 255 printable ASCII characters")
		}
	}
	if e != nil {
		c.fail(e)
		return
	}
	if !mayActFor(k, from) {
		c.fail(errf(403, "forbidden", "this key may not move money from %q", from))
		return
	}
	if s.st.draining.Load() {
		s.unavailable(c, true)
		return
	}
	var h [32]byte
	if hasIKey {
		hh := sha256.New()
		fmt.Fprintf(hh, "%s\x00%s\x00%d\x00%s\x00%t\x00%s", from, to, amount, cur, hasMemo, memo)
		hh.Sum(h[:0])
	}
	st := s.st
	ik := idemKey{k.id, ikey}
	st.mu.Lock()
	if hasIKey {
		if ent := st.idem[ik]; ent != nil {
			switch {
			case !ent.done:
				st.mu.Unlock()
				c.fail(errf(409, "idempotency_key_in_use", "a request with this Idempotency-Key is in flight"))
			case ent.hash != h:
				st.mu.Unlock()
				c.fail(errf(409, "idempotency_key_reused", "this Idempotency-Key was used with a different request"))
			default:
				status, b := ent.status, ent.body
				st.mu.Unlock()
				c.w.Header().Set("Idempotent-Replayed", "true")
				c.send(status, b)
			}
			return
		}
	}
	e = nil
	fa, ta := st.accounts[from], st.accounts[to]
	switch {
	case from == to:
		e = errf(422, "same_account", "from and to are the same account")
	case fa == nil || !fa.committed:
		e = errf(404, "not_found", "account %q not found", from)
	case ta == nil || !ta.committed:
		e = errf(404, "not_found", "account %q not found", to)
	case fa.currency != cur || ta.currency != cur:
		e = errf(422, "currency_mismatch", "transfer currency %s does not match the accounts (%s, %s)",
			cur, fa.currency, ta.currency)
	case fa.proj < amount:
		e = errf(422, "insufficient_funds", "account %q has insufficient funds", from)
	}
	if e != nil {
		st.mu.Unlock()
		c.fail(e)
		return
	}
	t := &transfer{seq: st.seq + 1, ID: randomID("tr_"), From: from, To: to, Amount: amount,
		Currency: cur, Status: "committed", CreatedAt: nowStamp()}
	if hasMemo {
		t.Memo = &memo
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(t)
	tb := bytes.TrimRight(buf.Bytes(), "\n")
	o := &op{xfer: t, from: fa, to: ta, done: make(chan struct{})}
	if hasIKey {
		o.idem = &idemEntry{hash: h, status: 201, body: tb}
		o.idemScope, o.idemKey = ik.scope, ik.key
	}
	if ok, draining := st.enqueueLocked(o); !ok {
		st.mu.Unlock()
		s.unavailable(c, draining)
		return
	}
	st.seq++
	fa.proj -= amount
	ta.proj += amount
	if hasIKey {
		st.idem[ik] = o.idem
	}
	st.mu.Unlock()
	<-o.done
	c.send(201, tb)
}

func (s *server) getTransfer(c *reqCtx, id string) {
	k := s.auth(c)
	if k == nil {
		return
	}
	t, err := scanTransfer(s.st.getXfer.QueryRow(id))
	if errors.Is(err, sql.ErrNoRows) {
		c.fail(errf(404, "not_found", "transfer %q not found", id))
		return
	}
	if err != nil {
		c.fail(errf(503, "overloaded", "store read failed: %v", err))
		return
	}
	if !k.admin && k.account != t.From && k.account != t.To {
		c.fail(errf(403, "forbidden", "this key may not read transfer %q", id))
		return
	}
	c.sendJSON(200, t)
}
