module refserver

go 1.19

require github.com/mattn/go-sqlite3 v1.14.16

// Debian's golang-github-mattn-go-sqlite3-dev (links the system libsqlite3);
// build offline with GOFLAGS=-mod=mod GOPROXY=off (see build.sh).
replace github.com/mattn/go-sqlite3 => /usr/share/gocode/src/github.com/mattn/go-sqlite3
