package nuncio

import (
	"os"
	"runtime"
	"sync/atomic"
)

// Each nuncio worker that calls into the library holds a Go P between
// its calls (a cgo callback returns to C "in a syscall", keeping its P).
// With no P left idle, Go's sysmon takes the worker's P back after each
// quiet 20 µs and stays on a 20 µs beat, costing a context switch each
// time on every core it shares; with one idle P it leaves the worker's
// alone and backs off to 10 ms. So the SDK keeps GOMAXPROCS at least one
// above the number of workers that called in (the worker is the top 12
// bits of a stream id: the ABI's stream id layout), unless GOMAXPROCS is
// set in the environment, which wins.

var workersSeen atomic.Int32

var procsFixed = os.Getenv("GOMAXPROCS") != ""

// sawWorker notes the worker of streamID; when it is a new one, raises
// GOMAXPROCS (in a goroutine: it stops the world, never on a worker).
func sawWorker(streamID uint64) {
	w := int32(streamID>>52) + 1
	for {
		seen := workersSeen.Load()
		if w <= seen {
			return
		}
		if workersSeen.CompareAndSwap(seen, w) {
			break
		}
	}
	if procsFixed {
		return
	}
	go func() {
		want := int(workersSeen.Load()) + 1
		if runtime.GOMAXPROCS(0) < want {
			runtime.GOMAXPROCS(want)
		}
	}()
}
