// memhog allocates memory at a steady rate, touches every page, then holds it and sleeps: the
// workload of the lab's real node, which the kernel OOM-kills when its container's limit is lower.
//
//	memhog --allocate 96Mi --rate 32Mi/s   allocate 96 MiB at 32 MiB/s, then hold it
//	memhog --child ...                      allocate in a child process; the main process lives on
//	memhog --after 10s ...                  wait 10 s before allocating
//
// Sizes take the Kubernetes binary suffixes (Ki, Mi, Gi) or none (bytes); --rate 0 allocates at
// once. It prints one line per step on stdout and exits 0 on SIGINT or SIGTERM. With --child it
// reports how the child ended (e.g. "child 42 killed by signal 9") and lives on.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	chunk = 1 << 20 // bytes allocated per step
	page  = 4096
	// childEnv marks the process --child starts, which allocates instead of forking again.
	childEnv = "MEMHOG_CHILD"
)

func parseSize(text string) (int64, error) {
	units := []struct {
		suffix string
		factor int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}}
	factor := int64(1)
	number := text
	for _, unit := range units {
		if strings.HasSuffix(text, unit.suffix) {
			factor, number = unit.factor, strings.TrimSuffix(text, unit.suffix)
			break
		}
	}
	value, err := strconv.ParseInt(number, 10, 64)
	if err != nil || value < 0 {
		return 0, fmt.Errorf("%q is not a size (e.g. 96Mi)", text)
	}
	return value * factor, nil
}

func parseRate(text string) (int64, error) {
	if text == "0" {
		return 0, nil
	}
	size, ok := strings.CutSuffix(text, "/s")
	if !ok {
		return 0, fmt.Errorf("%q is not a rate (e.g. 32Mi/s)", text)
	}
	return parseSize(size)
}

func mib(bytes int64) string { return fmt.Sprintf("%dMi", bytes>>20) }

// allocate takes `total` bytes in chunks at `rate` bytes per second, writing to every page so the
// kernel charges each one to the cgroup, and returns them so they stay alive.
func allocate(total, rate int64) [][]byte {
	debug.SetGCPercent(-1) // nothing here is garbage
	var held [][]byte
	start := time.Now()
	for done := int64(0); done < total; {
		size := min(int64(chunk), total-done)
		block := make([]byte, size)
		for i := int64(0); i < size; i += page {
			block[i] = 1
		}
		held = append(held, block)
		done += size
		if done%(16*chunk) == 0 || done == total {
			fmt.Printf("memhog: %s of %s allocated\n", mib(done), mib(total))
		}
		if rate > 0 {
			due := start.Add(time.Duration(float64(done) / float64(rate) * float64(time.Second)))
			time.Sleep(time.Until(due))
		}
	}
	return held
}

// child runs this program again, without --child, and reports how it ended.
func child() {
	args := make([]string, 0, len(os.Args))
	for _, arg := range os.Args[1:] {
		if arg != "--child" && arg != "-child" {
			args = append(args, arg)
		}
	}
	self, err := os.Executable() // its name, not /proc/self/exe: the kernel logs the victim by name
	if err != nil {
		self = "/proc/self/exe"
	}
	cmd := exec.Command(self, args...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // it goes when we go
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "memhog: cannot start the child: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("memhog: child %d allocates\n", cmd.Process.Pid)
	err = cmd.Wait()
	status, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case status.Signaled():
		fmt.Printf("memhog: child %d killed by signal %d\n", cmd.Process.Pid, int(status.Signal()))
	case err != nil:
		fmt.Printf("memhog: child %d ended: %v\n", cmd.Process.Pid, err)
	default:
		fmt.Printf("memhog: child %d exited 0\n", cmd.Process.Pid)
	}
}

func main() {
	allocateFlag := flag.String("allocate", "0", "memory to allocate, e.g. 96Mi")
	rateFlag := flag.String("rate", "0", "allocation rate, e.g. 32Mi/s (0: at once)")
	childFlag := flag.Bool("child", false, "allocate in a child process; the main process lives on")
	after := flag.Duration("after", 0, "wait this long before allocating, e.g. 10s")
	flag.Parse()
	total, err := parseSize(*allocateFlag)
	if err == nil && flag.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	rate, rateErr := parseRate(*rateFlag)
	if err == nil {
		err = rateErr
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "memhog: %v\n", err)
		os.Exit(2)
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		os.Exit(0)
	}()

	isChild := os.Getenv(childEnv) != ""
	if *after > 0 && !isChild {
		fmt.Printf("memhog: waiting %s\n", *after)
		time.Sleep(*after)
	}
	var held [][]byte
	if *childFlag && !isChild {
		child()
	} else {
		fmt.Printf("memhog: allocating %s at %s\n", mib(total), *rateFlag)
		held = allocate(total, rate)
		fmt.Printf("memhog: holding %s\n", mib(total))
	}
	for {
		time.Sleep(time.Hour)
		_ = len(held)
	}
}
