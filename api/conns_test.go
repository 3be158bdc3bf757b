package api

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"
)

// Past maxConns connections the API serves no more until one closes: idle
// connections cannot take the daemon to its file-descriptor limit.
func TestConnectionLimit(t *testing.T) {
	defer func(n int) { maxConns = n }(maxConns)
	maxConns = 2
	e := newEnv(t)
	addr := e.base[len("http://"):]
	// Two connections, each with a request answered: both are held by the server.
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tokens["reader"] + "\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("held connection: %v %v", res, err)
		}
		res.Body.Close()
		e.n++
		e.next()
		held = append(held, c)
	}
	// A third waits.
	done := make(chan response, 1)
	go func() {
		hc := &http.Client{}
		req, _ := http.NewRequest("GET", e.base+"/v1/status", nil)
		req.Header.Set("Authorization", "Bearer "+tokens["reader"])
		res, err := hc.Do(req)
		if err != nil {
			done <- response{}
			return
		}
		res.Body.Close()
		hc.CloseIdleConnections()
		done <- response{code: res.StatusCode}
	}()
	// Served before a place is free would be the limit not holding. (How long this
	// looks only decides how surely a broken limit is caught: a working one never
	// answers here.)
	select {
	case r := <-done:
		t.Fatalf("a third connection was served while two were held: %d", r.code)
	case <-time.After(300 * time.Millisecond):
	}
	held[0].Close()
	select {
	case r := <-done:
		if r.code != http.StatusOK {
			t.Fatalf("the third connection, once a place was free: %d", r.code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the third connection was not served after a place was freed")
	}
	e.n++
	e.next()
}
