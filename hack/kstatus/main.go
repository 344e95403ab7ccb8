// Command kstatus prints what the kstatus library of sigs.k8s.io/cli-utils computes for
// each object on standard input: the library Flux, kpt and `kubectl`-style waiters use to
// decide whether a custom resource is InProgress, Current or Failed. The tests run it on the
// objects nodeops' controllers wrote (tests/gitops.rs), so the conditions are judged by the
// real library, not by a reading of its rules.
//
// Input: one JSON object per line. Output: one line per object,
// {"status": "Current|InProgress|Failed|...", "message": "..."}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 0, 1<<20), 16<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		// Unstructured's own decoder: numbers stay int64 where the accessors expect them.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: not a Kubernetes object: %v\n", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(1)
		}
		if err := out.Encode(map[string]string{"status": res.Status.String(), "message": res.Message}); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: reading: %v\n", err)
		os.Exit(1)
	}
}
