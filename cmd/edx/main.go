// Command edx is the command line for operators, records staff and auditors:
// a development PKI, document templates, packing and verifying signed
// containers offline, and talking to a hub.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitInvalid = 1 // verification failed, or a document was rejected
	exitUsage   = 2 // usage or I/O error
)

type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f := os.Getenv("EDX_CPUPROFILE"); f != "" {
		// A CPU profile of the whole command (edx bench's agents, for
		// one), for operators and benchmarks.
		if stopProfile, err := startCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "edx: EDX_CPUPROFILE:", err)
		} else {
			code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:])
			stopProfile()
			os.Exit(code)
		}
	}
	os.Exit(run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
}

// startCPUProfile writes a CPU profile to file until the returned
// function is called.
func startCPUProfile(file string) (func(), error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if err := loadDisplayZone(); err != nil {
		fmt.Fprintf(e.stderr, "edx: %v\n", err)
		return exitUsage
	}
	name := args[0]
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		if _, ok := commands[name+" "+args[1]]; ok {
			name, args = name+" "+args[1], args[1:]
		}
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(e.stderr, "edx: unknown command %q\n\n", strings.Join(args[:1], " "))
		usage(e.stderr)
		return exitUsage
	}
	return c.run(ctx, e, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprint(w, `edx — the command line of the edx document exchange

Usage: edx COMMAND [flags]   (edx COMMAND -h for its flags)

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Exit status: 0 success or valid, 1 invalid or rejected, 2 usage or I/O error.
`)
}

// flags makes a FlagSet that prints its usage to e.stderr.
func flags(e *env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("edx "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: edx %s %s\n\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, which may come before or after the positional
// arguments (edx get ID -o DIR); it returns -1 to go on, or the exit code.
// given reports whether the flag name was set on the command line.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parse(fs *flag.FlagSet, args []string) int {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...) // everything after -- is positional
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	fs.Parse(append([]string{"--"}, pos...))
	return -1
}

func fail(e *env, format string, a ...any) int {
	fmt.Fprintf(e.stderr, "edx: "+format+"\n", a...)
	return exitUsage
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }
