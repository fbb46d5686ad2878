package config

import (
	"fmt"
	"io"
	"log/slog"
)

// redacted is what every printed form of a secret shows.
const redacted = "******"

// Secret is a password or token from the file. Every way of printing it
// (fmt verbs including %#v and %x, slog, encoding/json and encoding/text)
// shows "******", so a Config can be logged whole; use Reveal where the
// real value is needed.
type Secret string

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s != "" }

// String returns "******", or "" when the secret is empty.
func (s Secret) String() string { return mask(s != "") }

// Format makes every fmt verb print the mask.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// LogValue keeps the secret out of slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps the secret out of encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// SecretKey is a binary key, such as the gossip encryption key. It prints
// like Secret; use Reveal for the bytes.
type SecretKey []byte

// Reveal returns the key bytes.
func (k SecretKey) Reveal() []byte { return []byte(k) }

// IsSet reports whether the key is non-empty.
func (k SecretKey) IsSet() bool { return len(k) > 0 }

// String returns "******", or "" when the key is empty.
func (k SecretKey) String() string { return mask(len(k) > 0) }

// Format makes every fmt verb print the mask.
func (k SecretKey) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, k.String()) }

// LogValue keeps the key out of slog output.
func (k SecretKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalText keeps the key out of encoders.
func (k SecretKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

func mask(set bool) string {
	if set {
		return redacted
	}
	return ""
}
