package trigger

import (
	"bytes"
	"fmt"
	"strconv"
)

// Int64 decodes an int64 that arrives as a JSON string ("352", as Cloud
// Storage events carry it) or as a number (as some samples do).
type Int64 int64

// UnmarshalJSON accepts "352", 352 and null.
func (n *Int64) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	s := string(bytes.Trim(b, `"`))
	if s == "" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("expected an integer, got %s", b)
	}
	*n = Int64(v)
	return nil
}

// MarshalJSON writes the string form, as Cloud Storage does.
func (n Int64) MarshalJSON() ([]byte, error) {
	return []byte(`"` + n.String() + `"`), nil
}

func (n Int64) String() string { return strconv.FormatInt(int64(n), 10) }
