package document

import "strings"

// Problem is one validation failure at a field path such as "to[1]" or
// "signer.full_name".
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Problems collects every validation failure; it is an error when non-empty.
type Problems []Problem

// Add records a problem at field.
func (p *Problems) Add(field, msg string) { *p = append(*p, Problem{field, msg}) }

// Err returns p as an error, or nil when there is no problem.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}

func (p Problems) Error() string {
	var b strings.Builder
	b.WriteString("invalid: ")
	for i, q := range p {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(q.Field)
		b.WriteString(": ")
		b.WriteString(q.Message)
	}
	return b.String()
}
