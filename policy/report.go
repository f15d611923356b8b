package policy

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// CheckReport is what a policy check found: the policies that loaded, or
// every problem (a set loads whole or not at all). Both 'launcher policy
// check' and 'attestd policy check' print it, as text or as JSON.
type CheckReport struct {
	OK       bool            `json:"ok"`
	Policies []CheckedPolicy `json:"policies"` // empty unless OK
	Problems []CheckProblem  `json:"problems"` // empty when OK
}

// CheckedPolicy is one policy that loaded.
type CheckedPolicy struct {
	Name     string            `json:"name"`
	File     string            `json:"file"`
	Digest   string            `json:"digest"`
	Summary  string            `json:"summary"`
	Signers  map[string]string `json:"signers"` // name → fingerprint
	Warnings []string          `json:"warnings"`
}

// CheckProblem is one problem, with its place in the file (Line 0: the
// file as a whole).
type CheckProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	Text    string `json:"text"` // the one-line form printed as text
}

// NewCheckReport builds the report of a load: set when err is nil, every
// problem of err otherwise. Warnings are judged at now.
func NewCheckReport(set *Set, err error, now time.Time) CheckReport {
	r := CheckReport{OK: err == nil, Policies: []CheckedPolicy{}, Problems: []CheckProblem{}}
	if err != nil {
		for _, e := range Errors(err) {
			r.Problems = append(r.Problems, CheckProblem{File: e.File, Line: e.Line, Column: e.Column, Message: e.Msg, Hint: e.Hint, Text: e.Error()})
		}
		return r
	}
	for _, name := range set.Names() {
		p := set.Get(name)
		cp := CheckedPolicy{Name: p.Name, File: p.File, Digest: p.Digest, Summary: p.Summary(), Signers: map[string]string{}, Warnings: p.Warnings(now)}
		if cp.Warnings == nil {
			cp.Warnings = []string{}
		}
		for n, s := range p.Signers {
			cp.Signers[n] = s.Fingerprint
		}
		r.Policies = append(r.Policies, cp)
	}
	return r
}

// ProblemFiles counts the files the problems are in.
func (r CheckReport) ProblemFiles() int {
	var files []string
	for _, p := range r.Problems {
		if !slices.Contains(files, p.File) {
			files = append(files, p.File)
		}
	}
	return len(files)
}

// WriteText prints the report as the check commands always have: every
// problem on its own line, or per policy "FILE: ok: SUMMARY" with its
// signers and warnings.
func (r CheckReport) WriteText(w io.Writer) {
	for _, p := range r.Problems {
		fmt.Fprintln(w, p.Text)
	}
	for _, p := range r.Policies {
		fmt.Fprintf(w, "%s: ok: %s\n", p.File, p.Summary)
		names := make([]string, 0, len(p.Signers))
		for n := range p.Signers {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			fmt.Fprintf(w, "  signer %s %s\n", n, p.Signers[n])
		}
		for _, warn := range p.Warnings {
			fmt.Fprintf(w, "  warning: %s\n", warn)
		}
	}
}

// Write prints the report as JSON (asJSON) or as text.
func (r CheckReport) Write(w io.Writer, asJSON bool) error {
	if asJSON {
		return r.WriteJSON(w)
	}
	r.WriteText(w)
	return nil
}

// WriteJSON prints the report as one JSON document.
func (r CheckReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
