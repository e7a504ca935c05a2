// The HTTP/2 benchmark target: Go's net/http over TLS (ALPN h2 and http/1.1), as certctl's
// own server stack, answering every request with a tiny JSON body.
//
//	go run ./benchmarks/h2server -addr 127.0.0.1:PORT -cert C -key K [-counter FILE]
//
// -counter: an 8-byte file incremented per response (read through mmap by the benchmark, to
// count requests served inside a measuring window). Prints "ready" once listening.
// Standard library only, so it builds offline with any Go toolchain.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

var body = []byte(`{"ok":true}`)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	certFile := flag.String("cert", "", "certificate chain (PEM)")
	keyFile := flag.String("key", "", "private key (PEM)")
	counterFile := flag.String("counter", "", "8-byte file counting responses")
	maxStreams := flag.Uint("max-streams", 250, "SETTINGS_MAX_CONCURRENT_STREAMS (Go's default)")
	flag.Parse()

	counter := new(int64)
	if *counterFile != "" {
		f, err := os.OpenFile(*counterFile, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		if err := f.Truncate(8); err != nil {
			log.Fatal(err)
		}
		mem, err := syscall.Mmap(int(f.Fd()), 0, 8, syscall.PROT_READ|syscall.PROT_WRITE,
			syscall.MAP_SHARED)
		if err != nil {
			log.Fatal(err)
		}
		counter = (*int64)(unsafe.Pointer(&mem[0]))
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			buf := make([]byte, 4096)
			for {
				if _, err := r.Body.Read(buf); err != nil {
					break
				}
			}
		}
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		w.Write(body)
		atomic.AddInt64(counter, 1)
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	server := &http.Server{
		Handler:   handler,
		Protocols: &protocols,
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: int(*maxStreams)},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert},
			MinVersion: tls.VersionTLS13},
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready", ln.Addr().String())
	log.Fatal(server.ServeTLS(ln, "", ""))
}
