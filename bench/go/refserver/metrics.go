package main

import (
	"fmt"
	"math"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// A minimal Prometheus text-format (0.0.4) exposition.

type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func newHistogram(bounds ...float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.count++
	h.mu.Unlock()
}

func (h *histogram) write(b *strings.Builder, name, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	h.mu.Lock()
	defer h.mu.Unlock()
	var cum uint64
	for i, ub := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(b, "%s_bucket{le=\"%s\"} %d\n", name, fmtFloat(ub), cum)
	}
	cum += h.counts[len(h.bounds)]
	fmt.Fprintf(b, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %s\n%s_count %d\n",
		name, cum, name, fmtFloat(h.sum), name, h.count)
}

func fmtFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%g", f)
}

type metrics struct {
	reqMu    sync.RWMutex
	requests map[[2]string]*uint64 // route, status code

	transfers     atomic.Uint64
	reqSeconds    *histogram
	commitSeconds *histogram
	groupSize     *histogram
}

var latencyBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

func newMetrics() *metrics {
	return &metrics{
		requests:      map[[2]string]*uint64{},
		reqSeconds:    newHistogram(latencyBounds...),
		commitSeconds: newHistogram(latencyBounds...),
		groupSize:     newHistogram(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
	}
}

func (m *metrics) countRequest(route string, status int) {
	k := [2]string{route, fmt.Sprint(status)}
	m.reqMu.RLock()
	c := m.requests[k]
	m.reqMu.RUnlock()
	if c == nil {
		m.reqMu.Lock()
		if c = m.requests[k]; c == nil {
			c = new(uint64)
			m.requests[k] = c
		}
		m.reqMu.Unlock()
	}
	atomic.AddUint64(c, 1)
}

func (s *store) renderMetrics() string {
	m := s.m
	var b strings.Builder
	b.WriteString("# HELP ledgerd_http_requests_total HTTP requests answered, by route and status.\n")
	b.WriteString("# TYPE ledgerd_http_requests_total counter\n")
	m.reqMu.RLock()
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "ledgerd_http_requests_total{route=%q,code=%q} %d\n", k[0], k[1],
			atomic.LoadUint64(m.requests[k]))
	}
	m.reqMu.RUnlock()
	m.reqSeconds.write(&b, "ledgerd_http_request_duration_seconds", "Time from request parsed to response written.")
	fmt.Fprintf(&b, "# HELP ledgerd_transfers_committed_total Transfers made durable.\n"+
		"# TYPE ledgerd_transfers_committed_total counter\nledgerd_transfers_committed_total %d\n",
		m.transfers.Load())
	m.commitSeconds.write(&b, "ledgerd_commit_duration_seconds", "Duration of one group commit.")
	m.groupSize.write(&b, "ledgerd_commit_group_size", "Operations per group commit.")
	s.mu.Lock()
	nacct := len(s.accounts)
	s.mu.Unlock()
	ready := 0
	if s.ready.Load() && !s.draining.Load() {
		ready = 1
	}
	fmt.Fprintf(&b, "# HELP ledgerd_accounts Accounts, @world excluded.\n# TYPE ledgerd_accounts gauge\nledgerd_accounts %d\n", nacct)
	fmt.Fprintf(&b, "# HELP ledgerd_admission_queue_depth Operations waiting for a group commit.\n"+
		"# TYPE ledgerd_admission_queue_depth gauge\nledgerd_admission_queue_depth %d\n", len(s.queue))
	fmt.Fprintf(&b, "# HELP ledgerd_ready 1 when serving and not draining.\n# TYPE ledgerd_ready gauge\nledgerd_ready %d\n", ready)
	fmt.Fprintf(&b, "# HELP go_goroutines Goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n",
		runtime.NumGoroutine())
	return b.String()
}
