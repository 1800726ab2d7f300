// Command microbench is the Go reference for bench/microbench.c: the same
// runtime micro-benchmarks, implemented the same way, printing the same JSON
// lines with "impl":"go".  See bench/README.md.
//
//	microbench                    run every workload
//	microbench pingpong sleep     run the named workloads (or variants)
//
// Workloads: spawn, park-mem (park-mem-100k, park-mem-1m), pingpong,
// chan (chan-1x1, chan-4x4), mutex, select, sleep.
package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	spawnN      = 1000000
	pingpongN   = 1000000
	chanN       = 10000000
	chanCap     = 1024
	mutexG      = 8
	mutexIters  = 1000000
	selectChans = 4
	selectCap   = 128
	selectN     = 4000000
	sleepN      = 100000
	sleepDur    = 10 * time.Millisecond
)

var allOK = true

// result is one output line; fields are emitted in a fixed order so the C and
// Go lines look alike.
type result struct {
	bench   string
	variant string
	fields  []string
	ok      bool
	errText string
}

func (r *result) add(k string, v interface{}) {
	var s string
	switch x := v.(type) {
	case float64:
		s = strconv.FormatFloat(x, 'f', 2, 64)
	case int:
		s = strconv.Itoa(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	case string:
		s = strconv.Quote(x)
	default:
		panic("result.add: unsupported type")
	}
	r.fields = append(r.fields, fmt.Sprintf("%q:%s", k, s))
}

func (r *result) emit() {
	var b strings.Builder
	fmt.Fprintf(&b, `{"impl":"go","bench":%q`, r.bench)
	if r.variant != "" {
		fmt.Fprintf(&b, `,"variant":%q`, r.variant)
	}
	fmt.Fprintf(&b, `,"gomaxprocs":%d`, runtime.GOMAXPROCS(0))
	for _, f := range r.fields {
		b.WriteString(",")
		b.WriteString(f)
	}
	fmt.Fprintf(&b, `,"ok":%t`, r.ok)
	if r.errText != "" {
		fmt.Fprintf(&b, `,"error":%q`, r.errText)
	}
	b.WriteString("}\n")
	os.Stdout.WriteString(b.String())
	if !r.ok {
		allOK = false
		fmt.Fprintf(os.Stderr, "microbench: FAILED: %s %s: %s\n", r.bench, r.variant, r.errText)
	}
}

func timed(r *result, ops int64, wall time.Duration) {
	ns := float64(wall.Nanoseconds())
	r.add("ns_per_op", ns/float64(ops))
	r.add("ops", ops)
	r.add("wall_ms", ns/1e6)
}

// ---------------------------------------------------------------- spawn

func benchSpawn() {
	r := &result{bench: "spawn", ok: true}
	var wg sync.WaitGroup
	start := time.Now()
	wg.Add(spawnN)
	for i := 0; i < spawnN; i++ {
		go func() { wg.Done() }()
	}
	wg.Wait()
	timed(r, spawnN, time.Since(start))
	r.emit()
}

// -------------------------------------------------------------- park-mem

func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "VmRSS:") {
			fs := strings.Fields(line[len("VmRSS:"):])
			if len(fs) >= 1 {
				kb, err := strconv.ParseInt(fs[0], 10, 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return -1
}

func benchParkMem(n int, variant string) {
	r := &result{bench: "park-mem", variant: variant, ok: true}
	runtime.GC()
	rss0 := vmRSS()
	chans := make([]chan int, n)
	for i := range chans {
		chans[i] = make(chan int)
	}
	runtime.GC()
	rss1 := vmRSS()

	var parked, done sync.WaitGroup
	parked.Add(n)
	done.Add(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		ch := chans[i]
		go func() {
			parked.Done()
			<-ch
			done.Done()
		}()
	}
	parked.Wait()
	parkedAt := time.Since(start)
	// Every goroutine has signalled; give the last ones time to reach the
	// receive and block in it.
	for i := 0; i < 10; i++ {
		runtime.Gosched()
	}
	time.Sleep(50 * time.Millisecond)
	runtime.GC()
	rss2 := vmRSS()
	live := runtime.NumGoroutine()

	for _, ch := range chans {
		close(ch)
	}
	done.Wait()
	wall := time.Since(start)

	if rss0 < 0 || rss1 < 0 || rss2 < 0 {
		r.ok = false
		r.errText = "cannot read VmRSS"
	}
	if live < n+1 {
		r.ok = false
		r.errText = fmt.Sprintf("only %d goroutines alive while parked", live)
	}
	r.add("n", n)
	r.add("bytes_per_goroutine", float64(rss2-rss1)/float64(n))
	r.add("chan_bytes_per_goroutine", float64(rss1-rss0)/float64(n))
	r.add("rss_before_kb", rss1/1024)
	r.add("rss_parked_kb", rss2/1024)
	r.add("spawn_park_ms", float64(parkedAt.Nanoseconds())/1e6)
	r.add("wall_ms", float64(wall.Nanoseconds())/1e6)
	r.emit()
}

// -------------------------------------------------------------- pingpong

func benchPingpong() {
	r := &result{bench: "pingpong", ok: true}
	ping := make(chan int)
	pong := make(chan int)
	var wg sync.WaitGroup
	var final int
	wg.Add(2)
	start := time.Now()
	go func() { // pinger
		defer wg.Done()
		v := 0
		for i := 0; i < pingpongN; i++ {
			ping <- v
			v = <-pong
		}
		close(ping)
		final = v
	}()
	go func() { // ponger
		defer wg.Done()
		for v := range ping {
			pong <- v + 1
		}
	}()
	wg.Wait()
	timed(r, pingpongN, time.Since(start))
	if final != pingpongN {
		r.ok = false
		r.errText = fmt.Sprintf("final value %d, want %d", final, pingpongN)
	}
	r.emit()
}

// ------------------------------------------------------- chan-throughput

func benchChan(np, nc int, variant string) {
	r := &result{bench: "chan", variant: variant, ok: true}
	ch := make(chan int, chanCap)
	per := chanN / np
	sums := make([]int64, nc)
	counts := make([]int64, nc)
	var prod, cons sync.WaitGroup
	prod.Add(np)
	cons.Add(nc)
	start := time.Now()
	for k := 0; k < np; k++ {
		lo := k * per
		go func() {
			defer prod.Done()
			for i := lo; i < lo+per; i++ {
				ch <- i
			}
		}()
	}
	for k := 0; k < nc; k++ {
		k := k
		go func() {
			defer cons.Done()
			var sum, cnt int64
			for v := range ch {
				sum += int64(v)
				cnt++
			}
			sums[k] = sum
			counts[k] = cnt
		}()
	}
	prod.Wait()
	close(ch)
	cons.Wait()
	total := int64(per * np)
	timed(r, total, time.Since(start))
	var sum, cnt int64
	for k := 0; k < nc; k++ {
		sum += sums[k]
		cnt += counts[k]
	}
	want := total * (total - 1) / 2
	if cnt != total || sum != want {
		r.ok = false
		r.errText = fmt.Sprintf("received %d items sum %d, want %d sum %d", cnt, sum, total, want)
	}
	r.add("producers", np)
	r.add("consumers", nc)
	r.add("cap", chanCap)
	r.emit()
}

// ----------------------------------------------------------------- mutex

func benchMutex() {
	r := &result{bench: "mutex", ok: true}
	var mu sync.Mutex
	var count int64
	var wg sync.WaitGroup
	wg.Add(mutexG)
	start := time.Now()
	for k := 0; k < mutexG; k++ {
		go func() {
			defer wg.Done()
			for i := 0; i < mutexIters; i++ {
				mu.Lock()
				count++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := int64(mutexG * mutexIters)
	timed(r, total, time.Since(start))
	if count != total {
		r.ok = false
		r.errText = fmt.Sprintf("count %d, want %d", count, total)
	}
	r.add("goroutines", mutexG)
	r.add("count", count)
	r.emit()
}

// ---------------------------------------------------------------- select

func benchSelect() {
	r := &result{bench: "select", ok: true}
	var chans [selectChans]chan int
	for i := range chans {
		chans[i] = make(chan int, selectCap)
	}
	per := selectN / selectChans
	var wg sync.WaitGroup
	var sum, cnt int64
	wg.Add(selectChans + 1)
	start := time.Now()
	for k := 0; k < selectChans; k++ {
		ch := chans[k]
		lo := k * per
		go func() {
			defer wg.Done()
			for i := lo; i < lo+per; i++ {
				ch <- i
			}
			close(ch)
		}()
	}
	go func() { // the consumer
		defer wg.Done()
		c0, c1, c2, c3 := chans[0], chans[1], chans[2], chans[3]
		open := selectChans
		var s, n int64
		for open > 0 {
			var v int
			var ok bool
			select {
			case v, ok = <-c0:
				if !ok {
					c0 = nil
				}
			case v, ok = <-c1:
				if !ok {
					c1 = nil
				}
			case v, ok = <-c2:
				if !ok {
					c2 = nil
				}
			case v, ok = <-c3:
				if !ok {
					c3 = nil
				}
			}
			if !ok {
				open--
				continue
			}
			s += int64(v)
			n++
		}
		sum, cnt = s, n
	}()
	wg.Wait()
	total := int64(per * selectChans)
	timed(r, total, time.Since(start))
	want := total * (total - 1) / 2
	if cnt != total || sum != want {
		r.ok = false
		r.errText = fmt.Sprintf("received %d items sum %d, want %d sum %d", cnt, sum, total, want)
	}
	r.add("chans", selectChans)
	r.add("cap", selectCap)
	r.emit()
}

// ----------------------------------------------------------------- sleep

func benchSleep() {
	r := &result{bench: "sleep", ok: true}
	var wg sync.WaitGroup
	var late int64
	wg.Add(sleepN)
	start := time.Now()
	for i := 0; i < sleepN; i++ {
		go func() {
			t0 := time.Now()
			time.Sleep(sleepDur)
			if time.Since(t0) < sleepDur {
				atomic.AddInt64(&late, 1) // woke early: a failure
			}
			wg.Done()
		}()
	}
	spawnedAt := time.Since(start)
	wg.Wait()
	wall := time.Since(start)
	timed(r, sleepN, wall)
	if late != 0 {
		r.ok = false
		r.errText = fmt.Sprintf("%d goroutines woke before %v", late, sleepDur)
	}
	r.add("sleep_ms", int64(sleepDur/time.Millisecond))
	r.add("spawn_ms", float64(spawnedAt.Nanoseconds())/1e6)
	r.emit()
}

// ------------------------------------------------------------------ main

type bench struct {
	name  string
	group string
	run   func()
}

var benches = []bench{
	{"spawn", "spawn", benchSpawn},
	{"park-mem-100k", "park-mem", func() { benchParkMem(100000, "100k") }},
	{"park-mem-1m", "park-mem", func() { benchParkMem(1000000, "1m") }},
	{"pingpong", "pingpong", benchPingpong},
	{"chan-1x1", "chan", func() { benchChan(1, 1, "1x1") }},
	{"chan-4x4", "chan", func() { benchChan(4, 4, "4x4") }},
	{"mutex", "mutex", benchMutex},
	{"select", "select", benchSelect},
	{"sleep", "sleep", benchSleep},
}

func main() {
	args := os.Args[1:]
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "list" {
			fmt.Println("usage: microbench [workload...]; workloads:")
			for _, b := range benches {
				fmt.Printf("  %-14s (group %s)\n", b.name, b.group)
			}
			return
		}
		found := false
		for _, b := range benches {
			if a == b.name || a == b.group {
				found = true
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "microbench: unknown workload %q (try --help)\n", a)
			os.Exit(2)
		}
	}
	for _, b := range benches {
		want := len(args) == 0
		for _, a := range args {
			if a == b.name || a == b.group {
				want = true
			}
		}
		if want {
			b.run()
		}
	}
	if !allOK {
		os.Exit(1)
	}
}
