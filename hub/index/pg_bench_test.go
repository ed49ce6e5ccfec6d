package index

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkPostgres runs BenchmarkSearch's queries on PostgreSQL's text
// search, to compare the engines on this machine: the generator's first
// -index.docs documents, folded and tagged exactly as the FTS table has them
// (see ftsRow), in one table with a tsvector (subject weight A, number and
// notation B, signer C, sender name and file names D, the tags as lexemes
// without positions), a GIN index on it and the seq as primary key, for the
// date range. A search is one statement: the count up to MaxTotal+1 and the
// page of 21. Relevance is ts_rank_cd, either over the newest MaxRanked
// matches (as the embedded index does) or over all of them (PostgreSQL's
// usual way). Latencies are psql's \timing, per statement, over a Unix
// socket; ns/op means nothing here.
//
//	EDX_PG_BENCH  set to run it (a skip says so otherwise: -bench . need not have PostgreSQL)
//	EDX_PG_BIN    PostgreSQL's bin directory (default /usr/lib/postgresql/15/bin); missing binaries fail the run
//	EDX_PG_DIR    a data directory to keep and reuse (default: a temporary one)
//
// Run as root, the server runs as the user postgres (PostgreSQL refuses
// root). For instance:
//
//	EDX_PG_BENCH=1 EDX_PG_DIR=/tmp/edx-pg go test ./hub/index -run '^$' -bench Postgres -benchtime 300x -index.docs 1000000
func BenchmarkPostgres(b *testing.B) {
	if os.Getenv("EDX_PG_BENCH") == "" {
		b.Skip("the comparison with PostgreSQL runs with EDX_PG_BENCH=1")
	}
	pg := startPostgres(b)
	n := *benchDocs
	var have int
	if out, err := pg.psql("SELECT count(*) FROM docs", nil); err == nil {
		have, _ = strconv.Atoi(strings.TrimSpace(out))
	}
	if have != n {
		start := time.Now()
		pg.load(b, n)
		fmt.Fprintf(os.Stderr, "postgres: loaded and indexed %d documents in %v, %s\n", n, time.Since(start).Round(time.Second),
			strings.TrimSpace(pg.must(b, "SELECT pg_size_pretty(pg_database_size(current_database()))")))
	}
	for _, bc := range []struct {
		name string
		mod  func(q Query) Query
		sort string // "", "window" (the newest MaxRanked ranked), "all" (every match ranked)
	}{
		{"keyword+unit+range", func(q Query) Query { return q }, ""},
		{"keyword+unit+range/relevance", func(q Query) Query { return q }, "window"},
		{"keyword+unit+range/relevance-all", func(q Query) Query { return q }, "all"},
		{"keyword", func(q Query) Query { return Query{Text: q.Text} }, ""},
		{"keyword/relevance", func(q Query) Query { return Query{Text: q.Text} }, "window"},
		{"keyword/relevance-all", func(q Query) Query { return Query{Text: q.Text} }, "all"},
		{"keyword+range", func(q Query) Query { q.Unit = ""; return q }, ""},
		{"unit", func(q Query) Query { return Query{Unit: q.Unit} }, ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := newGen(1, n)
			r := rand.New(rand.NewPCG(2, 3))
			var script strings.Builder
			script.WriteString("\\timing on\n\\o /dev/null\n")
			k := 0
			for b.Loop() {
				script.WriteString(pgSearch(bc.mod(benchQuery(r, g)), bc.sort) + ";\n")
				k++
			}
			out, err := pg.psql(script.String(), nil)
			if err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
			var lat []time.Duration
			for _, m := range pgTiming.FindAllStringSubmatch(out, -1) {
				ms, _ := strconv.ParseFloat(m[1], 64)
				lat = append(lat, time.Duration(ms*float64(time.Millisecond)))
			}
			if len(lat) != k {
				b.Fatalf("%d timings for %d statements:\n%s", len(lat), k, out)
			}
			reportLatency(b, lat)
		})
	}
}

