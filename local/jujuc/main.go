// Command jujuc is the hook tools of redis-k8s-local, as Juju's jujuc is Juju's.
//
// Every hook tool name (relation-get, status-set, juju-log, ...) is a link to
// this binary. Like Juju's, it runs nothing itself: it sends its name, its
// arguments, its environment and (for `--file -`) its standard input to the
// agent over the agent's socket, prints what the agent answers and exits with
// the tool's code. The tools themselves run in the agent
// (redis_k8s_local.hooktool), the one place the model lives.
//
// Protocol: one JSON line each way on <REDIS_K8S_LOCAL_STATE>/agent.sock,
// {"op": "hook_tool", "tool", "args", "env", "stdin"} then
// {"ok": true, "result": {"stdout", "stderr", "code"}} or {"ok": false, "error"}.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type result struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
}

type reply struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	Result result `json:"result"`
}

func readsStdin(args []string) bool {
	for i, arg := range args {
		if arg == "--file=-" || (arg == "--file" && i+1 < len(args) && args[i+1] == "-") {
			return true
		}
	}
	return false
}

func fail(format string, values ...any) {
	fmt.Fprintf(os.Stderr, "ERROR "+format+"\n", values...)
	os.Exit(1)
}

// dial connects to the agent, retrying while its listen queue is full (EAGAIN).
func dial(path string) (net.Conn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("unix", path, 10*time.Second)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return conn, err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func main() {
	state := os.Getenv("REDIS_K8S_LOCAL_STATE")
	if state == "" {
		fail("REDIS_K8S_LOCAL_STATE is not set: not in a redis-k8s-local hook")
	}
	env := map[string]string{}
	for _, pair := range os.Environ() {
		if name, value, found := strings.Cut(pair, "="); found {
			env[name] = value
		}
	}
	stdin := ""
	if readsStdin(os.Args[1:]) {
		data, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail("reading standard input: %v", err)
		}
		stdin = string(data)
	}
	request, err := json.Marshal(map[string]any{
		"op":    "hook_tool",
		"tool":  filepath.Base(os.Args[0]),
		"args":  os.Args[1:],
		"env":   env,
		"stdin": stdin,
	})
	if err != nil {
		fail("encoding the request: %v", err)
	}
	conn, err := dial(filepath.Join(state, "agent.sock"))
	if err != nil {
		fail("cannot reach the agent: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write(append(request, '\n')); err != nil {
		fail("sending to the agent: %v", err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		fail("no answer from the agent: %v", err)
	}
	var answer reply
	if err := json.Unmarshal(line, &answer); err != nil {
		fail("unreadable answer from the agent: %v", err)
	}
	if !answer.OK {
		fail("%s", answer.Error)
	}
	os.Stdout.WriteString(answer.Result.Stdout)
	os.Stderr.WriteString(answer.Result.Stderr)
	os.Exit(answer.Result.Code)
}
