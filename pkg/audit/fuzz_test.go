package audit

import (
	"archive/zip"
	"bytes"
	"testing"
)

// FuzzParse: a bundle is untrusted input (an auditor is handed one); Parse
// never panics, and what it accepts has every part a check needs.
func FuzzParse(f *testing.F) {
	var buf bytes.Buffer
	z := zip.NewWriter(&buf)
	for name, data := range map[string]string{
		"bundle.json":        `{"version":1,"document":"01KB2X3Y4Z5A6B7C8D9E0F1G2H","log":{"origin":"edx.test/hub/1","index":3},"tree_size":8,"files":{}}`,
		"container.asice":    "PK",
		"receipt.p7s":        "0",
		"log/entry.json":     "{}",
		"log/checkpoint":     "edx.test/hub/1\n8\nAAAA\n\n— x\n",
		"log/checkpoint.tsr": "0",
		"log/inclusion.json": `{"index":3,"tree_size":8,"hashes":[]}`,
	} {
		w, _ := z.Create(name)
		w.Write([]byte(data))
	}
	z.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("PK\x05\x06" + string(make([]byte, 18))))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Parse(data)
		if err != nil {
			return
		}
		if b.Proof == nil || len(b.Proof.Entry) == 0 || len(b.Proof.Checkpoint) == 0 || len(b.Proof.Timestamp) == 0 ||
			len(b.Container) == 0 || len(b.Receipt) == 0 {
			t.Fatalf("accepted a bundle without its parts: %+v", b)
		}
	})
}