var pgTiming = regexp.MustCompile(`(?m)^Time: ([0-9.]+) ms`)

// pgSearch returns the statement searching q: the capped count and a page.
func pgSearch(q Query, sort string) string {
	p, err := compile(&q)
	if err != nil {
		panic(err)
	}
	var parts []string
	for _, t := range p.text {
		parts = append(parts, "'"+t+"':*") // terms hold letters and digits only
	}
	parts = append(parts, p.tags...)
	tsq := "'" + strings.ReplaceAll(strings.Join(parts, " & "), "'", "''") + "'::tsquery"
	where := fmt.Sprintf("tsv @@ %s AND seq >= %d AND seq < %d", tsq, p.lo, p.hi)
	if len(parts) == 0 {
		where = fmt.Sprintf("seq >= %d AND seq < %d", p.lo, p.hi)
	}
	count := fmt.Sprintf("(SELECT count(*) FROM (SELECT 1 FROM docs WHERE %s LIMIT %d) c)", where, MaxTotal+1)
	var page string
	switch {
	case sort == "window" && len(p.text) > 0:
		page = fmt.Sprintf("(SELECT array_agg(seq) FROM (SELECT seq FROM (SELECT seq, tsv FROM docs WHERE %s ORDER BY seq DESC LIMIT %d) w ORDER BY ts_rank_cd(tsv, %s) DESC, seq DESC LIMIT 21) p)",
			where, MaxRanked, tsq)
	case sort == "all" && len(p.text) > 0:
		page = fmt.Sprintf("(SELECT array_agg(seq) FROM (SELECT seq FROM docs WHERE %s ORDER BY ts_rank_cd(tsv, %s) DESC, seq DESC LIMIT 21) p)", where, tsq)
	default:
		page = fmt.Sprintf("(SELECT array_agg(seq) FROM (SELECT seq FROM docs WHERE %s ORDER BY seq DESC LIMIT 21) p)", where)
	}
	return "SELECT " + count + ", " + page
}

type postgres struct {
	bin, dir string
	port     int
	asUser   []string // runuser prefix when running as root
}

func startPostgres(b *testing.B) *postgres {
	bin := os.Getenv("EDX_PG_BIN")
	if bin == "" {
		bin = "/usr/lib/postgresql/15/bin"
	}
	for _, f := range []string{"initdb", "pg_ctl", "postgres", "psql"} {
		if _, err := os.Stat(filepath.Join(bin, f)); err != nil {
			b.Fatalf("PostgreSQL binaries: %v (set EDX_PG_BIN; Debian: apt-get install postgresql)", err)
		}
	}
	pg := &postgres{bin: bin, dir: os.Getenv("EDX_PG_DIR")}
	if pg.dir == "" {
		pg.dir = b.TempDir()
	}
	if err := os.MkdirAll(pg.dir, 0o700); err != nil {
		b.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			b.Fatalf("running as root, PostgreSQL needs a user to run as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(pg.dir, uid, gid); err != nil {
			b.Fatal(err)
		}
		// The server's user must reach its directory.
		for d := filepath.Dir(pg.dir); d != "/"; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
				os.Chmod(d, fi.Mode().Perm()|0o001)
			}
		}
		pg.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	if _, err := os.Stat(filepath.Join(pg.dir, "PG_VERSION")); err != nil {
		if out, err := pg.cmd("initdb", "-D", pg.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale").CombinedOutput(); err != nil {
			b.Fatalf("initdb: %v\n%s", err, out)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	pg.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses='' -c shared_buffers=4GB -c work_mem=64MB -c maintenance_work_mem=1GB "+
		"-c max_wal_size=8GB -c synchronous_commit=off -c jit=off -c max_parallel_workers_per_gather=0", pg.port, pg.dir)
	if out, err := pg.cmd("pg_ctl", "-D", pg.dir, "-o", opts, "-l", filepath.Join(pg.dir, "log"), "-w", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(pg.dir, "log"))
		b.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	b.Cleanup(func() { pg.cmd("pg_ctl", "-D", pg.dir, "-m", "fast", "-w", "stop").Run() })
	return pg
}

