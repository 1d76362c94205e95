// A statically linked HTTP client for the e2e tests: Go's own resolver and
// socket code, no libc, so nothing an LD_PRELOAD tool could hook.
// Usage: goclient URL -> prints "STATUS BODY-BYTES REMOTE-ADDR".
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: goclient URL")
		os.Exit(2)
	}
	var remote string
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy: nil, // never an environment proxy: interception must be transparent
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err == nil {
					remote = c.RemoteAddr().String()
				}
				return c, err
			},
		},
	}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	fmt.Printf("%d %d %s\n", resp.StatusCode, n, remote)
}
