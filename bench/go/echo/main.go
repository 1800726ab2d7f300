// Command echo is the Go reference for bench/echo/echo_server.c: a TCP echo
// server on Go's net package, with the same modes and output.
//
//	echo [-host H] [-port P] [-mode echo|wake]
//
// Prints "port N" on stdout once listening.  See echo_server.c for the modes.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	_ "unsafe" // go:linkname
)

// runtime.nanotime is CLOCK_MONOTONIC on Linux, the clock the load
// generator stamps its messages with.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 16384)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func wakeConn(c net.Conn) {
	lat := make([]int64, 0, 1<<20)
	var buf [8]byte
	for {
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			break
		}
		now := nanotime()
		lat = append(lat, now-int64(binary.LittleEndian.Uint64(buf[:])))
	}
	c.Close()
	n := len(lat)
	if n == 0 {
		fmt.Println(`{"impl":"go","workload":"wake","samples":0}`)
		os.Exit(1)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	us := func(v int64) float64 { return float64(v) / 1e3 }
	fmt.Printf("{\"impl\":\"go\",\"workload\":\"wake\",\"samples\":%d,\"p50_us\":%.1f,"+
		"\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f}\n",
		n, us(lat[n/2]), us(lat[n*90/100]), us(lat[n*99/100]), us(lat[n-1]))
	os.Exit(0)
}

func main() {
	host := flag.String("host", "127.0.0.1", "address to listen on")
	port := flag.Int("port", 0, "port (0: any)")
	mode := flag.String("mode", "echo", "echo or wake")
	flag.Parse()
	l, err := net.Listen("tcp", net.JoinHostPort(*host, fmt.Sprint(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
	fmt.Printf("port %d\n", l.Addr().(*net.TCPAddr).Port)
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "echo: accept:", err)
			continue
		}
		if *mode == "wake" {
			go wakeConn(c)
		} else {
			go echoConn(c)
		}
	}
}
