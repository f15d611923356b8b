package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxPolicyFiles bounds the number of policy files in one directory.
const maxPolicyFiles = 4096

// Set is the policies in force, by name. It is immutable and safe for
// concurrent use; reloading builds a new Set.
type Set struct {
	byName map[string]*Policy
	names  []string
	files  []string // every file read (policies, signatures, key files)
}

// NewSet makes a set of already parsed policies; names must be unique.
func NewSet(policies ...*Policy) (*Set, error) {
	s := &Set{byName: map[string]*Policy{}}
	var errs ErrorList
	for _, p := range policies {
		if prev, dup := s.byName[p.Name]; dup {
			errs = append(errs, &Error{File: p.File, Line: 1, Column: 1, Msg: fmt.Sprintf("policy name %q is also used by %s", p.Name, prev.File),
				Hint: "every policy in a directory needs its own name"})
			continue
		}
		s.byName[p.Name] = p
		s.names = append(s.names, p.Name)
		s.files = append(s.files, p.File, p.File+".sig")
		s.files = append(s.files, p.keyFiles...)
		for _, k := range p.keyFiles {
			s.files = append(s.files, k+".sig")
		}
	}
	sort.Strings(s.names)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadDir loads every *.yaml and *.yml file directly in dir (hidden files
// are skipped) and returns the set, or an ErrorList with every problem in
// every file. An empty directory gives an empty set, which allows nothing.
func LoadDir(dir string, opts LoadOptions) (*Set, error) {
	paths, err := PolicyFiles(dir)
	if err != nil {
		return nil, err
	}
	return LoadFiles(paths, opts)
}

// PolicyFiles lists the policy files LoadDir reads in dir, sorted.
func PolicyFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading policy directory: %w", err)
	}
	var paths []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || (!strings.HasSuffix(n, ".yaml") && !strings.HasSuffix(n, ".yml")) {
			continue
		}
		if !e.Type().IsRegular() && e.Type()&os.ModeSymlink == 0 {
			continue
		}
		paths = append(paths, filepath.Join(dir, n))
	}
	if len(paths) > maxPolicyFiles {
		return nil, fmt.Errorf("policy directory %s holds %d policy files, more than the %d limit", dir, len(paths), maxPolicyFiles)
	}
	sort.Strings(paths)
	return paths, nil
}

// LoadFiles parses the given policy files into a set, reporting every
// problem in every file (and duplicate names across files) at once.
func LoadFiles(paths []string, opts LoadOptions) (*Set, error) {
	var errs ErrorList
	var pols []*Policy
	for _, path := range paths {
		p, err := ParseFile(path, opts)
		if err != nil {
			errs = append(errs, Errors(err)...)
			continue
		}
		pols = append(pols, p)
	}
	s, err := NewSet(pols...)
	if err != nil {
		errs = append(errs, Errors(err)...)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// Names returns the policy names in the set, sorted.
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Len is the number of policies in the set.
func (s *Set) Len() int { return len(s.names) }

// Get returns the named policy, or nil.
func (s *Set) Get(name string) *Policy { return s.byName[name] }

// Files returns every file the set was read from (policies, their .sig
// files and signer key files), for change detection.
func (s *Set) Files() []string { return append([]string(nil), s.files...) }