func (pg *postgres) cmd(name string, args ...string) *exec.Cmd {
	full := append(append(append([]string{}, pg.asUser...), filepath.Join(pg.bin, name)), args...)
	return exec.Command(full[0], full[1:]...)
}

// psql runs script, with stdin after it when set (for COPY … FROM STDIN).
func (pg *postgres) psql(script string, stdin func(*bufio.Writer) error) (string, error) {
	c := pg.cmd("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", pg.dir, "-p", strconv.Itoa(pg.port), "-U", "postgres", "-d", "postgres")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	in, err := c.StdinPipe()
	if err != nil {
		return "", err
	}
	if err := c.Start(); err != nil {
		return "", err
	}
	w := bufio.NewWriterSize(in, 1<<20)
	w.WriteString(script)
	if stdin != nil {
		if err := stdin(w); err != nil {
			in.Close()
			c.Wait()
			return out.String(), err
		}
	}
	w.Flush()
	in.Close()
	err = c.Wait()
	return out.String(), err
}

func (pg *postgres) must(b *testing.B, script string) string {
	out, err := pg.psql(script, nil)
	if err != nil {
		b.Fatalf("psql: %v\n%s", err, out)
	}
	return out
}

// load replaces the docs table with the generator's first n documents.
func (pg *postgres) load(b *testing.B, n int) {
	pg.must(b, `DROP TABLE IF EXISTS docs;
		CREATE TABLE docs (seq bigint PRIMARY KEY, tsv tsvector NOT NULL);`)
	out, err := pg.psql("COPY docs(seq, tsv) FROM STDIN;\n", func(w *bufio.Writer) error {
		g := newGen(1, n)
		var last int64 = -1
		for from := 0; from < n; from += 2000 {
			recs := make([]Record, 0, 2000)
			for i := from; i < min(from+2000, n); i++ {
				recs = append(recs, g.record(i))
			}
			g.statuses(recs) // keeps the generator's sequence that of load and bulkBuild
			for i := range recs {
				seq := us(recs[i].AcceptedAt.Truncate(time.Microsecond)) * seqSpan
				if seq <= last {
					seq = last + 1
				}
				last = seq
				fmt.Fprintf(w, "%d\t%s\n", seq, pgVector(&recs[i]))
			}
		}
		_, err := w.WriteString("\\.\n")
		return err
	})
	if err != nil {
		b.Fatalf("copy: %v\n%s", err, out)
	}
	pg.must(b, `CREATE INDEX docs_tsv ON docs USING gin (tsv) WITH (fastupdate = off);
		VACUUM ANALYZE docs;`)
}

// pgVector is rec's tsvector literal: the FTS table's folded tokens with
// their positions and column weights, and its tags.
func pgVector(rec *Record) string {
	row := rowOf(rec)
	type lex struct {
		pos []string
	}
	order := []string{}
	lexes := map[string]*lex{}
	pos := 1
	text := row.text()
	for c, col := range textColumns(text) {
		w := "ABBCDD"[c : c+1]
		for _, t := range col {
			l := lexes[t]
			if l == nil {
				l = &lex{}
				lexes[t] = l
				order = append(order, t)
			}
			if len(l.pos) < 256 && pos < 16384 {
				l.pos = append(l.pos, strconv.Itoa(pos)+w)
			}
			pos++
		}
		pos += 10 // no phrase across columns
	}
	var s strings.Builder
	for _, t := range order {
		s.WriteString("'" + t + "':" + strings.Join(lexes[t].pos, ",") + " ")
	}
	for _, t := range strings.Fields(row.tags(text)) {
		if lexes[t] == nil {
			lexes[t] = &lex{}
			s.WriteString("'" + t + "' ")
		}
	}
	return s.String()
}
